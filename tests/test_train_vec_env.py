"""The parameter-sharing VecEnv over the market ParallelEnv, and the opponent pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

from gpuparley.agents.negotiators.registry import NEGOTIATORS
from gpuparley.agents.negotiators.simple import RandomNegotiator, Truthful
from gpuparley.envs.generator_schema import ScenarioRanges
from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_SIZE
from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.train.opponents import (
    SnapshotPool,
    draw_seats,
    learner_count,
    make_opponent,
    opponent_spec,
)
from gpuparley.train.scenario_sources import GeneratedGames, GeneratedScenarios
from gpuparley.train.vec_env import MarketVecEnv
from gpuparley.train.weights import policy_layers


def random_legal(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.choice(np.flatnonzero(row)) for row in masks])


def make_env(**kwargs: object) -> MarketVecEnv:
    defaults = {"mechanisms": ("auction", "bargain"), "seed": 3, "max_epochs": 4}
    return MarketVecEnv(["tiny", "gang-heavy"], **{**defaults, **kwargs})


def test_width_shapes_and_masks() -> None:
    env = make_env(mix={"self": 0.5, "scripted:truthful": 0.5})
    # tiny has 3 agents -> 2 learner seats (round(1.5) = 2), gang-heavy 4 -> 2
    assert env.num_envs == 4
    obs = env.reset()
    assert obs.shape == (4, OBSERVATION_SIZE) and obs.dtype == np.float32
    assert env.observation_space.contains(obs[0])
    masks = env.action_masks()
    assert masks.shape == (4, ACTION_COUNT) and masks.dtype == bool
    assert masks.any(axis=1).all()
    assert is_masking_supported(env)
    np.testing.assert_array_equal(get_action_masks(env), masks)


def test_reset_repeats_with_the_same_seed() -> None:
    first, second = make_env(), make_env()
    np.testing.assert_array_equal(first.reset(), second.reset())
    assert [first.seat(i) for i in range(first.num_envs)] == [
        second.seat(i) for i in range(second.num_envs)
    ]
    first.seed(99)
    assert first.reset().shape == second.reset().shape


def test_every_seat_gets_rewards_and_episodes_end_cleanly() -> None:
    env = make_env(mix={"self": 1.0})
    assert env.num_envs == 3 + 4  # self-only: the learner plays every seat
    env.reset()
    rng = np.random.default_rng(0)
    rewarded = np.zeros(env.num_envs, dtype=bool)
    finished = np.zeros(env.num_envs, dtype=bool)
    for _ in range(400):
        obs, rewards, dones, infos = env.step(random_legal(env.action_masks(), rng))
        assert obs.shape == (env.num_envs, OBSERVATION_SIZE)
        rewarded |= rewards != 0
        for index in np.flatnonzero(dones):
            info = infos[index]
            assert info["terminal_observation"].shape == (OBSERVATION_SIZE,)
            assert info["TimeLimit.truncated"] in (True, False)
            assert {"r", "l", "utility"} <= set(info["episode"])
            finished[index] = True
        if rewarded.all() and finished.all():
            break
    assert rewarded.all(), "some learner seat never received a reward"
    assert finished.all(), "some learner seat never finished an episode"


def test_one_model_acts_for_all_seats() -> None:
    env = make_env(mix={"self": 0.5, "scripted:truthful": 0.5})
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu")
    obs = env.reset()
    masks = env.action_masks()
    actions, _ = model.predict(obs, action_masks=masks, deterministic=True)
    assert actions.shape == (env.num_envs,)
    assert masks[np.arange(env.num_envs), actions].all()
    # the same weights answer every seat: one batched pass == per-seat passes of one network
    per_seat = [
        model.predict(obs[i : i + 1], action_masks=masks[i : i + 1], deterministic=True)[0][0]
        for i in range(env.num_envs)
    ]
    np.testing.assert_array_equal(actions, per_seat)
    before = model.policy.action_net(model.policy.mlp_extractor.forward_actor(torch.tensor(obs)))
    with torch.no_grad():
        model.policy.action_net.bias += 1.0
    after = model.policy.action_net(model.policy.mlp_extractor.forward_actor(torch.tensor(obs)))
    assert (after - before).abs().min().item() > 0.99  # one change moved every seat's logits


def test_seat_draw_uses_the_mix_and_the_pool() -> None:
    agents = ["a", "b", "c", "d"]
    assert learner_count({"self": 0.5, "scripted:truthful": 0.5}, 4) == 2
    assert learner_count({"self": 0.01, "scripted:truthful": 1}, 4) == 1  # at least one learner
    assert learner_count({"self": 1.0}, 4) == 4
    pool = SnapshotPool(2)
    model = MaskablePPO("MlpPolicy", make_env(), n_steps=16, batch_size=16, device="cpu")
    pool.add(policy_layers(model.policy))
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(30):
        mix = {"self": 0.5, "snapshots": 0.25, "scripted:truthful": 0.25}
        plan = draw_seats(agents, mix, rng, pool)
        assert len(plan.learners) == 2 and set(plan.learners) | set(plan.opponents) == set(agents)
        kinds |= {type(opponent) for opponent in plan.opponents.values()}
    assert kinds == {LearnedNegotiator, Truthful}


def test_any_negotiator_plugs_in_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    class Passer:
        name = "passer"

        def reset(self, seed: int | None = None) -> None:
            return None

        def act(self, observation, mask, view) -> int:
            return int(np.flatnonzero(mask)[0])

    monkeypatch.setitem(NEGOTIATORS, "passer", lambda seed: Passer())
    opponent_spec.cache_clear()
    assert isinstance(make_opponent("scripted:random", 1), RandomNegotiator)
    env = make_env(mix={"self": 0.5, "scripted:passer": 0.5})
    env.reset()
    game = env.games[0]
    assert all(isinstance(o, Passer) for o in game.plan.opponents.values())
    env.step(random_legal(env.action_masks(), np.random.default_rng(0)))
    with pytest.raises(ValueError, match="no negotiator 'nobody'"):
        make_opponent("scripted:nobody", 0)


def generated_env(**kwargs: object) -> MarketVecEnv:
    ranges = ScenarioRanges(agents=(3, 6), jobs=(10, 30), max_gpus=8)
    games = GeneratedGames(ranges, range(0, 20), games=2, learner_seats=2)
    defaults = {"mechanisms": ("auction", "bargain"), "seed": 5, "max_epochs": 6}
    return MarketVecEnv([], generated=games, **{**defaults, **kwargs})


def test_generated_games_keep_their_width_as_agent_counts_change() -> None:
    pool = SnapshotPool(2)
    env = generated_env(mix={"self": 0.5, "scripted:truthful": 0.5}, pool=pool)
    assert env.num_envs == 4  # 2 games x 2 learner seats, whatever the scenario
    model = MaskablePPO("MlpPolicy", env, n_steps=16, batch_size=16, device="cpu")
    pool.set_current(policy_layers(model.policy))
    env.reset()
    rng = np.random.default_rng(0)
    names, agent_counts, opponents = set(), set(), set()
    for _ in range(300):
        for game in env.games:
            names.add(game.env.scenario.name)
            agent_counts.add(len(game.env.possible_agents))
            opponents |= {o.name for o in game.plan.opponents.values()}
            assert len(game.plan.learners) == 2
        obs, _rewards, _dones, _infos = env.step(random_legal(env.action_masks(), rng))
        assert obs.shape == (4, OBSERVATION_SIZE)
    assert len(names) >= 3 and len(agent_counts) >= 2
    assert all(name.startswith("generated-") for name in names)
    assert opponents == {"self", "truthful"}  # `self` seats play the current policy


def test_generated_scenarios_are_drawn_from_the_training_seeds_and_kept() -> None:
    source = GeneratedScenarios(GeneratedGames(ScenarioRanges(), range(40, 43), 1, 2))
    rng = np.random.default_rng(0)
    drawn = [source.draw(rng) for _ in range(12)]
    assert {s.name for s in drawn} <= {"generated-40", "generated-41", "generated-42"}
    first = {s.name: s for s in drawn}
    assert all(s is first[s.name] for s in drawn)  # built once per seed


def test_fixed_learner_seats_draw_the_rest_from_the_whole_mix() -> None:
    agents = [f"a{i}" for i in range(6)]
    pool = SnapshotPool(2)
    rng = np.random.default_rng(1)
    plan = draw_seats(agents, {"self": 1.0}, rng, pool, learners=2)
    # no current policy yet: `self` seats fall back to the truthful negotiator
    assert len(plan.learners) == 2 and all(isinstance(o, Truthful) for o in plan.opponents.values())
    model = MaskablePPO("MlpPolicy", make_env(), n_steps=16, batch_size=16, device="cpu")
    pool.set_current(policy_layers(model.policy))
    plan = draw_seats(agents, {"self": 1.0}, rng, pool, learners=2)
    assert len(plan.opponents) == 4
    assert all(o.model is pool.current for o in plan.opponents.values())


def test_a_welfare_share_joins_each_seats_reward() -> None:
    """r = (utility + w x welfare / agents) / budget x scale over a whole episode."""
    weight, scale = 0.5, 0.05
    env = make_env(mix={"self": 1.0}, max_epochs=None, reward_welfare=weight, reward_scale=scale)
    env.reset()
    rng = np.random.default_rng(0)
    budgets = {g: dict(game.budgets) for g, game in enumerate(env.games)}
    for _ in range(20_000):
        _obs, _rewards, dones, infos = env.step(random_legal(env.action_masks(), rng))
        if dones.any():
            break
    checked = 0
    for index in np.flatnonzero(dones):
        game, position = env.slots[index]
        agent = env.games[game].plan.learners[position]  # seats keep their order when all learn
        episode = infos[index]["episode"]
        expected = episode["utility"] + weight * episode["welfare"] / len(budgets[game])
        assert episode["welfare"] > 0
        assert episode["r"] == pytest.approx(expected / budgets[game][agent] * scale, rel=1e-4)
        checked += 1
    assert checked
