"""Negotiator duels: a negotiator's own utility in one seat against a mix of scripted opponents.

For a tested negotiator T and each scripted negotiator S: on the same games (scenario,
mechanism, workload seed, seat, opponents), T sits in the seat, then S sits in it. The other
seats are drawn from the mix of all scripted negotiators with a seeded draw, identical for T and
S. The figure is the seat's unshaped utility (realised job value minus net payments, in credits)
per game, averaged over seats and seeds. T beats S when its mean utility is higher on the same
games (a paired comparison: the per-game differences and their 95% confidence interval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpuparley.agents.negotiators.registry import SCRIPTED, make_negotiator
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.evaluation.stats import mean_ci


def duel(
    make_tested: Callable[[], Negotiator],
    scenario: str,
    mechanism: str,
    seeds: Sequence[int],
    max_epochs: int | None = None,
    rivals: Sequence[str] = SCRIPTED,
) -> dict[str, Any]:
    """Per rival: mean utility of the tested negotiator and of the rival in the same seat."""
    env = GPUMarketEnv(scenario=scenario, mechanism=mechanism, max_epochs=max_epochs)
    agents = env.possible_agents
    results: dict[str, Any] = {}
    for rival in rivals:
        tested_utility, rival_utility = [], []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            seat = agents[seed % len(agents)]
            mix = {a: make_negotiator(str(rng.choice(SCRIPTED)), seed) for a in agents}
            for player, sink in (
                (make_tested(), tested_utility),
                (make_negotiator(rival), rival_utility),
            ):
                players = {**mix, seat: player}
                sink.append(play_episode(env, players, seed).utility[seat])
        difference = np.subtract(tested_utility, rival_utility)
        results[rival] = {
            "tested": mean_ci(tested_utility),
            "rival": mean_ci(rival_utility),
            "difference": mean_ci(difference),
        }
    return {"scenario": scenario, "mechanism": mechanism, "seeds": list(seeds), "rivals": results}
