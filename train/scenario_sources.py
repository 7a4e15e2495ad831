"""Where a training game's scenario comes from: one fixed scenario, or a new generated one each
episode.

A game of the vectorised environment (`train.vec_env`) asks its source for the scenario of each
episode and for how many seats the learner plays. A fixed scenario keeps its agents, so the
learner's share of the seats follows the opponent mix (`opponents.learner_count`). Generated
scenarios (`envs.scenario_generator`) have 2-16 agents, so the learner plays a fixed number of
seats in each (`learner_seats`) and the vectorised environment keeps its width.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuparley.envs.generator_schema import ScenarioRanges
from gpuparley.envs.scenario import Scenario, load_scenario
from gpuparley.envs.scenario_generator import sample_scenario
from gpuparley.train.opponents import learner_count

CACHE_SIZE = 256
"""Generated scenarios kept (drawing one costs ~10 ms; an episode of one, 0.1-10 s)."""


class FixedScenario:
    """The same scenario every episode."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def draw(self, rng: np.random.Generator) -> Scenario:
        return self.scenario

    def learner_seats(self, mix: Mapping[str, float]) -> int:
        return learner_count(mix, len(self.scenario.agents))


@dataclass(frozen=True)
class GeneratedGames:
    """What a `generator` section asks for: ranges, training seeds, games, learner seats."""

    ranges: ScenarioRanges
    seeds: range
    games: int
    learner_seats: int


class GeneratedScenarios:
    """A generated scenario per episode, its generator seed drawn uniformly from `seeds`."""

    def __init__(self, spec: GeneratedGames) -> None:
        self.spec = spec
        self._cache: OrderedDict[int, Scenario] = OrderedDict()

    def draw(self, rng: np.random.Generator) -> Scenario:
        seeds = self.spec.seeds
        seed = seeds[int(rng.integers(len(seeds)))]
        scenario = self._cache.pop(seed, None) or sample_scenario(seed, self.spec.ranges)
        self._cache[seed] = scenario
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return scenario

    def learner_seats(self, mix: Mapping[str, float]) -> int:
        return self.spec.learner_seats


ScenarioSource = FixedScenario | GeneratedScenarios


def training_sources(
    scenarios: Sequence[str | Path], copies: int, generated: GeneratedGames | None
) -> list[ScenarioSource]:
    """The source of every training game, in order: `copies` games per bundled scenario, then
    `generated.games` games of generated scenarios (sharing one cache)."""
    sources: list[ScenarioSource] = [
        FixedScenario(load_scenario(name)) for name in scenarios for _ in range(copies)
    ]
    if generated is not None:
        sources += [GeneratedScenarios(generated)] * generated.games
    if not sources:
        raise ValueError("no scenarios and no generated games to train on")
    return sources
