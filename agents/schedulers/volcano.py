"""Volcano: the batch scheduler with gangs (PodGroups) and weighted queues.

Modelled:

* PodGroup gangs with `minMember` = every pod: a job is bound whole or not at all, so it is
  never PARTIAL;
* one Queue per tenant with its weight; the proportion plugin's `deserved` = the weight share of
  the cluster's GPUs, capped by the queue's demand (held + waiting), the rest redistributed
  among the queues that still want more (water-filling), recomputed every cycle;
* queue order by allocated / deserved; a queue whose allocation has reached its deserved share
  is `overused` and allocates nothing more this cycle;
* DRF job order inside a queue: higher priority first, then the smaller dominant share (largest
  of the job's CPU, memory and GPU request over the cluster's), then the oldest; the request is
  used because a pending gang holds nothing yet;
* backfill: when a queue's head job does not fit, later (smaller) jobs of that queue may use the
  idle capacity (off: the queue waits for its head);
* reclaim across queues: a job whose queue stays within its deserved share may evict whole jobs
  (the gang plugin vetoes reclaiming part of a gang) from queues above their deserved share,
  most over-served queue first, youngest first, only while the victim's queue is still above
  its deserved share, and only if that makes the job fit.

Left out: `minResources` enqueue gating, `capability` and `guarantee` on queues, the capacity
plugin and hierarchical queues, preemption within a queue by priority, binpack/nodeorder
plugin weights (placement uses MostAllocated bin-packing, lowest-index GPUs), and the
`Inqueue` / `Pending` PodGroup phases. GPU is the only resource in the deserved computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuparley.agents.schedulers.base import SchedulerContext
from gpuparley.agents.schedulers.queues import EPS, FairQueues
from gpuparley.agents.scoring import capacity, most_allocated, scored_chooser, water_fill
from gpuparley.envs.jobs import Job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator


class Volcano(FairQueues):
    """Gang-atomic, proportion-plugin queues with DRF job order, backfill and reclaim."""

    name = "volcano"

    def __init__(
        self, context: SchedulerContext, backfill: bool = True, reclaim: bool = True
    ) -> None:
        super().__init__(context, scored_chooser(most_allocated), backfill, reclaim)

    def entitlements(self, sim: Simulator, usage: dict[str, float]) -> dict[str, float]:
        names, demand = self.demands(sim)
        deserved = water_fill(float(sim.state.gpu_count), self.weights(names), demand)
        return dict(zip(names, deserved, strict=True))

    def job_key(self, sim: Simulator, job: Job) -> tuple:
        cap = capacity(sim.state)
        dominant = max(
            job.pods * job.pod.cpu_milli / cap.cpu.sum(),
            job.pods * job.pod.memory_mib / cap.mem.sum(),
            self.need(job) / max(1, sim.state.gpu_count),
        )
        return (-job.priority, dominant, job.arrival, job.id)

    def admissible(self, job: Job, usage: dict[str, float], shares: dict[str, float]) -> bool:
        if self.need(job) <= EPS:
            return True  # a CPU-only job charges no GPU share
        return usage[job.owner] < shares.get(job.owner, 0.0) - EPS  # not overused

    def reclaim_candidates(
        self, sim: Simulator, job: Job, usage: dict[str, float], shares: dict[str, float]
    ) -> list[Job]:
        if usage[job.owner] + self.need(job) > shares.get(job.owner, 0.0) + EPS:
            return []
        return self.over_share_victims(sim, job, usage, shares, sim.running())
