"""Apply rendered manifests to a real cluster: server-side apply, CRDs first.

Server-side apply with one field manager is idempotent by construction (applying the same objects
again changes nothing, not even resourceVersion), and `force` takes over fields another manager
set (e.g. the namespace labels the local rig wrote when it created `agent-<a>`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIELD_MANAGER = "gpuparley-deploy"
CRD_KIND = "CustomResourceDefinition"


class ApplyError(RuntimeError):
    """The cluster refused an object or a CRD never became Established."""


@dataclass(frozen=True)
class Applied:
    """One applied object and whether the apply changed it (resourceVersion moved)."""

    kind: str
    namespace: str
    name: str
    changed: bool


def _established(obj: Any) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _resource(dyn: Any, obj: dict[str, Any]) -> Any:
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    except ResourceNotFoundError:
        dyn.resources.invalidate_cache()  # a CRD applied moments ago
        return dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])


def _apply_one(dyn: Any, obj: dict[str, Any]) -> tuple[Applied, dict[str, Any]]:
    from kubernetes.client.exceptions import ApiException

    meta = obj["metadata"]
    resource = _resource(dyn, obj)
    before = None
    try:
        before = dyn.get(resource, name=meta["name"], namespace=meta.get("namespace"))
        before_rv = before.metadata.resourceVersion
    except ApiException as exc:
        if exc.status != 404:
            raise
        before_rv = None
    try:
        result = dyn.server_side_apply(
            resource,
            body=obj,
            namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
    except ApiException as exc:
        raise ApplyError(
            f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}: {exc.status} {exc.body}"
        ) from exc
    after = result.to_dict()
    applied = Applied(
        obj["kind"],
        meta.get("namespace", ""),
        meta["name"],
        changed=before_rv != after["metadata"]["resourceVersion"],
    )
    return applied, after


def apply_objects(
    api_client: Any,
    objects: Sequence[dict[str, Any]],
    *,
    timeout: float = 30.0,
    progress: Callable[[Applied], None] | None = None,
) -> list[Applied]:
    """Apply `objects` in order; wait for every CRD to be Established before the first object
    that is not a CRD (custom resources of a fresh CRD are refused until then).

    The API discovery is cached for this call only: the client's default cache is a file in
    the temporary directory per server address, which piles up one file per local plane
    (their ports are random) and outlives them."""
    from kubernetes import dynamic

    with tempfile.TemporaryDirectory(prefix="gpuparley-discovery-") as cache:
        dyn = dynamic.DynamicClient(api_client, cache_file=str(Path(cache) / "discovery.json"))
        results: list[Applied] = []
        pending_crds: list[str] = []
        for obj in objects:
            if obj["kind"] != CRD_KIND and pending_crds:
                wait_established(dyn, pending_crds, timeout)
                pending_crds = []
            applied, after = _apply_one(dyn, obj)
            if obj["kind"] == CRD_KIND and not _established(after):
                pending_crds.append(obj["metadata"]["name"])
            results.append(applied)
            if progress:
                progress(applied)
        if pending_crds:
            wait_established(dyn, pending_crds, timeout)
    return results


def wait_established(dyn: Any, names: Sequence[str], timeout: float = 30.0) -> None:
    """Block until each named CRD reports Established=True."""
    resource = dyn.resources.get(api_version="apiextensions.k8s.io/v1", kind=CRD_KIND)
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(dyn.get(resource, name=name).to_dict()):
            if time.monotonic() > deadline:
                raise ApplyError(f"CRD {name} not Established after {timeout:.0f}s")
            time.sleep(0.1)
    dyn.resources.invalidate_cache()
