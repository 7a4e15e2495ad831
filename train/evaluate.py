"""Evaluation during training: a negotiator's utility against scripted opponents, and the
welfare of a market where it plays every seat.

`evaluate`: one seat is played by the negotiator under test (rotating over the seats across
episodes), every other seat by one scripted opponent; utility is the seat's unshaped reward summed
over the episode (realised job value minus net payments, in credits). The same games with a
truthful negotiator in the seat give the baseline the learner should beat. Workload seeds are
fixed, so two policies are compared on identical games.

`welfare_gap`: the negotiator in every seat of each scenario, against truthful negotiators in
every seat of the same games (what `gpuparley eval --experiment generalisation` reports, here on
validation scenarios): welfare (realised value) relative to the truthful market's. Its
`capped_welfare_gap` counts a gain above `gain_cap` as `gain_cap` and every loss in full: the
mean alone let one validation scenario where a checkpoint happened to double the welfare pick
that checkpoint while it lost slightly on many others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario, load_scenario
from gpuparley.train.opponents import opponent_spec


def evaluate(
    make_player: Callable[[], Negotiator],
    scenarios: Sequence[str | Path | Scenario],
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
        scenario = (
            scenario_name if isinstance(scenario_name, Scenario) else load_scenario(scenario_name)
        )
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


Baselines = dict[tuple[str, str], float]
"""Welfare of the all-truthful market per (scenario name, mechanism): deterministic, so kept."""


def welfare_gap(
    make_player: Callable[[], Negotiator],
    scenarios: Sequence[Scenario],
    mechanisms: Sequence[str],
    max_epochs: int | None = None,
    baselines: Baselines | None = None,
    gain_cap: float = float("inf"),
) -> dict[str, Any]:
    """Mean over scenarios x mechanisms of (welfare with the player in every seat - the
    all-truthful market's) / the latter's, each on the scenario's own workload seed; and the
    same mean with every gain capped at `gain_cap` (losses uncapped).

    `baselines` keeps the truthful markets' welfare between calls (filled as needed)."""
    baselines = {} if baselines is None else baselines
    gaps: dict[str, float] = {}
    for scenario in scenarios:
        for mechanism in mechanisms:
            env = GPUMarketEnv(scenario, mechanism=mechanism, max_epochs=max_epochs)
            key = (scenario.name, mechanism)
            if key not in baselines:
                baselines[key] = play_episode(env, Truthful(), scenario.seed).summary["welfare"]
            welfare = play_episode(env, make_player(), scenario.seed).summary["welfare"]
            base = baselines[key]
            gaps[f"{scenario.name}/{mechanism}"] = (welfare - base) / max(abs(base), 1e-9)
    values = list(gaps.values())
    return {
        "mean_welfare_gap": float(np.mean(values)),
        "capped_welfare_gap": float(np.mean(np.minimum(values, gain_cap))),
        "welfare_at_least_truthful": float(np.mean([gap >= -1e-9 for gap in values])),
        "per_scenario": gaps,
    }
