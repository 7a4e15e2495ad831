"""The economics: truthful second-price auctions allocate by value; consent protects quota."""

from dataclasses import replace

import pytest

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.market.demand import demand_of
from gpuparley.envs.market.encoding import REJECT, decode, encode
from gpuparley.envs.market.messages import Offer
from gpuparley.envs.market.views import agent_views
from gpuparley.envs.simulator import JobState

from market_builders import gpu_job, market_with_jobs, scenario_file

RICH = 1000.0
SPEED = CATALOGUE["A100-80GB"].relative_speed  # rents are per epoch of reference-speed compute


def play_epoch(market, policies):
    """One epoch: every agent acts through its policy until the epoch closes."""
    while True:
        views = agent_views(market)
        for agent in market.agents:
            obs, mask = encode(views[agent])
            action = policies[agent].act(obs, mask, views[agent])
            market.decide(agent, decode(action, views[agent]))
        if market.end_substep():
            return


@pytest.mark.parametrize("seed_values", [(5.0, 9.0, 7.0), (30.0, 10.0, 20.0), (2.0, 3.0, 1.0)])
def test_truthful_second_price_allocates_the_highest_values_and_charges_the_next(
    tmp_path, seed_values
):
    agents = [{"name": n, "budget_per_epoch": RICH} for n in ("ann", "ben", "cat")]
    path = scenario_file(tmp_path, gpus=2, agents=agents, payment_rule="second")
    jobs = [
        gpu_job(i, a["name"], 1, v)
        for i, (a, v) in enumerate(zip(agents, seed_values, strict=True))
    ]
    market = market_with_jobs(path, jobs, "auction")
    play_epoch(market, dict.fromkeys(market.agents, Truthful()))

    ranked = sorted(jobs, key=lambda j: -j.value)
    running = {j.id for j in jobs if market.sim.record(j.id).state is JobState.RUNNING}
    assert running == {ranked[0].id, ranked[1].id}
    # (k+1)-th price: both winners pay the losing bid's rent (per GPU-hour, equal sizes here)
    # for the epoch cleared and, at the start of the next, for the second epoch of the lease
    losing_rent = ranked[2].value * 300 / 3600 * SPEED
    for job in ranked[:2]:
        assert market.ledger.paid[job.owner] == pytest.approx(2 * losing_rent)
    assert market.ledger.paid[ranked[2].owner] == 0
    assert market.ledger.market_revenue == pytest.approx(4 * losing_rent)


def test_first_price_charges_the_bid(tmp_path):
    agents = [{"name": n, "budget_per_epoch": RICH} for n in ("ann", "ben")]
    path = scenario_file(tmp_path, gpus=1, agents=agents, payment_rule="first")
    jobs = [gpu_job(0, "ann", 1, 12.0), gpu_job(1, "ben", 1, 6.0)]
    market = market_with_jobs(path, jobs, "auction")
    play_epoch(market, dict.fromkeys(market.agents, Truthful()))
    assert market.sim.record(0).state is JobState.RUNNING
    assert market.ledger.paid["ann"] == pytest.approx(2 * 12.0 * 300 / 3600 * SPEED)


def test_reserve_price_keeps_cheap_bids_out(tmp_path):
    agents = [{"name": "ann", "budget_per_epoch": RICH}]
    path = scenario_file(tmp_path, gpus=1, agents=agents, reserve_price_per_gpu_hour=5.0)
    market = market_with_jobs(path, [gpu_job(0, "ann", 1, 4.0)], "auction")  # 4/GPU-hour
    play_epoch(market, {"ann": Truthful()})
    assert market.sim.record(0).state is JobState.PENDING
    assert market.ledger.paid["ann"] == 0


class AlwaysReject(Truthful):
    """Lends nothing: rejects every offer; otherwise behaves truthfully."""

    def act(self, observation, mask, view):
        if view.inbox is not None and view.inbox.as_lender:
            return REJECT
        return super().act(observation, mask, view)


