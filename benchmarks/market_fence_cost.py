"""What does the market replicas' fence cost a market write? (`deploy/market_fence.py`)

An elected market replica (`market run --leader-elect`) names itself in every request by
impersonating its own identity with the `gpuparley-replica` user extra, and the admission policy
`gpuparley-market-fence` checks each of its writes against the election Lease. So each write
costs the apiserver two more authorisation checks (the impersonation of the user and of the
extra) and one more policy evaluation. Measured on one real host plane with the admission
policies in force: the median milliseconds of dry-run writes the market makes (admission runs
in full, nothing is stored) -- a GPULease create in an agent's namespace and a ConfigMap create
in the market's own -- by the market naming no replica (the baseline: a market run without
`--leader-elect`, which the policy leaves alone) and by the market as the replica holding the
Lease, alternated write by write so both see the same load.

    python benchmarks/market_fence_cost.py [--writes 200]

Prints the medians and the ratio; saves benchmarks/results/market_fence_cost.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects, rbac
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.leader import LeaderElector
from gpuparley.deploy.lease_grant import lease_grant
from gpuparley.deploy.market_fence import ELECTION_LEASE, act_as_replica, await_fence
from gpuparley.envs.market.messages import Lease, ResourceItem
from gpuparley.envs.scenario import load_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import host_with_bundle, save

AGENT = "alpha"
HOME = objects.agent_namespace(AGENT)
SYSTEM = objects.MARKET_NAMESPACE
REPLICA = "market-0"
JOB = next(j for j in load_scenario("cluster-e2e").build_jobs(0) if j.name == "gen-000021")


def _gpulease() -> dict[str, Any]:
    lease = Lease(
        id="market.fence-bench", sender="market", receiver=AGENT, epoch=0,
        lease_id="fence-bench", holder=AGENT, lender="market", job=JOB.name,
        resources=(ResourceItem(pod=0, node="no-such-node", gpu_kind="whole", gpus=(1,)),),
        start_epoch=0, expires_epoch=4, price=1.0,
    )  # fmt: skip
    return objects.gpulease_object(lease, lease_grant(lease, JOB.pod))


def _alternated(
    writes: int, plain: Callable[[], Any], fenced: Callable[[], Any]
) -> tuple[float, float]:
    """Median milliseconds of each of two writes, made in turn `writes` times each."""
    times: dict[str, list[float]] = {"plain": [], "fenced": []}
    for _ in range(writes):
        for key, write in (("plain", plain), ("fenced", fenced)):
            started = time.perf_counter()
            write()
            times[key].append(time.perf_counter() - started)
    return statistics.median(times["plain"]) * 1000, statistics.median(times["fenced"]) * 1000


def measure(writes: int) -> dict[str, Any]:
    with host_with_bundle(AGENT) as state:
        config = state.host.agent_kubeconfigs[rbac.MARKET_USER]
        plain, replica = Kube(config), Kube(config)
        act_as_replica(replica, REPLICA)  # then elected, as `market run --leader-elect` is
        if not LeaderElector(replica, SYSTEM, ELECTION_LEASE, REPLICA).try_acquire_or_renew():
            raise RuntimeError("the replica did not win the election on a fresh plane")
        if not await_fence(replica, seconds=30):
            raise RuntimeError("the fence policy never admitted the replica holding the Lease")
        lease = _gpulease()
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench"}}
        rows = {}
        for what, resource, namespace, obj in (
            ("gpulease_create", "gpuleases", HOME, lease),
            ("configmap_create", "configmaps", SYSTEM, configmap),
        ):

            def write(
                kube: Kube, resource: str = resource, ns: str = namespace, body: Any = obj
            ) -> Any:
                return kube.create(resource, ns, body, dry_run=True)

            _alternated(20, lambda: write(plain), lambda: write(replica))  # warm up
            base, fenced = _alternated(writes, lambda: write(plain), lambda: write(replica))
            rows[what] = {"plain_ms": base, "fenced_ms": fenced, "ratio": fenced / base}
            print(
                f"{what}: no replica named {base:.2f} ms, the elected replica (impersonation"
                f" + fence policy) {fenced:.2f} ms: x{fenced / base:.2f}",
                flush=True,
            )
        for kube in (plain, replica):
            kube.close()
    return {"writes": writes, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()
    figures = measure(args.writes)
    print(f"saved {save('market_fence_cost', figures)}")


if __name__ == "__main__":
    main()
