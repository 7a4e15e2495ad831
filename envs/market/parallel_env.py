"""The PettingZoo face of the market: a thin RL wrapper over `Market` and its simulator.

The environment steps at decision points. Each `step` is one negotiation sub-step: every agent
takes one action (bid / propose on a job, answer an offer, or pass; an agent with nothing to
decide has only `pass` legal). When every agent has passed with nothing left to answer, or the
sub-step cap is reached, the round closes: the market clears and the simulator advances to the
next clearing (see `envs.market.core`). Rounds in which no agent has anything to decide (no new
job, no outbid or renewable bid, no offer to answer) are played out inside the same `step`, so
simulated time moves on between decisions and the policy is asked only when it has a choice; each
observation carries the simulated time since its agent last had one.

Rewards are realised job value minus net payments (payments made minus payments received),
credited when they happen. Optional shaping (off by default) adds `shaping x (GPU-hours newly
allocated to the agent's jobs / cluster GPUs)` each round, a dense signal for early training;
evaluation always reports unshaped utility.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from gpuparley.envs.market.core import Market
from gpuparley.envs.market.encoding import (
    ACTION_COUNT,
    OBSERVATION_BOUND,
    OBSERVATION_SIZE,
    AgentView,
    decode,
    encode_many,
)
from gpuparley.envs.market.episode import default_max_epochs
from gpuparley.envs.market.render import render_ansi, render_rgb
from gpuparley.envs.market.views import agent_views, any_decision
from gpuparley.envs.metrics import summarise
from gpuparley.envs.scenario import Scenario, load_scenario


def has_decision(view: AgentView) -> bool:
    """Whether the agent has something to decide: a job to bid on or an offer to answer."""
    return bool(view.slots) or view.inbox is not None


def observation_space() -> spaces.Dict:
    return spaces.Dict(
        {
            "observation": spaces.Box(
                -OBSERVATION_BOUND, OBSERVATION_BOUND, (OBSERVATION_SIZE,), np.float32
            ),
            "action_mask": spaces.Box(0, 1, (ACTION_COUNT,), np.int8),
        }
    )


class GPUMarketEnv(ParallelEnv):
    """Agents (tenants) negotiate for GPU capacity on a simulated cluster."""

    metadata: ClassVar[dict[str, Any]] = {
        "name": "gpu_market_v1",
        "render_modes": ["ansi", "rgb_array"],
        "is_parallelizable": True,
    }

    def __init__(
        self,
        scenario: str | Path | Scenario = "tiny",
        mechanism: str | None = None,
        seed: int | None = None,
        overrides: dict[str, Any] | None = None,
        render_mode: str | None = None,
        max_epochs: int | None = None,
        reward_shaping: float = 0.0,
        clearing: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        if isinstance(scenario, Scenario):
            if overrides:
                raise ValueError("overrides apply to a scenario name or path, not a loaded one")
            self.scenario = scenario
        else:
            self.scenario = load_scenario(scenario, overrides)
        self.mechanism_name = mechanism or self.scenario.market.mechanism
        if self.mechanism_name not in ("auction", "bargain"):
            raise ValueError(
                f"mechanism must be 'auction' or 'bargain', got {self.mechanism_name!r}"
            )
        self.clearing = clearing
        self.render_mode = render_mode
        self.reward_shaping = reward_shaping
        self._max_epochs = max_epochs
        self._default_seed = self.scenario.seed if seed is None else seed
        self.possible_agents = [agent.name for agent in self.scenario.agents]
        self._observation_space = observation_space()
        self._action_space: spaces.Discrete = spaces.Discrete(ACTION_COUNT)
        self.agents: list[str] = []
        self.market: Market | None = None
        self.views: dict[str, AgentView] = {}
        self._masks: dict[str, np.ndarray] = {}

    def observation_space(self, agent: str) -> spaces.Dict:
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._action_space

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, Any]]]:
        if seed is not None:
            self._default_seed = seed
        self.market = Market(self.scenario, self._default_seed, self.mechanism_name, self.clearing)
        self.max_epochs = self._max_epochs or default_max_epochs(self.scenario, self.market)
        self.agents = list(self.possible_agents)
        self._allocated_seen = dict.fromkeys(self.agents, 0.0)
        self._last_decision = dict.fromkeys(self.agents, 0.0)
        market = self._running()
        while not any_decision(market) and not self._over():
            self._play_out_round()
        return self._observe(self._views()), self._infos()

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        market = self.market
        if market is None or not self.agents:
            raise RuntimeError("call reset() before step(), and again after the episode ends")
        views, masks = self.views, self._masks
        for agent in self.agents:
            market.decide(agent, decode(actions.get(agent, 0), views[agent], masks.get(agent)))
        return self.advance()

    def advance(self) -> tuple[dict, dict, dict, dict, dict]:
        """Close the sub-step in which every agent has acted -- by `step`'s actions, or by
        messages `Market.receive` took and passes added to `market.passed` (how the in-cluster
        market controller drives this environment) -- and play on to the next decision; the
        step's observations, rewards, terminations, truncations and infos."""
        market = self._running()
        round_ended = market.end_substep()
        while not any_decision(market) and not self._over():
            self._play_out_round()
            round_ended = True
        views = self._views()
        rewards = market.collect_rewards()
        if round_ended and self.reward_shaping:
            for agent, bonus in self._shaping().items():
                rewards[agent] += bonus
        terminated = market.finished
        truncated = not terminated and market.epoch >= self.max_epochs
        observations = self._observe(views)
        infos = self._infos()
        if terminated or truncated:
            summary = self.episode_summary()
            for agent in self.agents:
                infos[agent]["summary"] = summary
        terminations = dict.fromkeys(self.agents, terminated)
        truncations = dict.fromkeys(self.agents, truncated)
        rewards = {agent: float(rewards[agent]) for agent in self.agents}
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def _running(self) -> Market:
        """The market of the episode under way (there is none before `reset`)."""
        if self.market is None:
            raise RuntimeError("call reset() first")
        return self.market

    def _over(self) -> bool:
        market = self._running()
        return market.finished or market.epoch >= self.max_epochs

    def _play_out_round(self) -> None:
        """Close the round when nobody has anything (left) to decide."""
        market = self._running()
        market.passed.update(self.agents)
        while not market.end_substep():
            market.passed.update(self.agents)

    def _views(self) -> dict[str, AgentView]:
        """Every agent's view now, with the time since its last decision (which it updates)."""
        market = self._running()
        now = market.sim.now
        views = agent_views(market, self._last_decision)
        for agent, view in views.items():
            if has_decision(view):
                self._last_decision[agent] = now
        return views

    def _observe(self, views: dict[str, AgentView]) -> dict[str, dict[str, np.ndarray]]:
        self.views = views
        vectors, masks = encode_many([views[agent] for agent in self.agents])
        observations = {}
        self._masks = {}
        for agent, vector, mask in zip(self.agents, vectors, masks, strict=True):
            observations[agent] = {"observation": vector, "action_mask": mask}
            self._masks[agent] = mask
        return observations

    def _infos(self) -> dict[str, dict[str, Any]]:
        market = self._running()
        ledger = market.ledger
        epoch, substep, now = market.epoch, market.substep, market.sim.now
        return {
            agent: {
                "epoch": epoch,
                "substep": substep,
                "time": now,
                "balance": ledger.balances[agent],
                "value_realised": market.utility[agent],
                "paid": ledger.paid[agent],
                "received": ledger.received[agent],
            }
            for agent in self.agents
        }

    def _shaping(self) -> dict[str, float]:
        market = self._running()
        allocated = dict.fromkeys(self.agents, 0.0)
        for record in market.sim.records.values():
            if record.job.owner in allocated:
                allocated[record.job.owner] += record.gpu_seconds
        bonus = {}
        scale = self.reward_shaping / max(market.sim.state.gpu_count, 1) / 3600
        for agent in self.agents:
            bonus[agent] = scale * (allocated[agent] - self._allocated_seen[agent])
            self._allocated_seen[agent] = allocated[agent]
        return bonus

    def episode_summary(self) -> dict[str, Any]:
        """All foundation metrics of the run plus the market's own."""
        market = self._running()
        summary = summarise(market.sim, market.agents, market.deadlocks)
        summary.update(market.summary_extras())
        summary["scenario"] = self.scenario.name
        summary["seed"] = self._default_seed
        return summary

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None or self.market is None:
            return None
        if self.render_mode == "ansi":
            return render_ansi(self.market)
        return render_rgb(self.market)

    def close(self) -> None:
        self.market = None