def test_an_agent_that_rejects_every_offer_keeps_its_capacity(tmp_path):
    agents = [
        {"name": "ann", "budget_per_epoch": RICH, "quota_share": 0.25},
        {"name": "ben", "budget_per_epoch": RICH, "quota_share": 0.25},
        {"name": "hoarder", "budget_per_epoch": RICH, "quota_share": 0.5},
    ]
    path = scenario_file(tmp_path, gpus=4, agents=agents)
    # ann and ben each want 3 GPUs but own 1; only the hoarder has idle quota (2 GPUs)
    jobs = [gpu_job(0, "ann", 3, 50.0), gpu_job(1, "ben", 3, 50.0)]
    market = market_with_jobs(path, jobs, "bargain")
    policies = {"ann": Truthful(), "ben": Truthful(), "hoarder": AlwaysReject()}
    for _ in range(5):
        play_epoch(market, policies)
    assert market.stats.proposals > 0, "the short agents did propose"
    assert market.stats.agreements == 0
    assert not market.leases
    assert market.mechanism.effective_quota("hoarder") == 2000
    assert all(market.sim.record(j.id).state is JobState.PENDING for j in jobs)
    assert market.ledger.received["hoarder"] == 0


def test_a_willing_lender_lends_and_is_paid(tmp_path):
    agents = [
        {"name": "ann", "budget_per_epoch": RICH, "quota_share": 0.25},
        {"name": "lender", "budget_per_epoch": RICH, "quota_share": 0.75},
    ]
    path = scenario_file(tmp_path, gpus=4, agents=agents)
    market = market_with_jobs(path, [gpu_job(0, "ann", 3, 50.0)], "bargain")
    play_epoch(market, {"ann": Truthful(), "lender": Truthful()})
    assert market.stats.agreements == 1
    assert market.sim.record(0).state is JobState.RUNNING
    (lease,) = market.leases.values()
    assert (lease.holder, lease.lender, lease.quota_milli) == ("ann", "lender", 2000)
    assert market.ledger.received["lender"] == pytest.approx(market.ledger.paid["ann"])
    assert market.mechanism.effective_quota("ann") == 3000


def test_a_lease_renews_only_the_job_it_was_signed_for(tmp_path):
    agents = [
        {"name": "ann", "budget_per_epoch": RICH, "quota_share": 0.25},
        {"name": "lender", "budget_per_epoch": RICH, "quota_share": 0.75},
    ]
    path = scenario_file(tmp_path, gpus=4, agents=agents)
    jobs = [gpu_job(0, "ann", 3, 50.0, duration=36000.0), gpu_job(1, "ann", 3, 50.0)]
    market = market_with_jobs(path, jobs, "bargain")
    play_epoch(market, {"ann": Truthful(), "lender": Truthful()})
    (lease,) = market.leases.values()
    while market.epoch < lease.expires_epoch:  # let the lease come due, nobody renewing
        market.passed.update(market.agents)
        market.end_substep()
    lease_id = lease.lease_id
    other = next(j for j in jobs if j.name != lease.job)
    assert market.lease_due_for_renewal(lease_id, "ann", lease.job)[0] is not None
    refused, reason = market.lease_due_for_renewal(lease_id, "ann", other.name)
    assert refused is None and "of yours for this job" in reason
    offer = Offer(
        id="renew-other",
        sender="ann",
        receiver="lender",
        epoch=market.epoch,
        demand=demand_of(other),
        price=1.0,
        term_epochs=market.term_epochs,
        round=1,
        renewal_of=lease_id,
    )
    receipt = market.receive(offer)
    assert not receipt.accepted and "of yours for this job" in receipt.reason


@pytest.mark.parametrize(("small_value", "preempted"), [(15.0, False), (50.0, True)])
def test_a_bid_must_outbid_a_bundle_as_a_whole_to_take_its_place(tmp_path, small_value, preempted):
    """With a premium, a 1-GPU bid priced above a 4-GPU lease per GPU-hour preempts it only
    if its rent also beats the whole lease's: breaking up a gang loses all of its room."""
    agents = [{"name": n, "budget_per_epoch": RICH} for n in ("big", "small")]
    path = scenario_file(
        tmp_path, gpus=4, agents=agents, payment_rule="first", preemption_premium=0.1
    )
    # per GPU-hour: big 10, small 15 or 50 (both above 10 x 1.1); per epoch: big 40 x 300 /
    # 3600 = 3.3 (3.7 with the premium), small 1.25 or 4.2
    jobs = [gpu_job(0, "big", 4, 40.0), replace(gpu_job(1, "small", 1, small_value), arrival=60)]
    market = market_with_jobs(path, jobs, "auction")
    policies = dict.fromkeys(market.agents, Truthful())
    play_epoch(market, policies)
    assert market.sim.record(0).state is JobState.RUNNING  # alone at first, it wins
    while market.sim.now <= 60:  # the rounds up to and including the small job's arrival
        play_epoch(market, policies)
    play_epoch(market, policies)
    small_runs = market.sim.record(1).state is JobState.RUNNING
    assert small_runs is preempted
    assert (market.stats.preemptions > 0) is preempted
