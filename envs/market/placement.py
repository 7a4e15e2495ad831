"""Where the market puts what it allocates: the same planner as the central schedulers.

The market decides who gets capacity; the physical placement of a won bundle uses the shared
gang planner (`envs.planner.plan_job`) with lowest-index-first choice, so market and
schedulers differ in who is served, not in how pods are packed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuparley.envs.planner import first_fit_choice, plan_job

if TYPE_CHECKING:
    from gpuparley.envs.cluster import Binding, ClusterState
    from gpuparley.envs.jobs import Job
    from gpuparley.envs.market.core import Market

market_choice = first_fit_choice


def market_plan(state: ClusterState, job: Job) -> list[Binding] | None:
    """Where the market would place all of `job`'s unplaced pods now, or None.

    The same as `plan_job` with `market_choice`, but a job none of whose pods fits any node is
    refused from the state's cached fit check: clearing tries every losing bid each epoch, and
    most lose for lack of room.
    """
    if job.id not in state.holdings and not state.can_fit_somewhere(job):
        return None
    return plan_job(state, job, market_choice)


def place_cpu_only(market: Market) -> None:
    """CPU-only jobs need no GPU, so no negotiation: place them as they fit."""
    sim = market.sim
    for job in sim.pending():
        if job.pod.gpu.kind == "none":
            plan = market_plan(sim.state, job)
            if plan is not None:
                market.place(job, plan)
