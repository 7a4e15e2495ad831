"""The one client layer: every apiserver call of the negotiator, the market and the tooling.

Built on the official `kubernetes` package's **dynamic client** (`kubernetes.dynamic`): it
serves core resources, `coordination.k8s.io` Leases and our custom resources through one API,
hands objects over as the plain dicts the apiserver sends (pods are copied between planes
verbatim, custom resources have no generated classes), builds the request paths, and streams
watches with the package's own `kubernetes.watch.Watch`. Why not an informer library: the
maintained Python ones (kopf, kr8s) are operator frameworks that own the event loop and the
process; the market and the negotiator only need list-then-watch caches (`informer.py`, about
200 lines on this module's `watch`), which keeps the dependency the one the package already has.

Two things are ours:

* **no discovery**: the resources we use are a fixed table (`RESOURCES`), so a process start costs
  no discovery requests and a CRD applied a moment ago is usable at once;
* **errors are exception classes** (`NotFound`, `AlreadyExists`, `Conflict`, `Gone`,
  `Forbidden`, `Invalid`, `Unavailable`, ... all `ApiError`): callers catch the case they
  handle, never compare status codes. A refused connection, a reset stream or a timeout (the
  apiserver restarting) is `Unavailable`, so a caller's retry covers it.

Every request is counted by verb (`Kube.requests`; a watch counts once per connection), so a
process can report apiserver requests per placement.

Independent writes go out together (`Kube.each`: the leases of one clearing, the bindings of the
pods admitted at once, a lease's host pods): one round trip of wall time instead of one each
in series, which is most of a placement's latency once negotiation is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gpuparley.deploy.crds import GROUP

CRD_VERSION = "v1alpha1"
WATCH_SECONDS = 240  # a watch is reopened (from its resourceVersion) after this long
CONCURRENT_REQUESTS = 8  # the most requests `Kube.each` has in flight at once
CONNECTIONS = CONCURRENT_REQUESTS + 8  # pooled connections: `each`'s, the watches, the caller's
T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("gpuparley.kube")


class ApiError(RuntimeError):
    """An answer outside 2xx, with the apiserver's status code, reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class BadRequest(ApiError):
    """400: e.g. an unknown field under strict validation."""


class Unauthorized(ApiError):
    """401: the credentials were not accepted."""


class Forbidden(ApiError):
    """403: RBAC, an admission policy or a quota refused the request."""


class NotFound(ApiError):
    """404: no such object (or resource)."""


class Conflict(ApiError):
    """409: the object changed since the resourceVersion the request carried."""


class AlreadyExists(Conflict):
    """409 AlreadyExists: a create found an object of that name."""


class Gone(ApiError):
    """410: a watch's resourceVersion is too old; list again."""


class Invalid(ApiError):
    """422: the object failed validation (schema, CEL rule, a failed JSON-patch test)."""


class Unavailable(ApiError):
    """No answer (connection refused or reset, timeout: status 0), 429 or 5xx: retry later."""


def retrying(step: Callable[[], T], seconds: float = 60.0) -> T:
    """Run a start-up step, again while the apiserver is unreachable (restarting, or a process
    started before its apiserver); `Unavailable` once `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return step()
        except Unavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("apiserver unreachable at start-up; retrying", extra={"error": str(exc)})
            time.sleep(1.0)


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: Unavailable,
}

# name -> (group, version, kind, namespaced, subresources)
RESOURCES: dict[str, tuple[str, str, str, bool, tuple[str, ...]]] = {
    "pods": ("", "v1", "Pod", True, ("status", "binding")),
    "nodes": ("", "v1", "Node", False, ("status",)),
    "namespaces": ("", "v1", "Namespace", False, ()),
    "configmaps": ("", "v1", "ConfigMap", True, ()),
    "secrets": ("", "v1", "Secret", True, ()),
    "events": ("", "v1", "Event", True, ()),
    "resourcequotas": ("", "v1", "ResourceQuota", True, ("status",)),
    "serviceaccounts": ("", "v1", "ServiceAccount", True, ()),
    "leases": ("coordination.k8s.io", "v1", "Lease", True, ()),
    "offers": (GROUP, CRD_VERSION, "Offer", True, ()),
    "gpuleases": (GROUP, CRD_VERSION, "GPULease", True, ("status",)),
    "negotiators": (GROUP, CRD_VERSION, "Negotiator", True, ("status",)),
}


def connect(kubeconfig: str | os.PathLike[str] | None) -> Any:
    """A `kubernetes.client.ApiClient` for a kubeconfig file, or the in-cluster service account
    when `kubeconfig` is None (how the negotiator runs in its Deployment)."""
    import yaml
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    cfg.connection_pool_maxsize = CONNECTIONS
    if kubeconfig is None:
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    try:
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    except (yaml.YAMLError, TypeError, AttributeError) as exc:
        # the client reads any YAML and fails on its shape with TypeError or AttributeError: a
        # malformed file is one `ConfigException`, which every command reports in one line
        reason = " ".join(str(exc).split())
        raise ConfigException(f"{kubeconfig} is not a kubeconfig ({reason})") from None
    return client.ApiClient(cfg)


class _Table:
    """The dynamic client's discoverer, replaced by the fixed table (no discovery requests)."""

    def __init__(self, client: Any, _cache_file: Any) -> None:
        from kubernetes.dynamic.resource import Resource

        self.by_name: dict[str, Any] = {}
        for name, (group, version, kind, namespaced, subs) in RESOURCES.items():
            self.by_name[name] = Resource(
                prefix="apis" if group else "api",
                group=group,
                api_version=version,
                kind=kind,
                namespaced=namespaced,
                name=name,
                client=client,
                subresources={
                    sub: {"kind": kind, "name": f"{name}/{sub}", "namespaced": namespaced}
                    for sub in subs
                },
            )

    def get(self, **_kwargs: Any) -> Any:
        raise NotImplementedError("resources are looked up by name (kube.RESOURCES)")


