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
) -> dict[str, Any]:
    """A minimal pod; extended resources go in limits (requests default to limits)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
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
