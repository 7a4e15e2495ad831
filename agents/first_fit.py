"""First-fit: the simplest central placement, the floor every other policy must beat.

Jobs are taken in arrival order; each goes whole (gangs all-or-nothing) onto the lowest-index
nodes where it fits. A job that does not fit is skipped for now and retried on the next pass,
so small jobs may overtake a large one (no reservation, no starvation protection). The loop is
`schedulers.base.GangPlacer`, shared with the FGD paper's placement policies.
"""

from __future__ import annotations

from gpuparley.agents.schedulers.base import GangPlacer
from gpuparley.envs.planner import first_fit_choice


class FirstFit(GangPlacer):
    """Arrival-order, lowest-index-first, gang-atomic placement of whole jobs."""

    name = "first-fit"

    def __init__(self) -> None:
        super().__init__(first_fit_choice)
