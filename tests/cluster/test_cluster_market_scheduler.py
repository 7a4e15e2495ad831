"""Proof, with the real kube-scheduler and apiserver, of what the market's binding rests on: a
pod naming the market as its scheduler waits unbound (kube-scheduler leaves it alone), its
scheduler cannot be changed afterwards, and a binding guarded by the resourceVersion the market
checked binds only that very pod."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from gpuparley.deploy.objects import MARKET_SCHEDULER

from .helpers import pod_manifest, wait_for

pytestmark = pytest.mark.cluster
NS = "default"
NODE = "gpu-a100-mig-0"


def _binding(name: str, version: str) -> Any:
    return client.V1Binding(
        metadata=client.V1ObjectMeta(name=name, resource_version=version),
        target=client.V1ObjectReference(api_version="v1", kind="Node", name=NODE),
    )


def test_a_pod_for_the_market_waits_until_the_market_binds_it(host_core: Any) -> None:
    name = f"market-{uuid.uuid4().hex[:6]}"
    created = host_core.create_namespaced_pod(
        NS, pod_manifest(name, {"nvidia.com/mig-1g.10gb": "2"}, scheduler=MARKET_SCHEDULER)
    )
    # A plain pod created after it is bound: kube-scheduler has had its scheduling cycles.
    plain = f"plain-{uuid.uuid4().hex[:6]}"
    host_core.create_namespaced_pod(NS, pod_manifest(plain, {"nvidia.com/mig-1g.10gb": "1"}))
    wait_for("kube-scheduler to bind a plain pod", lambda: host_core.read_namespaced_pod(
        plain, NS).spec.node_name)  # fmt: skip
    time.sleep(1)
    pod = host_core.read_namespaced_pod(name, NS)
    assert pod.spec.node_name is None
    assert not pod.status.conditions  # kube-scheduler never looked at it
    with pytest.raises(ApiException) as err:  # the scheduler is fixed at creation
        host_core.patch_namespaced_pod(name, NS, {"spec": {"schedulerName": "default-scheduler"}})
    assert err.value.status == 422

    stale = str(int(created.metadata.resource_version) - 1)
    with pytest.raises(ApiException) as err:
        host_core.create_namespaced_binding(NS, _binding(name, stale), _preload_content=False)
    assert err.value.status == 409  # not the pod that was checked
    host_core.create_namespaced_binding(
        NS, _binding(name, pod.metadata.resource_version), _preload_content=False
    )
    assert host_core.read_namespaced_pod(name, NS).spec.node_name == NODE
    wait_for("Running", lambda: host_core.read_namespaced_pod(name, NS).status.phase == "Running")
    with pytest.raises(ApiException) as err:  # bound once
        host_core.create_namespaced_binding(NS, _binding(name, ""), _preload_content=False)
    assert err.value.status == 409
    for pod_name in (name, plain):
        host_core.delete_namespaced_pod(pod_name, NS, grace_period_seconds=0)
