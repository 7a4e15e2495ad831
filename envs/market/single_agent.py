"""A single-agent Gymnasium view of the market: one learner, the other seats played by policies.

The learner's observation and action are exactly those of the PettingZoo environment (same
encoder, same masks); the other agents act through `Negotiator` objects. Used for training a
single policy against fixed opponents and checked with `gymnasium.utils.env_checker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np

from gpuparley.envs.market.episode import reset_players
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv, observation_space


class SingleAgentMarketEnv(gymnasium.Env):
    """`GPUMarketEnv` seen from one seat."""

    def __init__(
        self,
        opponents: Mapping[str, Negotiator] | Negotiator,
        learner: str | None = None,
        scenario: str | Path = "tiny",
        mechanism: str | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.metadata = {"render_modes": ["ansi", "rgb_array"]}
        self.market_env = GPUMarketEnv(
            scenario=scenario, mechanism=mechanism, render_mode=render_mode, **kwargs
        )
        agents = self.market_env.possible_agents
        self.learner = learner or agents[0]
        if self.learner not in agents:
            raise ValueError(f"learner must be one of {agents}, got {self.learner!r}")
        others = [a for a in agents if a != self.learner]
        if isinstance(opponents, Mapping):
            missing = set(others) - set(opponents)
            if missing:
                raise ValueError(f"no policy for seats {sorted(missing)}")
            self.opponents = {a: opponents[a] for a in others}
        else:
            self.opponents = dict.fromkeys(others, opponents)
        self.observation_space = observation_space()
        self.action_space = gymnasium.spaces.Discrete(
            int(self.market_env.action_space(self.learner).n)
        )
        self.render_mode = render_mode
        self._observations: dict[str, dict[str, np.ndarray]] = {}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:  # the seeding rule every episode follows (`episode.reset_players`)
            reset_players(self.market_env.possible_agents, self.opponents, seed)
        else:
            for policy in {id(p): p for p in self.opponents.values()}.values():
                policy.reset(None)
        self._observations, infos = self.market_env.reset(seed=seed, options=options)
        return self._observations[self.learner], infos[self.learner]

    def step(self, action: int) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        env = self.market_env
        actions = {self.learner: int(action)}
        for agent, policy in self.opponents.items():
            obs = self._observations[agent]
            actions[agent] = policy.act(obs["observation"], obs["action_mask"], env.views[agent])
        observations, rewards, terminations, truncations, infos = env.step(actions)
        if self.learner in observations:
            self._observations = observations
        observation = observations.get(self.learner, self._observations[self.learner])
        return (
            observation,
            rewards[self.learner],
            terminations[self.learner],
            truncations[self.learner],
            infos[self.learner],
        )

    def action_masks(self) -> np.ndarray:
        """The learner's legal actions (the hook sb3-contrib's MaskablePPO looks for)."""
        return self._observations[self.learner]["action_mask"].astype(bool)

    def render(self) -> Any:  # gymnasium's `Env.render` leaves the frame type open
        return self.market_env.render()
