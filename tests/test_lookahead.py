"""An agent's own prediction of its next view within an auction round (`lookahead.next_view`)
must equal the view the market then builds: a market controller takes answers given ahead only
on equal views, so a wrong prediction costs a round trip, and a prediction not made saves
nothing. Both are checked: every view that follows a decision within its round was predicted,
and equals the prediction."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from gpuparley.agents.negotiators.simple import RandomNegotiator, Truthful
from gpuparley.agents.negotiators.strategies import BudgetPacing
from gpuparley.envs import gpu_market_v1
from gpuparley.envs.market.encoding import Decision, decode, encode
from gpuparley.envs.market.lookahead import next_view
from gpuparley.envs.market.views import lookaheads
from gpuparley.envs.scenario import scenarios_dir


def _burst(tmp_path: Path, base: str, jobs: int = 24) -> str:
    """`base` with all its jobs arriving at once: rounds of several sub-steps per agent."""
    doc = yaml.safe_load((scenarios_dir() / f"{base}.yaml").open())
    doc["workload"]["generator"].update({"jobs": jobs, "hours": 0.01, "rate_per_hour": 1e6})
    path = tmp_path / f"burst-{base}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _play(scenario: str, policy, seed: int, max_epochs: int = 12) -> tuple[int, int]:
    """(views that followed a decision in its round, those predicted equal); asserts that
    every prediction made equals the market's view."""
    env = gpu_market_v1.parallel_env(scenario=scenario, mechanism="auction", max_epochs=max_epochs)
    env.reset(seed=seed)
    market = env.market
    followed = predicted_equal = 0
    while env.agents:
        actions, predicted = {}, {}
        clearings = market.clearings
        ahead = lookaheads(market)
        for agent in env.agents:
            view = env.views[agent]
            if not view.slots:
                continue
            observation, mask = encode(view)
            actions[agent] = int(policy.act(observation, mask, view))
            decision = decode(actions[agent], view, np.asarray(mask))
            predicted[agent] = next_view(view, decision, ahead[agent])
        env.step(actions)
        if market.clearings != clearings or not env.agents:
            continue  # the round ended: its next views are not the agent's to foresee
        for agent, prediction in predicted.items():
            if env.views[agent].slots:
                followed += 1
                if prediction is not None:
                    assert env.views[agent] == prediction[0], (scenario, seed, agent)
                    predicted_equal += 1
    return followed, predicted_equal


@pytest.mark.parametrize("base", ["tiny", "cluster-e2e", "gang-heavy"])
def test_every_next_view_of_a_truthful_bidder_is_predicted_exactly(tmp_path, base):
    followed, predicted_equal = _play(_burst(tmp_path, base), Truthful(), seed=3)
    assert followed >= 10
    assert predicted_equal == followed


@pytest.mark.parametrize("seed", [0, 1])
def test_bidders_that_pass_rebid_and_bid_at_any_price_are_predicted_exactly(tmp_path, seed):
    scenario = _burst(tmp_path, "cluster-e2e")
    for policy in (RandomNegotiator(seed), BudgetPacing()):
        followed, predicted_equal = _play(scenario, policy, seed=seed, max_epochs=8)
        assert followed >= 5
        assert predicted_equal == followed


def test_a_bargaining_view_is_never_predicted(tmp_path):
    """Under bargaining others' offers reach the agent within a round: even a pass, which
    changes nothing of the agent's own, leaves its next view unknown."""
    env = gpu_market_v1.parallel_env(scenario=_burst(tmp_path, "tiny"), mechanism="bargain")
    env.reset(seed=0)
    agent = next(a for a in env.agents if env.views[a].slots)
    assert next_view(env.views[agent], Decision("pass"), lookaheads(env.market)[agent]) is None
