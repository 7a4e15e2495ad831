"""Who sits in the seats the learner does not play: scripted negotiators and frozen snapshots.

Scripted negotiators are looked up by name in a registry of factories (`name -> seed ->
Negotiator`), so any `Negotiator` (including ones written after this module) can join the pool:
pass `extra` factories, or add it to `agents.negotiators.registry`, which is picked up when
present. Snapshots are frozen numpy copies of the learner's policy taken during training
(self-play against its own past), played through the same `LearnedNegotiator` as a deployed
policy.

Seat assignment per episode (`draw_seats`): the `self` share of the mix fixes how many seats of a
game the learner plays (round(share x seats), at least one; a fixed count per game so the
vectorised environment has a fixed width); which seats those are, and who sits in each other
seat (drawn from the remaining shares), is a seeded draw per episode.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpuparley.agents.negotiators.learned import LearnedNegotiator
from gpuparley.agents.negotiators.simple import RandomNegotiator, Truthful
from gpuparley.deploy.runtime import Layer, NumpyMlp
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.train.config import SELF, SNAPSHOTS

NegotiatorFactory = Callable[[int], Negotiator]


def scripted_factories(
    extra: Mapping[str, NegotiatorFactory] | None = None,
) -> dict[str, NegotiatorFactory]:
    """Scripted negotiators by name: simple.py's, the shared registry's when present, `extra`."""
    factories: dict[str, NegotiatorFactory] = {
        "truthful": lambda seed: Truthful(),
        "random": RandomNegotiator,
    }
    try:
        from gpuparley.agents.negotiators.registry import NEGOTIATORS
    except ImportError:  # the shared registry is optional
        NEGOTIATORS = {}
    factories.update(NEGOTIATORS)
    factories.update(extra or {})
    return factories


def scripted_names() -> list[str]:
    return sorted(scripted_factories())


def make_scripted(
    name: str, seed: int, factories: Mapping[str, NegotiatorFactory] | None = None
) -> Negotiator:
    registry = factories if factories is not None else scripted_factories()
    try:
        factory = registry[name]
    except KeyError:
        raise ValueError(
            f"unknown negotiator {name!r}; choose one of: {', '.join(sorted(registry))}"
        ) from None
    return factory(seed)


class SnapshotPool:
    """The last `size` frozen policies; opponents seats sample one uniformly per episode."""

    def __init__(self, size: int) -> None:
        self.policies: deque[NumpyMlp] = deque(maxlen=size)

    def add(self, layers: Sequence[Layer]) -> None:
        self.policies.append(NumpyMlp(layers))

    def __len__(self) -> int:
        return len(self.policies)

    def sample(self, rng: np.random.Generator) -> NumpyMlp:
        return self.policies[int(rng.integers(len(self.policies)))]


def learner_count(mix: Mapping[str, float], seats: int) -> int:
    """Seats the learner plays in a game of `seats` agents (fixed per game)."""
    total = sum(mix.values())
    if total <= 0 or all(weight <= 0 for name, weight in mix.items() if name != SELF):
        return seats
    return int(min(seats, max(1, round(mix.get(SELF, 0.0) / total * seats))))


@dataclass(frozen=True, slots=True)
class SeatPlan:
    learners: tuple[str, ...]  # agents the learner plays, in a fixed slot order
    opponents: dict[str, Negotiator]


def draw_seats(
    agents: Sequence[str],
    mix: Mapping[str, float],
    rng: np.random.Generator,
    pool: SnapshotPool | None = None,
    factories: Mapping[str, NegotiatorFactory] | None = None,
) -> SeatPlan:
    """One episode's seat assignment (see the module docstring). Without snapshots in the pool,
    a snapshots seat is played by the first scripted opponent of the mix, or truthful."""
    count = learner_count(mix, len(agents))
    chosen = sorted(int(i) for i in rng.choice(len(agents), size=count, replace=False))
    learners = tuple(agents[i] for i in chosen)
    others = {name: w for name, w in mix.items() if name != SELF and w > 0}
    names, weights = list(others), np.array(list(others.values()), dtype=float)
    scripted = [name for name in names if name != SNAPSHOTS] or ["truthful"]
    opponents: dict[str, Negotiator] = {}
    for agent in agents:
        if agent in learners:
            continue
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        seed = int(rng.integers(2**31))
        if name == SNAPSHOTS and pool is not None and len(pool):
            opponents[agent] = LearnedNegotiator(pool.sample(rng), name="snapshot")
        else:
            scripted_name = scripted[0] if name == SNAPSHOTS else name
            opponents[agent] = make_scripted(scripted_name, seed, factories)
        opponents[agent].reset(seed)
    return SeatPlan(learners, opponents)
