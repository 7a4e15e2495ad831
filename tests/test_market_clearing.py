"""The market that can win: continuous clearing, incumbency without lost work, priced preemption.

The scarce scenario below is the one that used to livelock: a few 8-GPU nodes, four tenants,
jobs of hours, and leases far shorter than the jobs, with no checkpointing. Re-auctioning every
lease at the end of its term threw away work again and again; with incumbency a running job
keeps its placement while it pays, so every job finishes and nothing is redone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.envs import gpu_market_v1
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.scenario import load_scenario

SCARCE = {
    "name": "scarce",
    "agents": 4,
    "cluster": {
        "nodes": [
            {
                "name": "a100",
                "count": 2,
                "cpu_milli": 128000,
                "memory_mib": 1048576,
                "gpu_model": "A100-80GB",
                "gpus": 8,
                "mode": "exclusive",
            }
        ]
    },
    "workload": {
        "generator": {
            "jobs": 30,
            "hours": 3,
            "rate_per_hour": 10,
            "classes": {
                "training": {
                    "weight": 1,
                    "sizes": {"1x2": 0.4, "1x4": 0.4, "1x8": 0.2},
                    "duration": {"median_seconds": 10800, "sigma": 0.3, "min_seconds": 3600},
                }
            },
        }
    },
    "settings": {"preemption_keeps_progress": False},
    "market": {"mechanism": "auction", "epoch_seconds": 600, "lease_term_epochs": 2},
}


def scarce(tmp_path: Path, **market: object) -> Path:
    path = tmp_path / "scarce.yaml"
    path.write_text(yaml.safe_dump({**SCARCE, "market": {**SCARCE["market"], **market}}))
    return path


def run(path: Path, seed: int = 0, max_epochs: int = 3000, **env: object) -> tuple[dict, object]:
    market_env = gpu_market_v1.parallel_env(scenario=path, max_epochs=max_epochs, **env)
    episode = play_episode(market_env, Truthful(), seed)
    return episode.summary, market_env.market


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
@pytest.mark.parametrize("clearing", ["continuous", "epoch"])
def test_with_incumbency_every_job_finishes_and_no_work_is_redone(tmp_path, mechanism, clearing):
    summary, market = run(scarce(tmp_path), mechanism=mechanism, clearing=clearing)
    assert summary["jobs_finished"] == summary["jobs"] > 20
    assert summary["work_lost_gpu_hours"] == 0.0
    assert all(record.lost_gpu_seconds == 0.0 for record in market.sim.records.values())
    assert summary["ledger_imbalance"] == pytest.approx(0.0, abs=1e-6)


def test_re_auction_redoes_work_that_incumbency_keeps(tmp_path):
    """The ablation the test above guards against: without incumbency leases are re-auctioned
    at the end of every term, renewals that lose stop their jobs, and (no checkpointing) their
    work is thrown away."""
    summary, _ = run(scarce(tmp_path, incumbency=False), max_epochs=150)
    assert summary["work_lost_gpu_hours"] > 1.0


def test_only_a_priced_preemption_throws_work_away(tmp_path):
    """With a premium, a bid that outbids a running lease's rent by more than it takes the
    lease's place; the victims' lost progress is exactly the work the market reports lost."""
    summary, market = run(scarce(tmp_path, preemption_premium=0.1, payment_rule="first"))
    assert summary["jobs_finished"] == summary["jobs"]
    preempted = {lease.job for lease, release in market.releases if release.reason == "preempted"}
    lost = {record.job.id for record in market.sim.records.values() if record.lost_gpu_seconds > 0}
    assert summary["preemptions"] == len([r for _, r in market.releases if r.reason == "preempted"])
    assert summary["preemptions"] > 0  # the scarce cluster does provoke them
    assert lost and {market.jobs_by_name[name].id for name in preempted} >= lost
    assert summary["work_lost_gpu_hours"] > 0


def test_continuous_clearing_decides_at_arrival_not_at_the_next_epoch(tmp_path):
    """A job that arrives to free capacity starts when it arrives; under epoch clearing it waits
    for the next boundary."""
    delays = {}
    for clearing in ("continuous", "epoch"):
        _, market = run(scarce(tmp_path), clearing=clearing)
        first = min(market.sim.records.values(), key=lambda r: r.job.arrival)
        delays[clearing] = first.first_start - first.job.arrival
    assert delays["continuous"] == 0.0
    assert delays["epoch"] > 0.0


def test_the_environment_asks_only_when_there_is_a_decision(tmp_path):
    env = gpu_market_v1.parallel_env(scenario=scarce(tmp_path), max_epochs=3000)
    observations, _ = env.reset(seed=0)
    policy = Truthful()
    asked_in = set()  # the clearings (rounds) in which some agent was asked to act
    while env.agents:
        assert any(view.slots or view.inbox for view in env.views.values())
        asked_in.add(env.market.clearings)
        actions = {
            agent: policy.act(obs["observation"], obs["action_mask"], env.views[agent])
            for agent, obs in observations.items()
        }
        observations, *_ = env.step(actions)
    # the rounds nobody decides in (most of them) are played out inside a step
    assert len(asked_in) < env.market.clearings / 2


def test_the_spec_suffix_selects_the_clearing():
    from gpuparley.policy.specs import parse_policy

    spec = parse_policy("scripted:truthful@epoch@bargain")
    assert (spec.clearing, spec.mechanism) == ("epoch", "bargain")
    with pytest.raises(ValueError, match="two clearings"):
        parse_policy("scripted:truthful@epoch@continuous")
    assert load_scenario("tiny").market.clearing == "continuous"
