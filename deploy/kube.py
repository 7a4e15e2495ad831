"""A small JSON-over-REST client for the few calls the negotiator and the market make.

Why not the generated typed clients: every object here is handled as the plain dict the apiserver
sends (custom resources have no generated classes, and pods must be copied between planes
verbatim), and every request is counted, so the process can report apiserver requests per
placement. Authentication, TLS and kubeconfig parsing come from the official `kubernetes`
package; this module only builds paths and decodes JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from typing import Any

from gpuparley.deploy.crds import GROUP

CRD_VERSION = "v1alpha1"


class ApiError(RuntimeError):
    """A non-2xx answer, with the apiserver's status code, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def connect(kubeconfig: str | os.PathLike[str] | None) -> Any:
    """A `kubernetes.client.ApiClient` for a kubeconfig file, or the in-cluster service account
    when `kubeconfig` is None (how the negotiator runs in its Deployment)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


def path(resource: str, namespace: str | None = None, name: str | None = None) -> str:
    """REST path of a core resource (`pods`, `nodes`, ...) or one of ours (`offers`, ...)."""
    ours = resource.split("/")[0] in ("offers", "gpuleases", "negotiators")
    base = f"/apis/{GROUP}/{CRD_VERSION}" if ours else "/api/v1"
    if resource.split("/")[0] == "leases":
        base = "/apis/coordination.k8s.io/v1"
    kind, _, sub = resource.partition("/")
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(kind)
    if name:
        parts.append(name)
    if sub:
        parts.append(sub)
    return "/".join(parts)


class Kube:
    """One apiserver, one identity; counts requests by verb."""

    def __init__(self, kubeconfig: str | os.PathLike[str] | None, timeout: float = 10.0) -> None:
        self.api = connect(kubeconfig)
        self.timeout = timeout
        self.requests: Counter[str] = Counter()

    def close(self) -> None:
        self.api.close()

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """One request; the decoded JSON answer, or ApiError."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = self.api.param_serialize(
            method,
            url,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        self.requests[method] += 1
        try:
            response = self.api.call_api(*params, _request_timeout=self.timeout)
        except ApiException as exc:  # raised for non-2xx answers
            raise _api_error(exc.status or 0, exc.reason or "", exc.body) from None
        data = response.read()
        if not 200 <= response.status < 300:
            raise _api_error(response.status, response.reason or "", data)
        return json.loads(data) if data else None

    # ------------------------------------------------------------------ verbs
    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return self.call("GET", path(resource, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, resource: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else None
        return self.call("GET", path(resource, namespace), query=query).get("items", [])

    def create(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> bool:
        """Create; False if an object of that name exists already (creation is idempotent)."""
        try:
            self.call("POST", path(resource, namespace), body=obj)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def replace(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        return self.call("PUT", path(resource, namespace, obj["metadata"]["name"]), body=obj)

    def merge_patch(
        self, resource: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> Any:
        return self.call(
            "PATCH",
            path(resource, namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def json_patch(
        self, resource: str, namespace: str | None, name: str, ops: list[dict[str, Any]]
    ) -> Any:
        return self.call(
            "PATCH",
            path(resource, namespace, name),
            body=ops,
            content_type="application/json-patch+json",
        )

    def delete(self, resource: str, namespace: str | None, name: str) -> bool:
        """Delete now (grace period 0); False if it was already gone."""
        try:
            self.call(
                "DELETE",
                path(resource, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
            )
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def apply_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or overwrite a ConfigMap's data (the writer owns it alone)."""
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        if not self.create("configmaps", namespace, obj):
            self.merge_patch("configmaps", namespace, name, {"data": data})


def _api_error(status: int, reason: str, body: Any) -> ApiError:
    message = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(message).get("message", message)
    return ApiError(status, reason, message)
