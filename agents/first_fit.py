"""First-fit: the simplest central placement, the floor every other policy must beat.

Jobs are taken in arrival order; each goes whole (gangs all-or-nothing) onto the lowest-index
nodes where it fits. A job that does not fit is skipped for now and retried on the next pass,
so small jobs may overtake a large one (no reservation, no starvation protection). Within one
pass, once a demand shape has failed, later jobs of the same shape are skipped without search:
nothing has been freed in between, so they would fail too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuparley.agents.placement import first_fit_choice, plan_job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator


class FirstFit:
    """Arrival-order, lowest-index-first, gang-atomic placement of whole jobs."""

    name = "first-fit"

    def schedule(self, sim: Simulator) -> None:
        failed: set[tuple] = set()
        for job in sim.pending():
            shape = (job.pod, job.pods, job.allowed_models)
            if shape in failed:
                continue
            plan = plan_job(sim.state, job, first_fit_choice)
            if plan is None:
                failed.add(shape)
            else:
                sim.bind(job, plan)
