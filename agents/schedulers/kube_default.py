"""kube-default: kube-scheduler with the NVIDIA device plugin, as most clusters run it today.

Modelled:

* pods are scheduled ONE AT A TIME, highest PriorityClass first, then oldest first. There are
  no gangs: the pods of a multi-pod job are bound individually as they fit, so a gang can be
  half-placed and hold GPUs idle while it waits for the rest (the simulator records the job as
  PARTIAL; metrics count `gangs_partially_held`, `partial_hold_gpu_seconds` and
  `deadlock_episodes`);
* whole GPUs only: a fractional request on an exclusive node takes a whole GPU, and only a
  time-sliced node packs shares (the engine enforces this physics);
* per-namespace `ResourceQuota` on GPUs (on by default): a tenant's pods may hold at most its
  `quota_share` x cluster GPUs; a pod over quota waits, even when GPUs are idle (no borrowing);
* PriorityClass preemption: a pod that fits nowhere may evict strictly lower-priority jobs from
  ONE node if that makes it fit (fewest, lowest-priority, youngest victims; the node whose worst
  victim has the lowest priority, then the fewest victims, wins);
* `NodeResourcesFit` scoring: `most` (MostAllocated, bin-pack) or `least` (LeastAllocated,
  spread) over CPU, memory and GPU; the device plugin hands out the lowest-index free GPUs.

Left out: the scheduling queue's backoff and unschedulable-pod timing (a pass retries every
waiting pod), inter-pod affinity, taints and topology spread, PodDisruptionBudgets, graceful
termination (an eviction frees resources at once), the nominated-node reservation after
preemption, and the Job controller (a pod whose job is preempted restarts with its whole job).
Quota is counted in GPU-equivalents of the request (a 250 milli share counts 0.25) rather than in
device-plugin units, so that every scheduler's quota means the same amount of GPU.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

import numpy as np

from gpuparley.agents.preemption import find_victims
from gpuparley.agents.schedulers.base import SchedulerContext, usage_by_owner
from gpuparley.agents.scoring import least_allocated, most_allocated, pod_hold, scored_chooser
from gpuparley.envs.cluster import ClusterState, PodPlacement
from gpuparley.envs.jobs import Job
from gpuparley.envs.planner import NodeChooser

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator

Scoring = Literal["most", "least"]
_EPS = 1e-9


def on_node(choose: NodeChooser, node: int) -> NodeChooser:
    """Restrict a chooser to one node (preemption picks its victims node by node)."""

    def restricted(state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
        only = np.zeros_like(mask)
        only[node] = mask[node]
        return choose(state, job, only) if only.any() else None

    return restricted


class KubeDefault:
    """Pod-at-a-time placement with quota, priority preemption and allocated-fraction scoring."""

    name = "kube-default"
    timer_seconds: float | None = None

    def __init__(
        self,
        context: SchedulerContext | None = None,
        scoring: Scoring = "most",
        quota: bool = True,
        preemption: bool = True,
    ) -> None:
        context = context or SchedulerContext()
        if scoring not in ("most", "least"):
            raise ValueError(f"scoring must be 'most' or 'least', got {scoring!r}")
        self.choose = scored_chooser(most_allocated if scoring == "most" else least_allocated)
        self.quota = {t.name: context.quota(t) for t in context.tenants} if quota else {}
        self.preemption = preemption

    def schedule(self, sim: Simulator) -> None:
        usage = usage_by_owner(sim)
        failed: set[tuple] = set()
        for job in sorted(sim.pending(), key=lambda j: (-j.priority, j.arrival, j.id)):
            shape = (job.pod, job.allowed_models, job.priority)
            while len(sim.state.holdings.get(job.id, ())) < job.pods:
                if not self._within_quota(job, pod_hold(sim.state, job), usage):
                    break
                if shape in failed or not self._place_one_pod(sim, job):
                    failed.add(shape)
                    break
                usage[job.owner] += pod_hold(sim.state, job)

    def _within_quota(self, job: Job, pod_gpus: float, usage: dict[str, float]) -> bool:
        limit = self.quota.get(job.owner)
        return limit is None or usage[job.owner] + pod_gpus <= limit + _EPS

    def _place_one_pod(self, sim: Simulator, job: Job) -> bool:
        """Bind the job's next pod where it fits best, preempting if that is the only way."""
        pod_index = len(sim.state.holdings.get(job.id, ()))
        mask = sim.state.feasible_nodes(job.pod, job.allowed_models)
        placement = self.choose(sim.state, job, mask) if mask.any() else None
        if placement is None and self.preemption:
            placement = self._preempt_for(sim, job)
        if placement is None:
            return False
        sim.bind(job, [(pod_index, placement)])
        return True

    def _preempt_for(self, sim: Simulator, job: Job) -> PodPlacement | None:
        """kube-scheduler's PostFilter: evict lower-priority jobs from the best single node."""
        lower = [sim.jobs[i] for i in sim.state.holdings if sim.jobs[i].priority < job.priority]
        if not lower:
            return None
        one_pod = dataclasses.replace(job, pods=len(sim.state.holdings.get(job.id, ())) + 1)
        by_node: dict[int, list[Job]] = {}
        for victim in lower:
            for node in {p.node for _i, p in sim.state.holdings[victim.id]}:
                by_node.setdefault(node, []).append(victim)
        best: tuple[tuple, int, list[Job]] | None = None
        for node, victims in sorted(by_node.items()):
            victims.sort(key=lambda v: (v.priority, -(sim.records[v.id].first_bound or 0), -v.id))
            chosen = find_victims(sim.state, one_pod, victims, on_node(self.choose, node))
            if chosen is None:
                continue
            rank = (max(v.priority for v in chosen), len(chosen), node)
            if best is None or rank < best[0]:
                best = (rank, node, chosen)
        if best is None:
            return None
        _rank, node, chosen = best
        for victim in chosen:
            sim.evict(victim)
        mask = sim.state.feasible_nodes(job.pod, job.allowed_models)
        return on_node(self.choose, node)(sim.state, job, mask)
