"""The market replicas' fence on the real host apiserver (`deploy/market_fence.py`): a replica
that does not hold the market's election Lease writes nothing, whatever it checked before.

The replica is the market's own identity -- the rig user `gpuparley:market` and the
ServiceAccount `gpuparley-system/market` (with a token of its own) -- naming itself with the
replica extra, as `market run --leader-elect` does. Refused while another replica holds the
Lease: a GPULease create, a GPULease delete, a ConfigMap write in the market's namespace. Admitted
once it holds the Lease (after the apiserver's cache of the Lease catches up, which
`await_fence` waits for), and always for the market naming no replica. An agent cannot name
itself a replica (impersonation is the market's alone). And the window the fence closes: a
deposed replica whose own check of the market state (`MarketState.confirm`) still passes,
because the new leader has not written the state yet, is refused by the fence all the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuparley.deploy import objects, rbac
from gpuparley.deploy.kube import Forbidden, Kube
from gpuparley.deploy.lease_grant import lease_grant
from gpuparley.deploy.market_fence import (
    ELECTION_LEASE,
    FENCE_POLICY,
    act_as_replica,
    await_fence,
)
from gpuparley.deploy.market_state import STATE_CONFIGMAP, MarketState, Record
from gpuparley.envs.market.messages import Lease, ResourceItem
from gpuparley.envs.scenario import load_scenario

from .helpers import outcome, wait_denied_by

pytestmark = pytest.mark.cluster
HOME = "agent-alpha"
SYSTEM = objects.MARKET_NAMESPACE
JOBS = {job.name: job for job in load_scenario("cluster-e2e").build_jobs(0)}


def _lease(lease_id: str) -> dict[str, Any]:
    lease = Lease(
        id=f"market.{lease_id}", sender="market", receiver="alpha", epoch=0, lease_id=lease_id,
        holder="alpha", lender="market", job="gen-000021",
        resources=(ResourceItem(pod=0, node="no-such-node", gpu_kind="whole", gpus=(1,)),),
        start_epoch=0, expires_epoch=4, price=1.0,
    )  # fmt: skip
    return objects.gpulease_object(lease, lease_grant(lease, JOBS[lease.job].pod))


def _configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


@pytest.fixture
def hold(deployed: Any, cluster: Any) -> Iterator[Callable[[str], None]]:
    """Make a replica the holder of the market's election Lease (as the admin); the Lease,
    and every object the tests wrote, removed afterwards."""
    admin = Kube(cluster.host.kubeconfig)
    admin.delete("leases", SYSTEM, ELECTION_LEASE)
    assert admin.get("configmaps", SYSTEM, STATE_CONFIGMAP) is None  # no market on this plane

    def hold(replica: str) -> None:
        lease = admin.get("leases", SYSTEM, ELECTION_LEASE)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": ELECTION_LEASE},
                    "spec": {"holderIdentity": replica, "leaseDurationSeconds": 15}}  # fmt: skip
            admin.create("leases", SYSTEM, body)
        else:
            lease["spec"]["holderIdentity"] = replica
            admin.replace("leases", SYSTEM, lease)

    yield hold
    admin.delete("leases", SYSTEM, ELECTION_LEASE)
    for name in ("lease-fence-a", "lease-fence-b", "lease-fence-c"):
        admin.delete("gpuleases", HOME, objects.object_name(name, "lease"))
    for configmap in ("fence-test", STATE_CONFIGMAP):
        admin.delete("configmaps", SYSTEM, configmap)
    admin.close()


def _service_account_kubeconfig(cluster: Any, tmp_path: Path) -> Path:
    """A kubeconfig with a token of the market's ServiceAccount (a TokenRequest by the admin)."""
    admin = Kube(cluster.host.kubeconfig)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 600}}  # fmt: skip
    path = f"/api/v1/namespaces/{SYSTEM}/serviceaccounts/{rbac.MARKET_SERVICE_ACCOUNT}/token"
    token = admin.call("POST", path, request)["status"]["token"]
    admin.close()
    config = yaml.safe_load(Path(cluster.host.kubeconfig).read_text())
    config["users"] = [{"name": config["users"][0]["name"], "user": {"token": token}}]
    out = tmp_path / "market-sa.kubeconfig"
    out.write_text(yaml.safe_dump(config))
    return out


