"""KAI Scheduler (NVIDIA, formerly Run:ai): hierarchical fair-share queues for GPUs.

Modelled:

* a root queue with one queue per tenant: `quota` (deserved) = the tenant's quota share of the
  cluster's GPUs, `overQuotaWeight` = its weight, `limit` (none unless given);
* fair share recomputed every cycle: each queue first gets min(quota, demand), then the surplus
  is split by over-quota weight among queues that want more, capped at limit and demand;
* queues served in order of saturation allocated / fairShare; a queue may allocate up to its
  limit (idle GPUs are used; reclaim restores fairness later);
* gang scheduling (PodGroup `minMember` = every pod) and bin-packing placement (the fullest
  node that fits, and on it the fullest GPU: fractional shares are packed onto time-sliced GPUs,
  KAI's `gpu-fraction`);
* consolidation (the `consolidate` action, before reclaim): when a job does not fit, move
  running jobs off one node (evict and re-place elsewhere) if that frees room for it AND every
  moved job finds a new home at once; otherwise nothing moves;
* reclaim: a job whose queue stays within its fair share evicts whole jobs from queues above
  theirs, the most saturated queue first, youngest first, never a job that has run less than
  `min_runtime` seconds (default 600);
* the cycle also runs on a timer (`min_runtime` seconds) so that jobs that just became
  preemptible can be reclaimed without waiting for an event.

Left out: deeper queue hierarchies (departments), time-decayed usage in fairness,
non-preemptible priority classes and within-queue preemption (`preempt` action), spread
placement, `gpu-memory` requests, topology-aware placement and the elastic `minMember`.
To bound its cost, consolidation serves one whole-GPU job per cycle, looks at the
`consolidation_nodes` emptiest nodes and moves at most `max_moves` jobs (smallest first), and is
not retried for a job shape until the cluster's occupancy has changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from gpuparley.agents.preemption import find_victims, move_jobs
from gpuparley.agents.schedulers.base import SchedulerContext, preemptible_running, shape_of
from gpuparley.agents.schedulers.queues import EPS, FairQueues
from gpuparley.agents.scoring import (
    held_gpus,
    most_allocated,
    scored_chooser,
    water_fill,
)
from gpuparley.envs.cluster import FULL_GPU_MILLI
from gpuparley.envs.free_capacity import node_free_milli, tightest_candidate
from gpuparley.envs.jobs import Job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator


class Kai(FairQueues):
    """Fair-share queues with bin-packing, consolidation and min-runtime-guarded reclaim."""

    name = "kai"

    def __init__(
        self,
        context: SchedulerContext,
        min_runtime: float = 600.0,
        limits: dict[str, float] | None = None,
        consolidation: bool = True,
        consolidation_nodes: int = 4,
        consolidations_per_cycle: int = 1,
        max_moves: int = 8,
    ) -> None:
        super().__init__(context, scored_chooser(most_allocated, tightest_candidate))
        self.min_runtime = min_runtime
        self.quota = {t.name: context.quota(t) for t in context.tenants}
        self.limits = limits or {}
        self.consolidation = consolidation
        self.consolidation_nodes = consolidation_nodes
        self.consolidations_per_cycle = consolidations_per_cycle
        self.max_moves = max_moves
        self.timer_seconds = min_runtime if min_runtime > 0 else None
        self._budget = 0
        self._hopeless: set[tuple] = set()  # consolidations that failed on this very state

    def schedule(self, sim: Simulator) -> None:
        self._budget = self.consolidations_per_cycle
        if len(self._hopeless) > 1024:
            self._hopeless.clear()
        super().schedule(sim)

    def entitlements(self, sim: Simulator, usage: dict[str, float]) -> dict[str, float]:
        names, demand = self.demands(sim)
        caps = [
            min(d, self.limits.get(n, float("inf"))) for n, d in zip(names, demand, strict=True)
        ]
        floors = [self.quota.get(n, 0.0) for n in names]
        fair = water_fill(float(sim.state.gpu_count), self.weights(names), caps, floors)
        return dict(zip(names, fair, strict=True))

    def admissible(self, job: Job, usage: dict[str, float], shares: dict[str, float]) -> bool:
        limit = self.limits.get(job.owner, float("inf"))
        return usage[job.owner] + self.need(job) <= limit + EPS

    def reclaim_candidates(
        self, sim: Simulator, job: Job, usage: dict[str, float], shares: dict[str, float]
    ) -> list[Job]:
        if usage[job.owner] + self.need(job) > shares.get(job.owner, 0.0) + EPS:
            return []
        running = preemptible_running(sim, self.min_runtime)
        return self.over_share_victims(sim, job, usage, shares, running)

    def rescue(self, sim: Simulator, job: Job) -> bool:
        """Consolidation: move running jobs off a node so that `job` fits there."""
        if not self.consolidation or self._budget <= 0 or job.pod.gpu.kind != "whole":
            return False
        state = sim.state
        model_ok = state.model_mask(job.allowed_models) & (state.node_gpu_count > 0)
        nodes = np.flatnonzero(model_ok)
        free = node_free_milli(state)[nodes]
        if free.sum() < self.need(job) * FULL_GPU_MILLI:
            return False  # moving pods creates no capacity: only reclaim can help
        fingerprint = (shape_of(job), len(state.holdings), state.allocated_milli)
        if fingerprint in self._hopeless:
            return False
        self._budget -= 1
        movable = preemptible_running(sim, self.min_runtime)
        for node in nodes[np.argsort(-free, kind="stable")][: self.consolidation_nodes]:
            on_node = [j for j in movable if any(p.node == node for _i, p in state.holdings[j.id])]
            on_node.sort(key=lambda j: (held_gpus(state, j), j.id))
            on_node = on_node[: self.max_moves]
            victims = find_victims(state, job, on_node, self.choose, rehome=self.choose)
            if victims is None:
                continue
            for victim in victims:
                sim.evict(victim)
            plan_ok = move_jobs(sim, [job], self.choose) == 1
            move_jobs(sim, victims, self.choose)
            return plan_ok
        self._hopeless.add(fingerprint)
        return False
