"""What a lease lets each of its pods ask the host for, and whether a pod stays inside it.

Why a *grant*: a `Lease` message names nodes and GPUs, not CPU or memory, and the holder builds
its host pods itself (it owns their containers). Without a written limit per pod, nothing tied
a pod's resources to what was leased: a negotiator that added a GPU to every pod's limits ran at
twice its lease and kube-scheduler bound it. So when the market writes a `GPULease` it adds
`grant` beside the message: the Kubernetes resource limits one pod of the lease may use (the
lease's GPUs, MIG instance or time-slice replica, and the job's CPU and memory, all pods alike)
and the node of each pod slot (`nodes[i]` is pod `i`'s).

Three parties apply the one rule here (`grant_violations`): the `gpuparley-lease-fit`
admission policy says it in CEL (`admission_pods.py`) and refuses a pod at creation; the market
checks every pod of a lease again before it lifts their scheduling gate (authoritative: it holds
the lease) and evicts a pod that does not fit; the end-to-end observer checks every bound pod.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from gpuparley.deploy.gpu_resources import NVIDIA_PREFIX, lease_item_limits
from gpuparley.deploy.objects import LEASE_LABEL
from gpuparley.deploy.workload import HOSTNAME_LABEL, INDEX_ANNOTATION, pod_resources
from gpuparley.envs.jobs import PodDemand
from gpuparley.envs.market.messages import Lease

GRANT_FIELD = "grant"  # top-level field of a GPULease object, written by the market only
BOUNDED = ("cpu", "memory")  # every container must limit these (no limit: the whole node)


def lease_grant(lease: Lease, pod: PodDemand) -> dict[str, Any]:
    """The grant of a lease whose job's pods each look like `pod`."""
    items = sorted(lease.resources, key=lambda item: item.pod)
    gpu = lease_item_limits(items[0]) if items else {}
    return {
        "limits": pod_resources(pod, gpu)["limits"],
        "nodes": [item.node for item in items],
    }


def quantity(value: Any) -> Decimal:
    """A Kubernetes quantity ("500m", "2", "1Gi") as a number (ValueError if it is not one)."""
    from kubernetes.utils.quantity import parse_quantity

    try:
        return Decimal(parse_quantity(value))
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise ValueError(f"not a quantity: {value!r}") from exc


def _limits(container: Mapping[str, Any]) -> dict[str, Any]:
    return dict((container.get("resources") or {}).get("limits") or {})


def _requests(container: Mapping[str, Any]) -> dict[str, Any]:
    return dict((container.get("resources") or {}).get("requests") or {})


def _container_violations(
    container: Mapping[str, Any], granted: Mapping[str, Decimal], where: str
) -> list[str]:
    problems = []
    limits = _limits(container)
    for resource in BOUNDED:
        if resource not in limits:
            problems.append(f"{where} has no {resource} limit")
    for resource in {*limits, *_requests(container)}:
        if resource.startswith(NVIDIA_PREFIX) and resource not in granted:
            problems.append(f"{where} asks for {resource}, which the lease does not grant")
    return problems


def grant_violations(pod: Mapping[str, Any], grant: Mapping[str, Any] | None) -> list[str]:
    """Why `pod` is not inside its lease's `grant` (empty: it fits). Sums over containers;
    an init container runs alone, so each must fit by itself."""
    if not grant:
        return ["its lease carries no grant"]
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    try:
        granted = {k: quantity(v) for k, v in (grant.get("limits") or {}).items()}
    except ValueError as exc:
        return [f"the lease's grant is unreadable: {exc}"]
    problems: list[str] = []
    if spec.get("resources"):
        problems.append("pod-level resources are not allowed on leased pods")
    if spec.get("overhead"):
        problems.append("a pod overhead (runtime class) is not allowed on leased pods")
    containers: Sequence[Mapping[str, Any]] = spec.get("containers") or []
    for container in containers:
        problems += _container_violations(container, granted, f"container {container.get('name')}")
    for resource, allowed in granted.items():
        try:
            used = sum(
                (quantity(_limits(c)[resource]) for c in containers if resource in _limits(c)),
                Decimal(0),
            )
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if used > allowed:
            problems.append(f"{resource} {used} exceeds the lease's {allowed}")
    for init in spec.get("initContainers") or []:
        where = f"init container {init.get('name')}"
        problems += _container_violations(init, granted, where)
        for resource, value in _limits(init).items():
            try:
                too_big = resource in granted and quantity(value) > granted[resource]
            except ValueError as exc:  # the apiserver validates quantities; never crash on one
                problems.append(f"{where}: {exc}")
                continue
            if too_big:
                problems.append(f"{where}: {resource} {value} exceeds the lease's grant")
    nodes = list(grant.get("nodes") or [])
    index_text = str((meta.get("annotations") or {}).get(INDEX_ANNOTATION, ""))
    index = int(index_text) if index_text.isdigit() else -1
    node = (spec.get("nodeSelector") or {}).get(HOSTNAME_LABEL)
    if not 0 <= index < len(nodes):
        problems.append(f"annotation {INDEX_ANNOTATION}={index_text!r} names no pod of the lease")
    elif node != nodes[index]:
        problems.append(f"pod {index} must be pinned to node {nodes[index]}, not {node}")
    return problems


def lease_of(pod: Mapping[str, Any]) -> str:
    """The GPULease object a pod says it runs under ('' if none)."""
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(LEASE_LABEL, ""))


def pod_index(pod: Mapping[str, Any]) -> int:
    """The lease pod slot a pod claims (-1 if it claims none)."""
    text = str(((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION, ""))
    return int(text) if text.isdigit() else -1
