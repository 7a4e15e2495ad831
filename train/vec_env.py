"""Parameter sharing: every learner seat of several market games as one sb3 `VecEnv`.

One policy plays all learner seats, so each seat is one sub-environment of the VecEnv: sb3 sees
`num_envs = sum of learner seats over the games`, steps them with one batched forward pass, and
learns from all their experience. The other seats of each game are played by opponents (scripted
negotiators, frozen snapshots, or a frozen copy of the current policy), re-drawn every episode
(`opponents.draw_seats`).

Each game (`train.game`) draws its scenario from a source (`train.scenario_sources`): one bundled
scenario, or a new generated one every episode; either way the learner plays a fixed number of
its seats, so the VecEnv width is fixed. The mechanism and the workload seed are drawn per
episode too. When a
game ends, all its learner slots report `done` together (with `terminal_observation` and
`TimeLimit.truncated`, so PPO bootstraps truncated episodes), and the game restarts with a new
draw.

Observations given to the policy are the encoder's feature vector only; legal-action masks are
served by `action_masks()`, the hook sb3-contrib's MaskablePPO calls. Rewards are
`Game.reward` (own utility plus a welfare share, in budgets per epoch x `reward_scale`);
`infos[i]["episode"]` has the scaled return (`r`, what sb3 logs), the raw utility and the
market's welfare (value realised by every agent) in credits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_BOUND, OBSERVATION_SIZE
from gpuparley.train.game import Game
from gpuparley.train.opponents import SeatPlan, SnapshotPool, draw_seats
from gpuparley.train.scenario_sources import GeneratedGames, training_sources


class MarketVecEnv(VecEnv):
    """Learner seats of `copies` games per bundled scenario and of the `generated` games, as
    one VecEnv for one shared policy."""

    def __init__(
        self,
        scenarios: Sequence[str | Path],
        mechanisms: Sequence[str] = ("auction",),
        copies: int = 1,
        mix: Mapping[str, float] | None = None,
        seed: int = 0,
        max_epochs: int | None = None,
        reward_shaping: float = 0.0,
        reward_scale: float = 1.0,
        pool: SnapshotPool | None = None,
        generated: GeneratedGames | None = None,
        reward_welfare: float = 0.0,
    ) -> None:
        self.mix = dict(mix or {"self": 1.0})
        self.pool = pool
        self.reward_scale = reward_scale
        self.reward_welfare = reward_welfare
        self.render_mode = None
        env_kwargs = {"max_epochs": max_epochs, "reward_shaping": reward_shaping}
        sources = training_sources(scenarios, copies, generated)
        self.games = [
            Game(source, mechanisms, np.random.default_rng(), env_kwargs, seats)
            for source, seats in ((s, s.learner_seats(self.mix)) for s in sources)
        ]
        self.slots: list[tuple[int, int]] = [
            (g, k) for g, game in enumerate(self.games) for k in range(game.learners)
        ]
        self._slots_of: dict[int, list[int]] = {}
        for index, (game, _) in enumerate(self.slots):
            self._slots_of.setdefault(game, []).append(index)
        observation_space = gymnasium.spaces.Box(
            -OBSERVATION_BOUND, OBSERVATION_BOUND, (OBSERVATION_SIZE,), np.float32
        )
        super().__init__(
            len(self.slots), observation_space, gymnasium.spaces.Discrete(ACTION_COUNT)
        )
        self._actions = np.zeros(self.num_envs, dtype=np.int64)
        self._reseed(seed)

    # -- seeding and seats ------------------------------------------------------------------
    def _reseed(self, seed: int) -> None:
        """Each game's draws (scenario, mechanism, workload seed, seats) come from its own seeded
        stream."""
        for index, game in enumerate(self.games):
            game.rng = np.random.default_rng([seed, index])

    def _draw(self, agents: list[str], rng: np.random.Generator, learners: int | None) -> SeatPlan:
        return draw_seats(agents, self.mix, rng, self.pool, learners)

    def seat(self, index: int) -> tuple[int, str]:
        """(game index, agent name) the sub-environment `index` currently plays."""
        game, position = self.slots[index]
        return game, self.games[game].plan.learners[position]

    # -- VecEnv API ----------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self._reseed(int(self._seeds[0]))
        self._reset_seeds()
        self._reset_options()
        for game in self.games:
            game.start(self._draw)
        return self._observe()

    def _observe(self) -> np.ndarray:
        rows = []
        for index in range(self.num_envs):
            game, agent = self.seat(index)
            rows.append(self.games[game].observations[agent]["observation"])
        return np.stack(rows).astype(np.float32)

    def action_masks(self) -> np.ndarray:
        """Legal actions of every learner seat (num_envs x ACTION_COUNT, bool)."""
        rows = []
        for index in range(self.num_envs):
            game, agent = self.seat(index)
            rows.append(self.games[game].observations[agent]["action_mask"])
        return np.stack(rows).astype(bool)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for g, game in enumerate(self.games):
            slots = self._slots_of[g]
            actions = {game.plan.learners[self.slots[i][1]]: int(self._actions[i]) for i in slots}
            step_rewards, terminated, truncated, finished = game.step(actions)
            observations = game.observations
            for i in slots:
                agent = game.plan.learners[self.slots[i][1]]
                raw = step_rewards[agent]
                rewards[i] = game.reward(agent, raw, self.reward_welfare, self.reward_scale)
                game.returns[agent] += float(rewards[i])
                game.utility[agent] += raw
                if finished:
                    dones[i] = True
                    infos[i] = {
                        "terminal_observation": observations[agent]["observation"],
                        "TimeLimit.truncated": bool(truncated[agent] and not terminated[agent]),
                        "episode": {
                            "r": game.returns[agent],
                            "l": game.length,
                            "t": round(time.perf_counter() - game.started, 6),
                            "utility": game.utility[agent],
                            "welfare": game.realised(),
                        },
                    }
            if finished:
                game.start(self._draw)
        return self._observe(), rewards, dones, infos

    def close(self) -> None:
        for game in self.games:
            game.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self, attr_name)  # one adapter serves every seat
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        chosen = list(self._get_indices(indices))
        if method_name == "action_masks":
            return list(self.action_masks()[chosen])
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in chosen]

    def env_is_wrapped(
        self, wrapper_class: type[gymnasium.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