def error_from(exc: BaseException) -> ApiError:
    """The `ApiError` subclass for an exception the client raised (status or transport)."""
    from kubernetes.client.exceptions import ApiException

    if not isinstance(exc, ApiException):
        return Unavailable(0, type(exc).__name__, str(exc))
    status = int(exc.status or 0)
    reason, message = exc.reason or "", str(exc.body or exc.reason or "")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        body = json.loads(exc.body)
        message, reason = body.get("message", message), body.get("reason", reason)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(status, reason, message)
    kind = _BY_STATUS.get(status, Unavailable if status == 0 or status >= 500 else ApiError)
    return kind(status, reason, message)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Turn the client's exceptions (HTTP status, or urllib3 transport) into `ApiError`s."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (ApiException, HTTPError, OSError) as exc:
        raise error_from(exc) from None


class Kube:
    """One apiserver, one identity; counts requests by verb."""

    def __init__(self, kubeconfig: str | os.PathLike[str] | None, timeout: float = 10.0) -> None:
        from kubernetes.dynamic import DynamicClient

        self.api = connect(kubeconfig)
        self.dynamic = DynamicClient(self.api, discoverer=_Table)
        self.timeout = timeout
        self.requests: Counter[str] = Counter()
        self._counting = threading.Lock()  # watches and `each` count from their own threads
        self._pool: ThreadPoolExecutor | None = None
        self.extra: dict[str, str] = {}  # the user extras every request names (`impersonate`)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self.api.close()

    def each(self, request: Callable[[T], R], items: Iterable[T]) -> list[R]:
        """`request(item)` for every item, up to `CONCURRENT_REQUESTS` in flight at once (for
        writes that do not depend on each other); the answers in the items' order. Every
        request is finished before this returns; if any failed, the first failure (in the
        items' order) is raised then, so a caller's retry sees everything the others did.
        A request must not call `each` itself (the pool would wait on its own threads)."""
        work = list(items)
        if len(work) <= 1:
            return [request(item) for item in work]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(CONCURRENT_REQUESTS, thread_name_prefix="kube")
        futures = [self._pool.submit(request, item) for item in work]
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def whoami(self) -> str:
        """The user name the apiserver authenticates this client as (a SelfSubjectReview,
        which every authenticated user may create)."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        answer = self.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
        return str(answer["status"]["userInfo"]["username"])

    def impersonate(self, user: str, extra: dict[str, str]) -> None:
        """From now on every request (watches too) acts as `user` with the user `extra` fields
        (impersonation headers; RBAC must allow `impersonate` on the user and on each
        `userextras/<key>`). Call before any watch or `each` thread starts."""
        self.api.set_default_header("Impersonate-User", user)
        for key, value in extra.items():
            self.api.set_default_header(f"Impersonate-Extra-{key}", value)
        self.extra = dict(extra)

    def _count(self, verb: str) -> None:
        with self._counting:
            self.requests[verb] += 1

    def resource(self, name: str) -> Any:
        """The dynamic client's `Resource` for `pods`, `gpuleases`, `pods/status`, ..."""
        kind, _, sub = name.partition("/")
        try:
            found = self.dynamic.resources.by_name[kind]
        except KeyError:
            raise ValueError(f"unknown resource {name!r}: one of {', '.join(RESOURCES)}") from None
        return found.subresources[sub] if sub else found

    def _request(
        self,
        method: str,
        resource: str,
        namespace: str | None,
        name: str | None = None,
        body: Any = None,
        **params: Any,
    ) -> Any:
        """One request through the dynamic client; the decoded JSON answer."""
        path = self.resource(resource).path(name=name, namespace=namespace)
        return self.call(method, path, body, **params)

    def call(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str | None = None,
        **params: Any,
    ) -> Any:
        """One request to a raw path (for what the table does not name); the decoded JSON."""
        self._count(method.upper())
        with _mapped():
            response = self.dynamic.request(
                method,
                url,
                body=body,
                query_params=list((query or {}).items()),
                content_type=content_type,
                serialize=False,
                _request_timeout=self.timeout,
                **params,
            )
            data = response.data
        return json.loads(data) if data else None

    # ------------------------------------------------------------------ verbs
    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return self._request("GET", resource, namespace, name)
        except NotFound:
            return None

    def list_with_version(
        self,
        resource: str,
        namespace: str | None = None,
        selector: str | None = None,
        **params: Any,
    ) -> tuple[list[dict[str, Any]], str]:
        """The items and the list's resourceVersion (where a watch of the same set starts)."""
        answer = self._request("GET", resource, namespace, label_selector=selector, **params)
        return answer.get("items") or [], str((answer.get("metadata") or {}).get("resourceVersion"))

    def list(
        self, resource: str, namespace: str | None = None, selector: str | None = None
    ) -> list[dict[str, Any]]:
        return self.list_with_version(resource, namespace, selector)[0]

    def create(
        self, resource: str, namespace: str | None, obj: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any] | None:
        """Create; the stored object, or None if one of that name exists already (creation is
        idempotent). A dry run goes through authorisation and admission and stores nothing."""
        query = {"dryRun": "All"} if dry_run else None
        try:
            created: dict[str, Any] = self._request(
                "POST", resource, namespace, body=obj, query=query
            )
        except AlreadyExists:
            return None
        return created

    def replace(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        """PUT; with `metadata.resourceVersion` set it is conditional (`Conflict` if it moved)."""
        return self._request("PUT", resource, namespace, obj["metadata"]["name"], body=obj)

    def merge_patch(
        self, resource: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> Any:
        return self._request(
            "PATCH", resource, namespace, name, patch, content_type="application/merge-patch+json"
        )

    def bind(
        self, namespace: str, pod: str, node: str, resource_version: str | None = None
    ) -> None:
        """Bind a pod to a node (a `Binding`, what a scheduler or virtual kubelet posts). With
        `resource_version` it binds only the pod at that version, the very pod the caller
        checked (`Conflict` if it changed, or was deleted and created again, since)."""
        meta: dict[str, Any] = {"name": pod}
        if resource_version:
            meta["resourceVersion"] = resource_version
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        self._request("POST", "pods/binding", namespace, pod, binding)

    def delete(
        self, resource: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        """Delete now (grace period 0); False if it was already gone. With `uid`, only that
        object: names repeat (a pod deleted and created again under the same name), and a
        deletion judged on one read must not take the object created after it (the
        apiserver's uid precondition; a different uid is a 409, answered False)."""
        body: dict[str, Any] = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
        }
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        try:
            self._request("DELETE", resource, namespace, name, body)
        except NotFound:
            return False
        except Conflict:
            if uid is None:
                raise
            return False
        return True

    def apply_configmap(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Overwrite a ConfigMap's data, creating it the first time (the writer owns it alone):
        one request once it exists."""
        try:
            self.merge_patch("configmaps", namespace, name, {"data": data})
        except NotFound:
            obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
            if self.create("configmaps", namespace, {**obj, "data": data}) is None:
                self.merge_patch("configmaps", namespace, name, {"data": data})

    # ------------------------------------------------------------------ watch
    def watch(
        self,
        resource: str,
        namespace: str | None,
        resource_version: str,
        *,
        selector: str | None = None,
        field_selector: str | None = None,
        seconds: int = WATCH_SECONDS,
    ) -> Iterator[dict[str, Any]]:
        """The events (`type`, `object` as a dict) of one watch connection from
        `resource_version`, with bookmarks; it ends after about `seconds` (the apiserver closes
        it). `Gone` if that version is too old (list again); `Unavailable` if the connection
        breaks (an apiserver restart): the caller resumes from the last version it saw."""
        from kubernetes import watch

        self._count("WATCH")
        watcher = watch.Watch()
        with _mapped():
            stream = watcher.stream(
                self.resource(resource).get,
                namespace=namespace,
                label_selector=selector,
                field_selector=field_selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,  # also: the package's own 410 retry stays off
                serialize=False,
                _request_timeout=(self.timeout, seconds + 30),
            )
            yield from stream
