"""One training game: the scenario source, this episode's env, the seats and the learners'
rewards; what both training backends step (`train.vec_env` for stable-baselines3,
`train.rllib_env` for RLlib).

Each episode the game draws its scenario from its source (`train.scenario_sources`), a
mechanism, a workload seed and the seat plan (`opponents.draw_seats`: the learner's seats and who
plays the others); the opponents act inside `step`. A learner seat's reward (`reward`) is its
utility plus `reward_welfare` x the value every agent realised in the step divided by the number
of agents (0 by default: a selfish tenant), in units of the seat's own budget per epoch (times
`reward_scale`), so tenants of different sizes and scenarios train on comparable scales.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario
from gpuparley.train.opponents import SeatPlan
from gpuparley.train.scenario_sources import FixedScenario, ScenarioSource


class Game:
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
        self.welfare_step = 0.0  # value every agent realised in the last step (credits)
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
        realised = self.realised()
        self.observations, rewards, terminated, truncated, _ = self.env.step(actions)
        self.welfare_step = self.realised() - realised
        self.length += 1
        return rewards, terminated, truncated, not self.env.agents

    def reward(self, agent: str, raw: float, welfare: float, scale: float) -> float:
        """A learner seat's training reward for the last step (module docstring): its own
        utility `raw` plus `welfare` x the value every agent realised in the step per agent, in
        the seat's budgets per epoch, times `scale`."""
        shared = welfare * self.welfare_step / len(self.budgets)
        return (raw + shared) / self.budgets[agent] * scale
