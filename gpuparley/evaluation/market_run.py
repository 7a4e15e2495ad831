"""One market run: the scenario's agents negotiate through `gpu_market_v1` until the episode ends.

This is the market's counterpart of `runner.simulate`: same scenario, same seed, same workload
and simulator, the allocation decided by negotiators instead of a central scheduler. Evaluation,
training's periodic evaluation and the demo all run markets through here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario


@dataclass(frozen=True)
class MarketRun:
    """A finished market episode: the environment (market, simulator) and its summary."""

    env: GPUMarketEnv
    metrics: dict[str, Any]


def run_market(
    scenario: Scenario,
    negotiators: Mapping[str, Negotiator] | Negotiator,
    seed: int,
    mechanism: str | None = None,
    on_progress: Callable[[float], None] | None = None,
    max_epochs: int | None = None,
    clearing: str | None = None,
) -> MarketRun:
    """Play one episode; `negotiators` is one policy for every seat or one per agent."""
    env = GPUMarketEnv(
        scenario=scenario, mechanism=mechanism, max_epochs=max_epochs, clearing=clearing
    )

    def watch(env: GPUMarketEnv) -> None:
        if on_progress is not None and env.market is not None and env.market.epoch % 20 == 0:
            on_progress(min(1.0, env.market.epoch / env.max_epochs))

    metrics = play_episode(env, negotiators, seed, watch).summary
    metrics["mechanism"] = env.mechanism_name
    return MarketRun(env, metrics)
