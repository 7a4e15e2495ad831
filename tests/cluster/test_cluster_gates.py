"""Proof that a scheduling gate holds a pod until it is removed (how a negotiator holds a pod
until it has a deal), with the real kube-scheduler."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from .helpers import pod_manifest, wait_for

pytestmark = pytest.mark.cluster
NS = "default"
GATE = "gpuparley.io/lease"


def test_gated_pod_waits_for_gate_removal(host_core: Any) -> None:
    name = f"gated-{uuid.uuid4().hex[:6]}"
    host_core.create_namespaced_pod(
        NS, pod_manifest(name, {"nvidia.com/mig-1g.10gb": "2"}, gates=(GATE,))
    )

    def gated_condition() -> Any:
        pod = host_core.read_namespaced_pod(name, NS)
        cond = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
        return cond is not None and cond.reason == "SchedulingGated" and pod

    wait_for("the scheduler to mark the pod SchedulingGated", gated_condition)
    time.sleep(3)  # plenty of scheduling cycles: it must still be unbound
    pod = host_core.read_namespaced_pod(name, NS)
    assert pod.spec.node_name is None
    assert [g.name for g in pod.spec.scheduling_gates] == [GATE]

    # Remove the gate (strategic merge patch: schedulingGates merge on `name`).
    host_core.patch_namespaced_pod(
        name, NS, {"spec": {"schedulingGates": [{"$patch": "delete", "name": GATE}]}}
    )
    pod = wait_for(
        "binding after the gate is removed",
        lambda: (p := host_core.read_namespaced_pod(name, NS)).spec.node_name and p,
    )
    assert pod.spec.node_name == "gpu-a100-mig-0"
    assert not pod.spec.scheduling_gates
    wait_for("Running", lambda: host_core.read_namespaced_pod(name, NS).status.phase == "Running")


def test_gates_cannot_be_added_after_creation(host_core: Any) -> None:
    from kubernetes.client.exceptions import ApiException

    name = f"nogate-{uuid.uuid4().hex[:6]}"
    host_core.create_namespaced_pod(NS, pod_manifest(name, {}, gates=("a.io/x",)))
    with pytest.raises(ApiException) as err:
        host_core.patch_namespaced_pod(
            name, NS, {"spec": {"schedulingGates": [{"name": "a.io/x"}, {"name": "b.io/y"}]}}
        )
    assert err.value.status == 422