@pytest.mark.parametrize("identity", ["user", "service-account"])
def test_a_replica_writes_only_while_it_holds_the_election_lease(
    identity: str, hold: Callable[[str], None], cluster: Any, tmp_path: Path
) -> None:
    if identity == "user":
        config = Path(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    else:
        config = _service_account_kubeconfig(cluster, tmp_path)
    replica, plain = Kube(config), Kube(config)
    expected = rbac.MARKET_USER
    if identity != "user":
        expected = f"system:serviceaccount:{SYSTEM}:{rbac.MARKET_SERVICE_ACCOUNT}"
    assert replica.whoami() == expected
    act_as_replica(replica, "replica-a")
    hold("replica-b")
    probe = _configmap("fence-test")
    wait_denied_by(
        FENCE_POLICY, lambda: replica.create("configmaps", SYSTEM, probe, dry_run=True)
    )  # the apiserver's cache of the Lease holds it
    assert not await_fence(replica, seconds=0.3)

    refused = [
        lambda: replica.create("gpuleases", HOME, _lease("lease-fence-a")),
        lambda: replica.create("configmaps", SYSTEM, probe),
    ]
    for write in refused:
        status, message = outcome(write)
        assert status == 403 and f"'{FENCE_POLICY}'" in message, message
        assert "replica-a does not hold the Lease" in message
    # The same identity naming no replica (a market run without --leader-elect) is not fenced.
    assert plain.create("gpuleases", HOME, _lease("lease-fence-b")) is not None
    name_b = objects.object_name("lease-fence-b", "lease")
    status, message = outcome(lambda: replica.delete("gpuleases", HOME, name_b))
    assert status == 403 and f"'{FENCE_POLICY}'" in message, message
    assert plain.get("gpuleases", HOME, name_b) is not None  # not deleted

    hold("replica-a")  # taken over: once the apiserver's cache has it, every write goes through
    assert await_fence(replica)
    assert replica.create("gpuleases", HOME, _lease("lease-fence-c")) is not None
    assert replica.delete("gpuleases", HOME, name_b)
    assert replica.create("configmaps", SYSTEM, probe) is not None
    replica.close()
    plain.close()


def test_an_agent_cannot_name_itself_a_market_replica(
    hold: Callable[[str], None], cluster: Any
) -> None:
    hold("replica-a")
    alpha = Kube(cluster.host.agent_kubeconfigs[HOME])
    act_as_replica(alpha, "replica-a")  # impersonating itself with the replica extra
    with pytest.raises(Forbidden, match="cannot impersonate"):
        alpha.list("pods", HOME)
    alpha.close()


def test_a_deposed_replica_whose_state_check_passes_is_refused_by_the_fence(
    hold: Callable[[str], None], cluster: Any
) -> None:
    replica = Kube(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    act_as_replica(replica, "replica-a")
    hold("replica-a")
    assert await_fence(replica)
    state = MarketState(replica, {"scenario": "fence-test"})
    assert state.load() == []
    state.commit([Record()], {"substeps": 1})  # replica-a leads and commits a sub-step
    hold("replica-b")  # the standby takes over; it has not written the state yet
    probe = _configmap("fence-test")
    wait_denied_by(FENCE_POLICY, lambda: replica.create("configmaps", SYSTEM, probe, dry_run=True))
    state.confirm()  # the state is as replica-a left it: its own check lets it write
    status, message = outcome(lambda: replica.create("gpuleases", HOME, _lease("lease-fence-a")))
    assert status == 403 and f"'{FENCE_POLICY}'" in message, message
    replica.close()
