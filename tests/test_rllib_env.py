"""The RLlib face of the market (no Ray cluster needed): the learner-seat PettingZoo env, its
RLlib wrapper, scenario binding, seeding, and the rllib config section."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("ray.rllib")

from pettingzoo.test import parallel_api_test

from gpuparley.envs.scenario import load_scenario
from gpuparley.train import rllib_env
from gpuparley.train.config import GeneratorConfig, TrainConfigError, load_config
from gpuparley.train.rllib_backend import env_config
from gpuparley.train.rllib_env import LearnerSeats, MarketTrainingEnv
from gpuparley.train.scenario_sources import FixedScenario

MIX = {"self": 0.5, "snapshots": 0.25, "scripted:truthful": 0.25}


def seats(seed: int = 0, scenario: str = "tiny") -> LearnerSeats:
    source = FixedScenario(load_scenario(scenario))
    return LearnerSeats(
        source, ["auction", "bargain"], MIX, np.random.default_rng(seed), 20, 0.0, 0.05, 2
    )


def test_learner_seats_pass_the_pettingzoo_parallel_api_test() -> None:
    parallel_api_test(seats(), num_cycles=200)


def play(env: LearnerSeats, seed: int) -> tuple[list[dict[str, float]], dict[str, dict]]:
    """One episode with the lowest legal action; the rewards of each step and the last infos."""
    observations, _ = env.reset(seed=seed)
    rewards, infos = [], {}
    while env.agents:
        actions = {a: int(np.flatnonzero(o["action_mask"])[0]) for a, o in observations.items()}
        observations, step_rewards, ends, cuts, infos = env.step(actions)
        assert set(step_rewards) == set(ends) == set(cuts) == set(actions)
        rewards.append(step_rewards)
    return rewards, infos


def test_episodes_repeat_with_a_seed_and_end_for_every_slot_together() -> None:
    env = seats()
    first, infos = play(env, seed=3)
    again, _ = play(seats(), seed=3)
    assert first == again and len(first) > 1
    assert set(infos) == {"learner_0", "learner_1"}
    seat_of = dict(zip(env.playing, env.game.plan.learners, strict=True))
    for slot, info in infos.items():  # utility in credits; rewards in budgets x reward_scale
        budget = env.game.budgets[seat_of[slot]]
        total = sum(step[slot] for step in first)
        assert total == pytest.approx(info["utility"] / budget * 0.05, rel=1e-9, abs=1e-12)


def test_the_env_creator_binds_games_to_scenarios_round_robin() -> None:
    config = load_config("smoke").model_copy(update={"scenarios": ["tiny", "gang-heavy"]})
    settings = env_config(config)
    made = [MarketTrainingEnv(settings) for _ in range(4)]
    names = [env.par_env.game.env.scenario.name for env in made]
    assert names[0::2] == [names[0]] * 2 and names[1::2] == [names[1]] * 2
    assert {names[0], names[1]} == {"tiny", "gang-heavy"}
    for env in made:
        assert set(env.observation_spaces) == {"learner_0", "learner_1"}
        observations, _ = env.reset(seed=0)
        assert set(observations) == set(env.agents) <= set(env.possible_agents)
    assert rllib_env.process_pool(2) is made[0].par_env.pool


def test_rllib_section_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "rllib": {"env_runner": 2}}))
    with pytest.raises(TrainConfigError, match=r"rllib\.env_runner"):
        load_config(path)
    path.write_text(yaml.safe_dump({"name": "x", "backend": "rllib", "algorithm": "ppo"}))
    with pytest.raises(TrainConfigError, match="rllib backend trains masked PPO"):
        load_config(path)


def test_generated_games_and_the_welfare_reward_are_the_vec_envs() -> None:
    """With a `generator` section the env creator builds the sb3 VecEnv's games (generated
    scenarios, `learner_seats` slots each), and a slot's return is its utility plus the welfare
    share, r = (utility + w x welfare / agents) / budget x scale."""
    generator = GeneratorConfig(
        ranges={"agents": [3, 5], "jobs": [10, 20], "max_gpus": 8, "arrival_hours": [2, 4]},
        seeds="0-49",
        games=2,
        learner_seats=2,
    )
    config = load_config("smoke").model_copy(
        update={"scenarios": [], "generator": generator, "reward_welfare": 0.5, "max_epochs": None}
    )
    settings = env_config(config)
    assert settings["slots"] == 2
    env = MarketTrainingEnv(settings).par_env
    rewards, infos = play(env, seed=1)
    game = env.game
    assert game.env.scenario.name.startswith("generated-")
    assert set(infos) == {"learner_0", "learner_1"}
    for slot, seat in zip(env.playing, game.plan.learners, strict=True):
        expected = infos[slot]["utility"] + 0.5 * game.realised() / len(game.budgets)
        total = sum(step[slot] for step in rewards)
        assert total == pytest.approx(expected / game.budgets[seat] * 0.05, rel=1e-9)
    assert game.realised() > 0
