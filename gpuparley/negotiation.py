"""One market run: the scenario's agents negotiate through `gpu_market_v0` until the episode ends.

This is the market's counterpart of `runner.simulate`: same scenario, same seed, same workload
and simulator, the allocation decided by negotiators instead of a central scheduler. Evaluation,
training's periodic evaluation and the demo all run markets through here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpuparley.agents.negotiators.base import Negotiator
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
) -> MarketRun:
    """Play one episode; `negotiators` is one policy for every seat or one per agent."""
    env = GPUMarketEnv(scenario=scenario, mechanism=mechanism, max_epochs=max_epochs)
    agents = env.possible_agents
    seats = (
        {agent: negotiators[agent] for agent in agents}
        if isinstance(negotiators, Mapping)
        else dict.fromkeys(agents, negotiators)
    )
    observations, _ = env.reset(seed=seed)
    for index, negotiator in enumerate({id(n): n for n in seats.values()}.values()):
        negotiator.reset(seed + index)
    infos: dict[str, dict[str, Any]] = {}
    while env.agents:
        actions = {
            agent: seats[agent].act(obs["observation"], obs["action_mask"], env.views[agent])
            for agent, obs in observations.items()
        }
        observations, _rewards, _terms, _truncs, infos = env.step(actions)
        if on_progress is not None and env.market.epoch % 20 == 0:
            on_progress(min(1.0, env.market.epoch / env.max_epochs))
    metrics = next(iter(infos.values()))["summary"]
    metrics["mechanism"] = env.mechanism_name
    return MarketRun(env, metrics)
