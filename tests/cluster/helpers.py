"""Small helpers shared by the cluster tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def pod_manifest(
    name: str,
    limits: dict[str, str],
    *,
    gates: tuple[str, ...] = (),
    annotations: dict[str, str] | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """A minimal pod; extended resources go in limits (requests default to limits); `scheduler`
    None: kube-scheduler's."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            **({"schedulerName": scheduler} if scheduler else {}),
            "schedulingGates": [{"name": g} for g in gates],
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/gpuparley/job:sim",
                    "resources": {"limits": {"cpu": "100m", "memory": "128Mi", **limits}},
                }
            ],
        },
    }


def outcome(call: Callable[[], Any]) -> tuple[int, str]:
    """HTTP status of an API call (200 for any success) and the apiserver's message, whichever
    client made it (`kubernetes` ApiException or `gpuparley.deploy.kube.ApiError`)."""
    import json

    from kubernetes.client.exceptions import ApiException

    from gpuparley.deploy.kube import ApiError

    try:
        call()
    except ApiException as exc:
        try:
            message = json.loads(exc.body or "{}").get("message", "")
        except ValueError:
            message = str(exc.body)
        return int(exc.status), message
    except ApiError as exc:
        return exc.status, exc.message
    return 200, ""


def status_of(call: Callable[[], Any]) -> int:
    return outcome(call)[0]


def wait_denied_by(policy: str, probe: Callable[[], Any], timeout: float = 20.0) -> None:
    """Admission policies take effect asynchronously (the apiserver's policy informer): wait
    until a dry-run request that `policy` must deny is denied by it."""
    deadline = time.monotonic() + timeout
    while True:
        status, message = outcome(probe)
        if status in (403, 422) and f"'{policy}'" in message:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{policy} not enforced after {timeout}s ({status} {message[:200]})")
        time.sleep(0.2)


def wait_quotas_counted(kube: Any, namespaces: list[str], timeout: float = 60.0) -> None:
    """Block until kube-controller-manager has computed the usage of every gpuparley quota in
    `namespaces` (until then the apiserver refuses creates there: the quota fails closed)."""
    from gpuparley.deploy.quotas import QUOTA_NAME

    def counted() -> bool:
        for namespace in namespaces:
            quota = kube.get("resourcequotas", namespace, QUOTA_NAME)
            status = (quota or {}).get("status") or {}
            hard = (quota or {}).get("spec", {}).get("hard", {})
            if quota is None or set(status.get("hard") or {}) != set(hard):
                return False
            if not set(hard) - {"count/events", "count/events.events.k8s.io"} <= set(
                status.get("used") or {}
            ):
                return False
        return True

    wait_for(f"quotas in {namespaces} to be counted", counted, timeout=timeout)
