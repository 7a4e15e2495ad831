"""Where the market puts what it allocates: the same placement rules as the central schedulers.

The market decides who gets capacity; the physical placement of a won bundle uses the shared gang
planner (`envs.planner.plan_job`) with one of two node choosers (`market.placement`):

* `fragmentation` (the default): FGD's score plugin exactly as the FGD baseline runs it
  (`envs.fgd_score`, `envs.score_plugins.PluginChooser`), against the target workload of the
  episode's jobs, so that the market packs as well as the best incumbent it is compared with
  and differs from it in who is served, not in how pods are packed;
* `first-fit`: the lowest-index node and GPUs, kept for ablation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from gpuparley.envs.fgd_score import Fgd
from gpuparley.envs.fragmentation import TargetWorkload
from gpuparley.envs.planner import NodeChooser, first_fit_choice, plan_job
from gpuparley.envs.score_plugins import PluginChooser

if TYPE_CHECKING:
    from gpuparley.envs.cluster import Binding, ClusterState
    from gpuparley.envs.jobs import Job
    from gpuparley.envs.market.core import Market

PLACEMENTS = ("fragmentation", "first-fit")


def market_chooser(placement: str, jobs: Iterable[Job]) -> NodeChooser:
    """The node chooser named by `market.placement`, for an episode of `jobs`."""
    if placement == "first-fit":
        return first_fit_choice
    if placement == "fragmentation":
        plugin = Fgd(TargetWorkload.from_jobs(jobs))
        return PluginChooser(plugin.score, plugin.select)
    raise ValueError(f"market.placement must be one of {', '.join(PLACEMENTS)}, not {placement!r}")


def market_plan(state: ClusterState, job: Job, choose: NodeChooser) -> list[Binding] | None:
    """Where the market would place all of `job`'s unplaced pods now, or None.

    The same as `plan_job`, but a job none of whose pods fits any node is refused from the
    state's cached fit check: clearing tries every standing bid, and most lose for lack of room.
    """
    if job.id not in state.holdings and not state.can_fit_somewhere(job):
        return None
    return plan_job(state, job, choose)


def place_cpu_only(market: Market) -> None:
    """CPU-only jobs need no GPU, so no negotiation: place them as they fit."""
    sim = market.sim
    if market.cpu_only.isdisjoint(sim.waiting_ids()):
        return
    for job in sim.pending():
        if job.pod.gpu.kind == "none":
            plan = market.plan(job)
            if plan is not None:
                market.place(job, plan)
