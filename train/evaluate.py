"""Evaluation: how much utility a negotiator earns against scripted opponents.

One seat is played by the negotiator under test (rotating over the seats across episodes), every
other seat by one scripted opponent; utility is the seat's unshaped reward summed over the episode
(realised job value minus net payments, in credits). The same games with a truthful negotiator
in the seat give the baseline the learner should beat. Workload seeds are fixed, so two policies
are compared on identical games.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import load_scenario
from gpuparley.train.opponents import opponent_spec


def evaluate(
    make_player: Callable[[], Negotiator],
    scenarios: Sequence[str | Path],
    mechanisms: Sequence[str],
    opponents: Sequence[str],
    episodes: int = 1,
    max_epochs: int | None = None,
    seed: int = 10_000,
) -> dict[str, Any]:
    """Mean utility of `make_player()`'s seat per scenario/mechanism/opponent, and overall.

    `mean_budget_utility` (utility over the seat's budget per epoch, averaged over all games)
    weighs scenarios of different scale equally; it is what picks the best checkpoint.
    """
    per_game: dict[str, float] = {}
    normalised = []
    for scenario_name in scenarios:
        scenario = load_scenario(scenario_name)
        for mechanism in mechanisms:
            env = GPUMarketEnv(scenario, mechanism=mechanism, max_epochs=max_epochs)
            agents = env.possible_agents
            for opponent in opponents:
                utilities = []
                for episode in range(episodes):
                    seat = agents[episode % len(agents)]
                    players = {
                        agent: make_player()
                        if agent == seat
                        else opponent_spec(opponent).negotiator(seed + index)
                        for index, agent in enumerate(agents)
                    }
                    utility = play_episode(env, players, seed + episode).utility[seat]
                    budget = max(env.views[seat].budget_per_epoch, 1e-9)
                    utilities.append(utility)
                    normalised.append(utility / budget)
                per_game[f"{scenario.name}/{mechanism}/{opponent}"] = float(np.mean(utilities))
    return {
        "mean_utility": float(np.mean(list(per_game.values()))),
        "mean_budget_utility": float(np.mean(normalised)),
        "per_game": per_game,
    }
