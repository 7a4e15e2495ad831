"""Property tests of the market: legal masks, balanced payments, no overdraft, atomic gangs,
leases within capacity, and random play that never breaks anything."""

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuparley.agents.negotiators.simple import RandomNegotiator
from gpuparley.envs import gpu_market_v1
from gpuparley.envs.cluster_audit import check_invariants
from gpuparley.envs.market.encoding import decode
from gpuparley.envs.simulator import JobState

SCENARIOS = ["tiny", "mig-mixed", "timeslice-noisy", "gang-heavy"]


def audit(market) -> None:
    ledger = market.ledger
    assert abs(ledger.imbalance()) < 1e-6, "credits created or lost"
    assert sum(ledger.paid.values()) == pytest.approx(
        ledger.market_revenue + sum(ledger.received.values())
    ), "what one pays, another or the market receives"
    assert min(ledger.balances.values()) >= -1e-9, "a budget was overdrawn"
    sim = market.sim
    check_invariants(sim.state, sim.jobs)  # no slice held twice, MIG geometry, CPU/memory
    for record in sim.records.values():
        assert record.state is not JobState.PARTIAL, "a gang was half placed"
    for lease in market.leases.values():
        job = market.jobs_by_name[lease.job]
        record = sim.record(job.id)
        assert record.state is JobState.RUNNING, "a lease outlived its job"
        held = sim.state.holdings[job.id]
        assert len(held) == job.pods, "a gang's lease must cover all its pods"
    mechanism = market.mechanism
    if mechanism.name == "bargain":
        for agent in market.agents:
            assert mechanism.effective_quota(agent) >= 0, "more quota lent than owned"
        assert sum(mechanism.effective_quota(a) for a in market.agents) == sum(
            market.quota_milli.values()
        ), "lending moves quota, never creates it"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=st.sampled_from(SCENARIOS),
    mechanism=st.sampled_from(["auction", "bargain"]),
    seed=st.integers(0, 10_000),
)
def test_random_play_never_raises_and_keeps_every_invariant(scenario, mechanism, seed):
    env = gpu_market_v1.parallel_env(scenario=scenario, mechanism=mechanism, max_epochs=60)
    observations, _ = env.reset(seed=seed)
    players = {a: RandomNegotiator(seed + i) for i, a in enumerate(env.possible_agents)}
    while env.agents:
        actions = {
            a: players[a].act(o["observation"], o["action_mask"], env.views[a])
            for a, o in observations.items()
        }
        for agent, action in actions.items():
            assert observations[agent]["action_mask"][action] == 1
        observations, rewards, *_ = env.step(actions)
        assert all(np.isfinite(r) for r in rewards.values())
        audit(env.market)


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
def test_every_action_the_mask_allows_is_accepted(mechanism):
    """At sampled states, each agent's every legal action, tried alone, is accepted."""
    env = gpu_market_v1.parallel_env(scenario="mig-mixed", mechanism=mechanism, max_epochs=40)
    observations, _ = env.reset(seed=3)
    players = {a: RandomNegotiator(i) for i, a in enumerate(env.possible_agents)}
    checked = 0
    for step in range(120):
        if not env.agents:
            break
        if step % 15 == 5:
            for agent in env.agents:
                mask = observations[agent]["action_mask"]
                for action in np.flatnonzero(mask):
                    trial = copy.deepcopy(env.market)
                    receipt = trial.decide(agent, decode(action, env.views[agent]))
                    assert receipt.accepted, (agent, int(action), receipt.reason)
                    checked += 1
        actions = {
            a: players[a].act(o["observation"], o["action_mask"], env.views[a])
            for a, o in observations.items()
        }
        observations, *_ = env.step(actions)
    assert checked > 20


def test_masked_out_actions_decode_to_harmless_decisions():
    env = gpu_market_v1.parallel_env(scenario="tiny")
    observations, _ = env.reset(seed=0)
    for agent, obs in observations.items():
        for action in np.flatnonzero(obs["action_mask"] == 0):
            assert decode(action, env.views[agent]).kind in ("pass", "reject")
        assert decode(10_000, env.views[agent]).kind in ("pass", "reject")
