"""Scripted negotiators by name (`scripted:<name>` in a policy spec, `policy.specs`)."""

from __future__ import annotations

from collections.abc import Callable

from gpuparley.agents.negotiators.simple import RandomNegotiator, Truthful
from gpuparley.agents.negotiators.strategies import (
    Aggressive,
    BudgetPacing,
    DeadlineAware,
    TitForTat,
    boulware,
    conceder,
)
from gpuparley.envs.market.negotiator import Negotiator

NEGOTIATORS: dict[str, Callable[[int], Negotiator]] = {
    "truthful": lambda seed: Truthful(),
    "aggressive": lambda seed: Aggressive(),
    "budget-pacing": lambda seed: BudgetPacing(),
    "boulware": lambda seed: boulware(),
    "conceder": lambda seed: conceder(),
    "tit-for-tat": lambda seed: TitForTat(),
    "deadline-aware": lambda seed: DeadlineAware(),
    "random": RandomNegotiator,
}

SCRIPTED = (
    "truthful",
    "aggressive",
    "budget-pacing",
    "boulware",
    "conceder",
    "tit-for-tat",
    "deadline-aware",
)


def make_negotiator(name: str, seed: int = 0) -> Negotiator:
    """A fresh negotiator by name; an unknown name lists the valid ones."""
    try:
        factory = NEGOTIATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown negotiator {name!r}; choose one of: {', '.join(NEGOTIATORS)}"
        ) from None
    return factory(seed)
