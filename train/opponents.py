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
seat (drawn from the remaining shares), is a seeded draw per episode. A game whose agent count
changes between episodes (generated scenarios) fixes the learner's seats instead; its other
seats are drawn from the whole mix, `self` there meaning a frozen copy of the current policy
(`SnapshotPool.current`, refreshed at every rollout).
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
    """The last `size` frozen policies; opponents seats sample one uniformly per episode.
    `current` is a frozen copy of the policy being trained, for `self` opponents seats."""

    def __init__(self, size: int) -> None:
        self.policies: deque[NumpyMlp] = deque(maxlen=size)
        self.current: NumpyMlp | None = None

    def add(self, layers: Sequence[Layer]) -> None:
        self.policies.append(NumpyMlp(layers))

    def set_current(self, layers: Sequence[Layer]) -> None:
        self.current = NumpyMlp(layers)

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
    learners: int | None = None,
) -> SeatPlan:
    """One episode's seat assignment (see the module docstring): `learners` fixed seats for the
    learner, the others from the whole mix; or (None) the mix's `self` share of the seats, the
    others from the rest of the mix. A seat with no policy to play yet (no snapshot, no current
    copy) goes to the first other member of the mix, or `FALLBACK`."""
    count = learner_count(mix, len(agents)) if learners is None else min(learners, len(agents))
    chosen = sorted(int(i) for i in rng.choice(len(agents), size=count, replace=False))
    plan_learners = tuple(agents[i] for i in chosen)
    others = {
        name: w for name, w in mix.items() if w > 0 and (name != SELF or learners is not None)
    }
    names, weights = list(others), np.array(list(others.values()), dtype=float)
    specs = [name for name in names if name not in (SNAPSHOTS, SELF)] or [FALLBACK]
    opponents: dict[str, Negotiator] = {}
    for agent in agents:
        if agent in plan_learners:
            continue
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        seed = int(rng.integers(2**31))
        frozen = _frozen_policy(name, pool, rng)
        if frozen is not None:
            opponents[agent] = LearnedNegotiator(frozen, name=name)
            opponents[agent].reset(seed)
        else:
            opponents[agent] = make_opponent(specs[0] if name in (SNAPSHOTS, SELF) else name, seed)
    return SeatPlan(plan_learners, opponents)


def _frozen_policy(
    name: str, pool: SnapshotPool | None, rng: np.random.Generator
) -> NumpyMlp | None:
    """The frozen policy a `snapshots` or `self` seat plays, if there is one yet."""
    if pool is None:
        return None
    if name == SNAPSHOTS and len(pool):
        return pool.sample(rng)
    if name == SELF:
        return pool.current
    return None
