"""Bounded Offers against the real host apiserver and etcd: the issue's storage attack replayed.

The attacker held one agent's credentials and posted 40 Offers of 1.4 MB (`renewal_of`,
`allowed_models` had no length limit), with finalizers so nobody could delete them: etcd grew from
1.2 to 126 MiB and stayed there. Now the CRD schema bounds every field (422), agents may add no
finalizer (403), and a per-namespace ResourceQuota stops the 17th Offer (403), so etcd barely
moves. The market, for its part, skips Offers already being deleted and takes one bid per agent
and sub-step (its `_receive_bids`, run here against the same apiserver).
"""

from __future__ import annotations

import copy
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from gpuparley.deploy import objects, quotas, rbac
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.market_controller import MarketController
from gpuparley.envs.market import messages
from gpuparley.envs.market.demand import demand_of
from gpuparley.envs.market.views import agent_views
from gpuparley.envs.scenario import load_scenario

from .helpers import outcome

pytestmark = pytest.mark.cluster
HOME = "agent-alpha"
MIB = 2**20


def _bid(tag: str, **changes: Any) -> dict[str, Any]:
    demand = messages.Demand(
        job="job-7", pods=1, gpu_kind="whole", gpu_count=1, cpu_milli=500, memory_mib=1024
    )
    bid = messages.Bid(
        id=f"limits-{tag}", sender="alpha", receiver=messages.MARKET, epoch=3, demand=demand,
        price=1.0, term_epochs=4,
    )  # fmt: skip
    obj = objects.offer_object(bid)
    for path, value in changes.items():
        node = obj
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return obj


def etcd_db_bytes(etcd_url: str) -> float:
    """etcd's database size (etcd_mvcc_db_total_size_in_bytes from its /metrics)."""
    with urllib.request.urlopen(f"{etcd_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^etcd_mvcc_db_total_size_in_bytes (\S+)$", text, re.MULTILINE)
    assert match, "etcd reports no database size"
    return float(match.group(1))


@pytest.fixture()
def alpha(cluster: Any, deployed: Any) -> Iterator[Kube]:
    kube = Kube(cluster.host.agent_kubeconfigs[HOME])
    yield kube
    kube.close()


def test_the_storage_attack_is_refused_and_etcd_does_not_grow(cluster: Any, alpha: Kube) -> None:
    before = etcd_db_bytes(cluster.etcd_url)
    huge = "r" * 1_400_000
    attacks = {
        "1.4 MB renewal_of": _bid("huge", **{"spec.renewal_of": huge}),
        "100k allowed models": _bid("models", **{"spec.demand.allowed_models": ["A100"] * 100_000}),
        "a 1 MB model name": _bid("model", **{"spec.demand.allowed_models": ["m" * 1_000_000]}),
        "1 MB annotations": _bid("notes", **{"metadata.annotations": {"x": "y" * 1_000_000}}),
    }
    for what, obj in attacks.items():
        status, message = outcome(lambda obj=obj: alpha.create("offers", HOME, obj))
        assert status == 422, (what, status, message[:300])
    held = _bid("held", **{"metadata.finalizers": ["example.com/keep"]})
    status, message = outcome(lambda: alpha.create("offers", HOME, held))
    assert status == 403 and "no finalizers" in message, message
    for _ in range(40):  # the 40 objects, each the largest the schema now allows
        obj = _bid(f"flood-{_}", **{"spec.renewal_of": "r" * 128})
        outcome(lambda obj=obj: alpha.create("offers", HOME, obj))
    grown = etcd_db_bytes(cluster.etcd_url) - before
    assert grown < 4 * MIB, f"etcd grew {grown / MIB:.1f} MiB"  # the attack grew it by 125 MiB
    _clean(cluster)


def _clean(cluster: Any) -> None:
    admin = Kube(cluster.host.kubeconfig)
    for obj in admin.list("offers", HOME):
        if obj["metadata"]["name"].startswith("bid-") and obj["spec"]["id"].startswith("limits-"):
            admin.delete("offers", HOME, obj["metadata"]["name"])
    admin.close()


