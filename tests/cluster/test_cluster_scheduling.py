"""Proof that the real kube-scheduler does GPU accounting on KWOK nodes, and KWOK runs pods.

Default topology (``nodes.default_fake_nodes``): an 8x A100 exclusive node, an 8x A100 node cut
into 7x ``1g.10gb`` MIG instances per GPU (56 ``nvidia.com/mig-1g.10gb``), and a 4x L4 node
time-sliced 4 ways (16 ``nvidia.com/gpu``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gpuparley.deploy.cluster.nodes import default_fake_nodes

from .helpers import pod_manifest, wait_for

pytestmark = pytest.mark.cluster
NS = "default"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _pod(core: Any, name: str) -> Any:
    return core.read_namespaced_pod(name, NS)


def _condition(pod: Any, kind: str) -> Any:
    return next((c for c in pod.status.conditions or [] if c.type == kind), None)


def test_nodes_advertise_gpus_as_extended_resources(host_core: Any) -> None:
    specs = {s.name: s for s in default_fake_nodes()}
    live = {n.metadata.name: n for n in host_core.list_node().items}
    assert set(specs) <= set(live)
    mig = live["gpu-a100-mig-0"]
    assert mig.status.allocatable["nvidia.com/mig-1g.10gb"] == "56"
    assert mig.metadata.labels["nvidia.com/mig.config"] == "all-1g.10gb"
    ts = live["gpu-l4-ts-0"]
    assert ts.status.allocatable["nvidia.com/gpu"] == "16"
    assert ts.metadata.labels["nvidia.com/gpu.replicas"] == "4"
    excl = live["gpu-a100-excl-0"]
    assert excl.status.capacity["nvidia.com/gpu"] == "8"
    assert excl.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    for node in live.values():
        ready = next(c for c in node.status.conditions if c.type == "Ready")
        assert ready.status == "True", f"{node.metadata.name} not Ready (KWOK)"


def test_mig_pod_is_bound_to_the_mig_node_and_runs(host_core: Any) -> None:
    name = _name("mig")
    host_core.create_namespaced_pod(NS, pod_manifest(name, {"nvidia.com/mig-1g.10gb": "1"}))
    pod = wait_for("binding", lambda: (p := _pod(host_core, name)).spec.node_name and p)
    assert pod.spec.node_name == "gpu-a100-mig-0"
    pod = wait_for("Running", lambda: (p := _pod(host_core, name)).status.phase == "Running" and p)
    assert _condition(pod, "Ready").status == "True"
    assert pod.status.pod_ip


def test_timesliced_replicas_are_schedulable(host_core: Any) -> None:
    # 12 > 8 (exclusive node) but <= 16 time-sliced replicas on the L4 node.
    name = _name("ts")
    host_core.create_namespaced_pod(NS, pod_manifest(name, {"nvidia.com/gpu": "12"}))
    pod = wait_for("binding", lambda: (p := _pod(host_core, name)).spec.node_name and p)
    assert pod.spec.node_name == "gpu-l4-ts-0"


def test_pod_asking_for_more_gpus_than_any_node_stays_pending(host_core: Any) -> None:
    name = _name("toobig")
    host_core.create_namespaced_pod(NS, pod_manifest(name, {"nvidia.com/gpu": "64"}))

    def unschedulable() -> Any:
        pod = _pod(host_core, name)
        cond = _condition(pod, "PodScheduled")
        return (
            cond is not None and cond.status == "False" and cond.reason == "Unschedulable" and pod
        )

    pod = wait_for("the scheduler to report Unschedulable", unschedulable)
    assert pod.spec.node_name is None
    assert pod.status.phase == "Pending"
    assert "nvidia.com/gpu" in _condition(pod, "PodScheduled").message


def test_pod_succeeds_after_its_runtime_annotation(host_core: Any) -> None:
    name = _name("job")
    body = pod_manifest(
        name, {"nvidia.com/gpu": "1"}, annotations={"gpuparley.io/runtime-seconds": "2"}
    )
    host_core.create_namespaced_pod(NS, body)
    wait_for("Running", lambda: _pod(host_core, name).status.phase == "Running")
    pod = wait_for(
        "Succeeded", lambda: (p := _pod(host_core, name)).status.phase == "Succeeded" and p, 20
    )
    state = pod.status.container_statuses[0].state.terminated
    assert state.exit_code == 0 and state.reason == "Completed"
    elapsed = (state.finished_at - pod.status.start_time).total_seconds()
    assert 1.0 <= elapsed <= 10.0, f"ran {elapsed}s, expected about 2s"


def test_deleted_pod_goes_away(host_core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    name = _name("del")
    host_core.create_namespaced_pod(NS, pod_manifest(name, {"nvidia.com/gpu": "1"}))
    wait_for("Running", lambda: _pod(host_core, name).status.phase == "Running")
    host_core.delete_namespaced_pod(name, NS)

    def gone() -> bool:
        try:
            _pod(host_core, name)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for("KWOK to finish the deletion", gone)


def test_a_delete_guarded_by_uid_spares_a_pod_created_again_under_the_name(
    cluster: Any, host_core: Any
) -> None:
    """The market deletes the pod it read, never the one its holder created again under the
    same name since (names repeat across a job's leases). The pods stay gated: a bound one is
    KWOK's too, whose own deletion of the first pod, by name, could land on the second."""
    from gpuparley.deploy.kube import Kube

    kube = Kube(cluster.host.kubeconfig)
    name = _name("uid")
    held = ("gpuparley.io/test-held",)
    old = host_core.create_namespaced_pod(
        NS, pod_manifest(name, {"nvidia.com/gpu": "1"}, gates=held)
    )
    assert kube.delete("pods", NS, name)
    wait_for("the first pod gone", lambda: not kube.get("pods", NS, name))
    new = host_core.create_namespaced_pod(
        NS, pod_manifest(name, {"nvidia.com/gpu": "1"}, gates=held)
    )
    assert new.metadata.uid != old.metadata.uid
    assert not kube.delete("pods", NS, name, uid=old.metadata.uid)
    assert kube.get("pods", NS, name)["metadata"]["uid"] == new.metadata.uid
    assert kube.delete("pods", NS, name, uid=new.metadata.uid)
