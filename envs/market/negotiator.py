"""The one interface every negotiator implements, scripted or learned.

A negotiator maps what an agent sees to one action of the shared discrete action space
(`envs.market.encoding`). It gets the encoded observation and legal-action mask (all a learned
policy uses) and the decoded `AgentView` (what a scripted strategy reasons about), so scripted
and learned negotiators are interchangeable everywhere: in the environment, in evaluation, and
inside a cluster.

A negotiator whose `act` depends on its arguments alone says so with a class attribute
`deterministic = True`: in a cluster it then answers the rest of an auction round before it is
asked (`deploy/answers_ahead.py`), which a seeded random negotiator must not (its draws would
differ from the simulator's).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from gpuparley.envs.market.encoding import AgentView


@runtime_checkable
class Negotiator(Protocol):
    name: str

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView) -> int:
        """One legal action index (mask[action] == 1)."""

    def reset(self, seed: int | None = None) -> None:
        """Forget any episode state; reseed any randomness."""


def first_legal(mask: np.ndarray, preferred: list[int]) -> int:
    """The first preferred action that is legal, else pass/reject (always legal)."""
    for action in preferred:
        if 0 <= action < len(mask) and mask[action]:
            return action
    return int(np.flatnonzero(mask)[0])
