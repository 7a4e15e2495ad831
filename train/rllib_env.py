"""The market as RLlib sees it: the learner's seats of one `gpu_market_v1` game.

`LearnerSeats` is a PettingZoo `ParallelEnv` whose agents are the learner's seat slots
(`learner_0`, `learner_1`, ...) of one game of the market environment; the other seats are
played inside it by the opponent mix, re-drawn every episode, exactly as the stable-baselines3
path does (the same `game.Game`, scenario sources, `opponents.draw_seats`, rewards and seeding
rules).
RLlib then takes it through its PettingZoo support (`MarketMultiAgentEnv`, a
`ParallelPettingZooEnv`), maps every slot to one module (parameter sharing), and masks actions
with the `action_mask` the observations carry (`train.rllib_module`).

Each game is bound to one scenario source, the training games being those of the sb3 VecEnv
(`scenario_sources.training_sources`: `copies` games per bundled scenario, then the `generator`
section's games of generated scenarios, each with a fixed number of learner seats). The env
class (`MarketTrainingEnv`) binds the k-th environment a process creates to
game k mod (number of games), so an env runner with that many environments steps every game in
lockstep, as the stable-baselines3 VecEnv does. Self-play snapshots and the frozen copy of the
current policy (`self` seats of generated games) are numpy copies of the learner held in one pool
per process (`process_pool`), fed by the driver (`add_snapshot`, `set_current`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import gymnasium
import numpy as np
from pettingzoo import ParallelEnv
from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

from gpuparley.envs.market.encoding import ACTION_COUNT
from gpuparley.envs.market.parallel_env import observation_space
from gpuparley.policy.runtime import Layer
from gpuparley.train.game import Game
from gpuparley.train.opponents import SeatPlan, SnapshotPool, draw_seats
from gpuparley.train.scenario_sources import ScenarioSource, training_sources

_CREATED = itertools.count()
_POOL: list[SnapshotPool] = []  # this process's self-play pool, once an env is created here


def slot_name(index: int) -> str:
    return f"learner_{index}"


def learner_slots(sources: Sequence[ScenarioSource], mix: Mapping[str, float]) -> list[int]:
    """Learner seats of each game (the agents each `LearnerSeats` has)."""
    return [source.learner_seats(mix) for source in sources]


def process_pool(size: int) -> SnapshotPool:
    """This process's self-play pool, shared by its environments (created on first use)."""
    if not _POOL:
        _POOL.append(SnapshotPool(size))
    return _POOL[0]


def add_snapshot(layers: Sequence[Layer]) -> None:
    """Freeze `layers` into this process's pool (called on every env runner; a process that
    holds no environment has no pool and nothing to do)."""
    for pool in _POOL:
        pool.add(layers)


def set_current(layers: Sequence[Layer]) -> None:
    """Make `layers` the frozen copy of the current policy in this process's pool (what `self`
    seats of generated games play; refreshed before every training iteration)."""
    for pool in _POOL:
        pool.set_current(layers)


class LearnerSeats(ParallelEnv):
    """The learner seats of one game; opponents play the others (module docstring)."""

    metadata: ClassVar[dict[str, str]] = {"name": "gpuparley_learner_seats_v1"}

    def __init__(
        self,
        source: ScenarioSource,
        mechanisms: Sequence[str],
        mix: Mapping[str, float],
        rng: np.random.Generator,
        max_epochs: int | None,
        reward_shaping: float,
        reward_scale: float,
        slots: int,
        pool: SnapshotPool | None = None,
        reward_welfare: float = 0.0,
    ) -> None:
        env_kwargs = {"max_epochs": max_epochs, "reward_shaping": reward_shaping}
        count = source.learner_seats(mix)
        self.game = Game(source, mechanisms, rng, env_kwargs, count)
        self.mix = dict(mix)
        self.pool = pool
        self.reward_scale = reward_scale
        self.reward_welfare = reward_welfare
        self.possible_agents = [slot_name(k) for k in range(max(slots, count))]
        self.playing = self.possible_agents[:count]
        self.agents: list[str] = []
        self._space = observation_space()
        self._actions = gymnasium.spaces.Discrete(ACTION_COUNT)

    def observation_space(self, agent: str) -> gymnasium.spaces.Dict:
        return self._space

    def action_space(self, agent: str) -> gymnasium.spaces.Discrete:
        return self._actions

    def _draw(self, agents: list[str], rng: np.random.Generator, learners: int | None) -> SeatPlan:
        return draw_seats(agents, self.mix, rng, self.pool, learners)

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        seats = self.game.plan.learners
        return {
            slot: self.game.observations[seat]
            for slot, seat in zip(self.playing, seats, strict=True)
        }

    def reset(
        self, seed: int | None = None, options: dict | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if seed is not None:
            self.game.rng = np.random.default_rng(seed)
        self.game.start(self._draw)
        self.agents = list(self.playing)
        return self._observe(), {slot: {} for slot in self.agents}

    def step(self, actions: Mapping[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        game = self.game
        seats = dict(zip(self.playing, game.plan.learners, strict=True))
        chosen = {seats[slot]: int(action) for slot, action in actions.items()}
        rewards, terminated, _, finished = game.step(chosen)
        scaled = {
            slot: game.reward(seat, float(rewards[seat]), self.reward_welfare, self.reward_scale)
            for slot, seat in seats.items()
        }
        ends = {slot: finished and bool(terminated[seat]) for slot, seat in seats.items()}
        cuts = {slot: finished and not ends[slot] for slot in seats}
        infos: dict[str, dict[str, float]] = {slot: {} for slot in seats}
        for slot, seat in seats.items():
            game.utility[seat] += float(rewards[seat])
            if finished:
                infos[slot] = {"utility": game.utility[seat]}
        if finished:
            self.agents = []
        return self._observe(), scaled, ends, cuts, infos


class MarketMultiAgentEnv(ParallelPettingZooEnv):
    """RLlib's PettingZoo wrapper, with the spaces of every slot (not only the first episode's)
    and the slots of the current episode as `agents`."""

    def __init__(self, env: LearnerSeats) -> None:
        super().__init__(env)
        self.possible_agents = list(env.possible_agents)
        self.observation_spaces = {a: env.observation_space(a) for a in self.possible_agents}
        self.action_spaces = {a: env.action_space(a) for a in self.possible_agents}
        self.observation_space = gymnasium.spaces.Dict(self.observation_spaces)
        self.action_space = gymnasium.spaces.Dict(self.action_spaces)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observations, infos = super().reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return observations, infos


class MarketTrainingEnv(MarketMultiAgentEnv):
    """What RLlib builds each environment with: the next game of this process (module
    docstring). `env_config` holds the training config's fields (`rllib_backend.env_config`) and
    RLlib's worker index. RLlib is given this class, not a name registered with Tune: Tune's
    registry keys names by the first Ray job of the process, so a second training in the same
    process (a new Ray session) would not find a registered name."""

    def __init__(self, env_config: Mapping[str, Any]) -> None:
        games = training_sources(
            env_config["scenarios"], env_config["copies"], env_config["generated"]
        )
        index = next(_CREATED)
        worker = int(getattr(env_config, "worker_index", 0))
        seats = LearnerSeats(
            games[index % len(games)],
            env_config["mechanisms"],
            env_config["mix"],
            np.random.default_rng([env_config["seed"], worker, index]),
            env_config["max_epochs"],
            env_config["reward_shaping"],
            env_config["reward_scale"],
            env_config["slots"],
            process_pool(env_config["pool_size"]),
            env_config["reward_welfare"],
        )
        super().__init__(seats)
