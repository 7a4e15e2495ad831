"""Who sits in the seats the learner does not play: negotiators named by policy specs, and
frozen snapshots of the learner.

The opponent mix names its members with the project's policy specs (`policy.specs`:
`scripted:<name>`, `learned:<checkpoint>`), plus two training-only entries: `self`, the
learner's share of the seats, and `snapshots`, frozen numpy copies of the learner's policy taken
during training (self-play against its own past), played through the same `LearnedNegotiator`
as a deployed policy. A negotiator written after this module joins the pool by joining the
scripted registry (`agents.negotiators.registry.NEGOTIATORS`).

Seat assignment per episode (`draw_seats`): the `self` share of the mix fixes how many seats of a
game the learner plays (round(share x seats), at least one; a fixed count per game so the
vectorised environment has a fixed width); which seats those are, and who sits in each other
seat (drawn from the remaining shares), is a seeded draw per episode.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.policy.learned import LearnedNegotiator
from gpuparley.policy.runtime import Layer, NumpyMlp
from gpuparley.policy.specs import PolicySpec, parse_negotiator
from gpuparley.train.config import SELF, SNAPSHOTS

FALLBACK = "scripted:truthful"
"""Who plays a `snapshots` seat before the first snapshot, when the mix has no other member."""


@functools.cache
def opponent_spec(spec: str) -> PolicySpec:
    """A mix member's parsed spec (parsed once per process)."""
    return parse_negotiator(spec)


def make_opponent(spec: str, seed: int) -> Negotiator:
    """A fresh negotiator for a mix member's spec, reset with `seed`."""
    negotiator = opponent_spec(spec).negotiator(seed)
    negotiator.reset(seed)
    return negotiator


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
) -> SeatPlan:
    """One episode's seat assignment (see the module docstring). Without snapshots in the pool,
    a snapshots seat is played by the first other member of the mix, or `FALLBACK`."""
    count = learner_count(mix, len(agents))
    chosen = sorted(int(i) for i in rng.choice(len(agents), size=count, replace=False))
    learners = tuple(agents[i] for i in chosen)
    others = {name: w for name, w in mix.items() if name != SELF and w > 0}
    names, weights = list(others), np.array(list(others.values()), dtype=float)
    specs = [name for name in names if name != SNAPSHOTS] or [FALLBACK]
    opponents: dict[str, Negotiator] = {}
    for agent in agents:
        if agent in learners:
            continue
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        seed = int(rng.integers(2**31))
        if name == SNAPSHOTS and pool is not None and len(pool):
            opponents[agent] = LearnedNegotiator(pool.sample(rng), name="snapshot")
            opponents[agent].reset(seed)
        else:
            opponents[agent] = make_opponent(specs[0] if name == SNAPSHOTS else name, seed)
    return SeatPlan(learners, opponents)
