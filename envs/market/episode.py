"""One market episode: how long it lasts, who plays each seat, how players are seeded.

Every "play a whole episode with negotiators in the seats" in the project goes through
`play_episode`: evaluation's market runs, negotiator duels, training's periodic evaluation and
the simulated lease trace the cluster runs are compared with. So a stochastic negotiator scores
the same in each for the same seed.

**Seeding rule.** Before an episode with seed `s`, each distinct negotiator object is reset once,
with `s + i`, where `i` is the index (in `env.possible_agents` order) of the first seat it plays.
One negotiator in every seat is reset with `s`; one per seat, seat `i`'s with `s + i`. The
environment is reset with `s` (it draws the workload and the market's randomness from it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuparley.envs.market.negotiator import Negotiator

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market
    from gpuparley.envs.market.parallel_env import GPUMarketEnv
    from gpuparley.envs.scenario import Scenario

Watcher = Callable[["GPUMarketEnv"], None]
"""Called after the reset and after every step (to sample progress or the market's state)."""


def default_max_epochs(scenario: Scenario, market: Market) -> int:
    """Enough epochs for every job to arrive and run a few times over, or the horizon."""
    horizon = scenario.settings.horizon
    if horizon is None:
        jobs = market.sim.jobs.values()
        last = max((j.arrival for j in jobs), default=0.0)
        longest = max((j.duration for j in jobs), default=0.0)
        horizon = last + 3 * longest + market.term_seconds()
    return max(1, math.ceil(horizon / market.epoch_seconds))


def seat_players(
    agents: list[str], negotiators: Mapping[str, Negotiator] | Negotiator
) -> dict[str, Negotiator]:
    """Who plays each seat: one negotiator for every seat, or one per agent (all seats named)."""
    if not isinstance(negotiators, Mapping):
        return dict.fromkeys(agents, negotiators)
    missing = [agent for agent in agents if agent not in negotiators]
    if missing:
        raise ValueError(f"no negotiator for seats {missing}")
    return {agent: negotiators[agent] for agent in agents}


def reset_players(agents: list[str], players: Mapping[str, Negotiator], seed: int) -> None:
    """Reset each distinct negotiator once, with `seed` + its first seat's index (module doc)."""
    first_seat: dict[int, tuple[int, Negotiator]] = {}
    for index, agent in enumerate(agents):
        if agent in players:
            first_seat.setdefault(id(players[agent]), (index, players[agent]))
    for index, negotiator in first_seat.values():
        negotiator.reset(seed + index)


@dataclass
class Episode:
    """What an episode left: each seat's utility (the unshaped rewards summed, in credits), the
    final infos (`summary` holds the episode's metrics) and the number of steps."""

    utility: dict[str, float]
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: int = 0

    @property
    def summary(self) -> dict[str, Any]:
        return dict(next(iter(self.infos.values()))["summary"])


def play_episode(
    env: GPUMarketEnv,
    negotiators: Mapping[str, Negotiator] | Negotiator,
    seed: int,
    watch: Watcher | None = None,
) -> Episode:
    """Play one episode to its end with `negotiators` in the seats (seeded by the module rule)."""
    agents = list(env.possible_agents)
    players = seat_players(agents, negotiators)
    reset_players(agents, players, seed)
    observations, infos = env.reset(seed=seed)
    if watch is not None:
        watch(env)
    episode = Episode(dict.fromkeys(agents, 0.0), infos)
    while env.agents:
        actions = {
            agent: players[agent].act(obs["observation"], obs["action_mask"], env.views[agent])
            for agent, obs in observations.items()
        }
        observations, rewards, _terms, _truncs, episode.infos = env.step(actions)
        episode.steps += 1
        for agent, reward in rewards.items():
            episode.utility[agent] += reward
        if watch is not None:
            watch(env)
    return episode