def test_the_offer_quota_stops_a_flood_at_its_limit(cluster: Any, alpha: Kube) -> None:
    admin = Kube(cluster.host.kubeconfig)
    quota = admin.get("resourcequotas", HOME, quotas.QUOTA_NAME) or {}
    hard = int(quota["spec"]["hard"][quotas.OFFERS])
    codes: list[int] = []
    try:
        for i in range(hard + 5):
            codes.append(outcome(lambda i=i: alpha.create("offers", HOME, _bid(f"q{i}")))[0])
            if codes[-1] == 403:
                break
        used = admin.get("resourcequotas", HOME, quotas.QUOTA_NAME)["status"]["used"]
    finally:
        _clean(cluster)
        admin.close()
    assert codes[-1] == 403, codes
    assert set(codes[:-1]) == {200}
    assert int(used[quotas.OFFERS]) == hard  # full, and not one over
    assert hard == quotas.DEFAULT_OFFERS


def _controller(cluster: Any) -> tuple[MarketController, list[str]]:
    """A market controller as the market user, its clock moved on until two of alpha's jobs
    wait (none has arrived at epoch 0)."""
    market = Kube(cluster.host.agent_kubeconfigs[rbac.MARKET_USER])
    controller = MarketController(market, load_scenario("cluster-e2e"), 0)
    for _ in range(500):
        waiting = [s.job for s in agent_views(controller.market)["alpha"].slots if s.job]
        if len(waiting) >= 2:
            return controller, waiting
        controller.market.passed.update(controller.market.agents)
        controller.market.end_substep()
    raise AssertionError("alpha's jobs never arrived")


def test_the_market_takes_one_bid_per_decision_and_skips_offers_being_deleted(
    cluster: Any, alpha: Kube
) -> None:
    controller, (first, second) = _controller(cluster)
    market = controller.market
    jobs = {job.name: job for job in load_scenario("cluster-e2e").build_jobs(0)}

    def bid(job: str, bid_id: str) -> dict[str, Any]:
        message = messages.Bid(
            id=bid_id, sender="alpha", receiver=messages.MARKET, epoch=market.epoch,
            demand=demand_of(jobs[job]), price=0.1, term_epochs=market.term_epochs,
        )  # fmt: skip
        return objects.offer_object(message)

    decision = f"alpha.{market.epoch}.{controller.seq}"

    def receive() -> None:
        """One sub-step's intake: one list of the Offers to the market, judged, consumed."""
        offers = controller.kube.list("offers", None, selector=controller.selector)
        ids = {a: f"{a}.{market.epoch}.{controller.seq}" for a in market.agents}
        controller.bids.receive(offers, ids, set(market.agents))
        controller.bids.consume()

    alpha.create("offers", HOME, bid(first, "alpha.fresh-id"))  # the attacker's second bid
    alpha.create("offers", HOME, bid(second, decision))
    admin = Kube(cluster.host.kubeconfig)
    held = bid(first, "alpha.held")
    held["metadata"]["finalizers"] = ["example.com/keep"]  # only an admin can do this now
    admin.create("offers", HOME, held)
    try:
        receive()
        assert controller.rejected["duplicate"] == 2  # the fresh id and the held one
        assert market.stats.messages["Bid"] == 1
        leftover = admin.get("offers", HOME, held["metadata"]["name"]) or {}
        assert leftover["metadata"].get("deletionTimestamp")  # consumed, held by its finalizer
        before = copy.deepcopy(controller.rejected)
        requests = sum(controller.kube.requests.values())
        receive()
        assert controller.rejected == before  # not read, not rejected again
        assert sum(controller.kube.requests.values()) == requests + 1  # one list, no delete
    finally:
        admin.merge_patch(
            "offers", HOME, held["metadata"]["name"], {"metadata": {"finalizers": []}}
        )
        admin.close()
        controller.kube.close()
