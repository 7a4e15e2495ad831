"""Parameter sharing: every learner seat of several market games as one sb3 `VecEnv`.

One policy plays all learner seats, so each seat is one sub-environment of the VecEnv: sb3 sees
`num_envs = sum of learner seats over the games`, steps them with one batched forward pass, and
learns from all their experience. The other seats of each game are played by opponents (scripted
negotiators, frozen snapshots, or a frozen copy of the current policy), re-drawn every episode
(`opponents.draw_seats`).

Each game draws its scenario from a source (`train.scenario_sources`): one bundled scenario, or
a new generated one every episode; either way the learner plays a fixed number of its seats, so
the VecEnv width is fixed. The mechanism and the workload seed are drawn per episode too. When a
game ends, all its learner slots report `done` together (with `terminal_observation` and
`TimeLimit.truncated`, so PPO bootstraps truncated episodes), and the game restarts with a new
draw.

Observations given to the policy are the encoder's feature vector only; legal-action masks are
served by `action_masks()`, the hook sb3-contrib's MaskablePPO calls. Rewards are each seat's
utility, plus `reward_welfare` x the value every agent realised in the step divided by the
number of agents (0 by default: a selfish tenant), in units of the seat's own budget per epoch
(times `reward_scale`), so tenants of different sizes and scenarios train on comparable scales;
`infos[i]["episode"]` has the scaled return (`r`, what sb3 logs), the raw utility and the
market's welfare (value realised by every agent) in credits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from gpuparley.envs.market.encoding import ACTION_COUNT, OBSERVATION_BOUND, OBSERVATION_SIZE
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario, load_scenario
from gpuparley.train.opponents import SeatPlan, SnapshotPool, draw_seats
from gpuparley.train.scenario_sources import (
    FixedScenario,
    GeneratedGames,
    GeneratedScenarios,
    ScenarioSource,
)


class _Game:
    """One game: its scenario source, this episode's env, seats and observations."""

    def __init__(
        self,
        source: ScenarioSource,
        mechanisms: Sequence[str],
        rng: np.random.Generator,
        env_kwargs: Mapping[str, Any],
        learners: int,
    ) -> None:
        self.source = source
        self.mechanisms = list(mechanisms)
        self.env_kwargs = env_kwargs
        self.learners = learners
        self.rng = rng
        self._envs: dict[tuple[int, str], GPUMarketEnv] = {}
        self._current: GPUMarketEnv | None = None
        self.plan = SeatPlan((), {})
        self.observations: dict[str, dict[str, np.ndarray]] = {}
        self.budgets: dict[str, float] = {}
        self.returns: dict[str, float] = {}
        self.utility: dict[str, float] = {}
        self.length = 0
        self.started = time.perf_counter()

    @property
    def env(self) -> GPUMarketEnv:
        """This episode's environment."""
        if self._current is None:
            raise RuntimeError("the game has not started: call reset() first")
        return self._current

    def _env(self, scenario: Scenario, mechanism: str) -> GPUMarketEnv:
        """The environment of a scenario and mechanism (kept for a fixed scenario)."""
        if isinstance(self.source, FixedScenario):
            key = (id(scenario), mechanism)
            if key not in self._envs:
                self._envs[key] = GPUMarketEnv(scenario, mechanism=mechanism, **self.env_kwargs)
            return self._envs[key]
        return GPUMarketEnv(scenario, mechanism=mechanism, **self.env_kwargs)

    def start(self, draw: Callable[[list[str], np.random.Generator, int | None], SeatPlan]) -> None:
        if self._current is not None:
            self._current.close()
        scenario = self.source.draw(self.rng)
        mechanism = self.mechanisms[int(self.rng.integers(len(self.mechanisms)))]
        self._current = self._env(scenario, mechanism)
        seed = int(self.rng.integers(2**31))
        # a fixed scenario's learner seats follow the mix; a generated one's are fixed
        fixed = None if isinstance(self.source, FixedScenario) else self.learners
        self.plan = draw(list(self.env.possible_agents), self.rng, fixed)
        self.observations, _ = self.env.reset(seed=seed)
        self.budgets = {a: max(v.budget_per_epoch, 1e-9) for a, v in self.env.views.items()}
        self.returns = dict.fromkeys(self.plan.learners, 0.0)
        self.utility = dict.fromkeys(self.plan.learners, 0.0)
        self.length = 0
        self.started = time.perf_counter()

    def close(self) -> None:
        if self._current is not None:
            self._current.close()

    def realised(self) -> float:
        """The value every agent has realised so far this episode (credits)."""
        market = self.env.market
        return sum(market.utility.values()) if market is not None else 0.0

    def step(self, learner_actions: dict[str, int]) -> tuple[dict, dict, dict, bool]:
        """One step with the learners' actions and the opponents' own: (rewards, terminated,
        truncated, whether the game is over); the new observations are kept."""
        actions = dict(learner_actions)
        for agent, negotiator in self.plan.opponents.items():
            obs = self.observations[agent]
            actions[agent] = negotiator.act(
                obs["observation"], obs["action_mask"], self.env.views[agent]
            )
        self.observations, rewards, terminated, truncated, _ = self.env.step(actions)
        self.length += 1
        return rewards, terminated, truncated, not self.env.agents


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
        sources: list[ScenarioSource] = [
            FixedScenario(load_scenario(name)) for name in scenarios for _ in range(copies)
        ]
        if generated is not None:
            shared = GeneratedScenarios(generated)  # one cache for every generated game
            sources += [shared] * generated.games
        if not sources:
            raise ValueError("no scenarios and no generated games to train on")
        self.games = [
            _Game(source, mechanisms, np.random.default_rng(), env_kwargs, seats)
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
            realised = game.realised()
            step_rewards, terminated, truncated, finished = game.step(actions)
            shared = self.reward_welfare * (game.realised() - realised) / len(game.budgets)
            observations = game.observations
            for i in slots:
                agent = game.plan.learners[self.slots[i][1]]
                raw = step_rewards[agent]
                rewards[i] = (raw + shared) / game.budgets[agent] * self.reward_scale
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
