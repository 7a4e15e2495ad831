"""The fair-share queue loop that Volcano, KAI and Kueue share.

All three keep one queue per tenant, compute each queue's entitlement every cycle (Volcano's
`deserved`, KAI's `fairShare`, Kueue's `nominalQuota`), then repeatedly serve the queue that is
furthest below its entitlement, one whole job (gang) at a time. They differ in the entitlement,
in the gate a job must pass before it is placed (overused queue, limit, borrowing rules), in the
job order inside a queue and in whom they reclaim from; those are the hooks of `FairQueues`.

Reclaim always evicts whole jobs (gang-atomic) and only when evicting them really lets the
waiting job be placed (`preemption.find_victims`).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpuparley.agents.preemption import find_victims
from gpuparley.agents.schedulers.base import (
    SchedulerContext,
    demand_by_owner,
    shape_of,
    tenant_names,
    usage_by_owner,
)
from gpuparley.agents.scoring import demand_gpus, held_gpus
from gpuparley.envs.cluster import ClusterState
from gpuparley.envs.jobs import Job
from gpuparley.envs.planner import NodeChooser, plan_job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator

EPS = 1e-9


class FairQueues:
    """Serve tenant queues in order of usage / entitlement; hooks define the policy."""

    name = "fair-queues"
    timer_seconds: float | None = None

    def __init__(
        self,
        context: SchedulerContext,
        choose: NodeChooser,
        backfill: bool = True,
        reclaim: bool = True,
        max_reclaims_per_cycle: int = 4,
    ) -> None:
        self.context = context
        self.choose = choose
        self.backfill = backfill
        self.reclaim = reclaim
        self.max_reclaims = max_reclaims_per_cycle
        self.weight = {t.name: t.weight for t in context.tenants}
        self._state: ClusterState | None = None

    # ------------------------------------------------------------ hooks
    def entitlements(self, sim: Simulator, usage: dict[str, float]) -> dict[str, float]:
        """Each queue's entitlement in GPUs this cycle."""
        raise NotImplementedError

    def job_key(self, sim: Simulator, job: Job) -> tuple:
        """Order of jobs inside one queue (smallest first)."""
        return (-job.priority, job.arrival, job.id)

    def queue_key(self, owner: str, usage: dict[str, float], shares: dict[str, float]) -> float:
        """Which queue is served next (smallest first): usage over entitlement."""
        return usage[owner] / max(shares.get(owner, 0.0), EPS)

    def admissible(self, job: Job, usage: dict[str, float], shares: dict[str, float]) -> bool:
        """Whether the queue may start this job now (before looking at physical fit)."""
        return True

    def reclaim_candidates(
        self, sim: Simulator, job: Job, usage: dict[str, float], shares: dict[str, float]
    ) -> list[Job]:
        """Ordered jobs that may be evicted for `job` (empty: `job` may not reclaim)."""
        return []

    def rescue(self, sim: Simulator, job: Job) -> bool:
        """A last resort before reclaim (KAI's consolidation); True if `job` was placed."""
        return False

    # ------------------------------------------------------------ the loop
    def weights(self, names: Sequence[str]) -> list[float]:
        return [self.weight.get(name, 1.0) for name in names]

    def need(self, job: Job) -> float:
        """GPU-equivalents the whole waiting job will hold (charged before it is placed)."""
        if self._state is None:
            raise RuntimeError("need() is asked during schedule(), once the state is known")
        return demand_gpus(self._state, job)

    def schedule(self, sim: Simulator) -> None:
        self._state = sim.state
        usage = usage_by_owner(sim)
        shares = self.entitlements(sim, usage)
        queues: dict[str, deque[Job]] = {}
        for job in sorted(sim.pending(), key=lambda j: self.job_key(sim, j)):
            queues.setdefault(job.owner, deque()).append(job)
        failed: set[tuple] = set()
        no_reclaim: set[tuple] = set()
        attempts = 0
        while queues:
            owner = min(queues, key=lambda q: (self.queue_key(q, usage, shares), q))
            job = queues[owner].popleft()
            if not queues[owner]:
                del queues[owner]
            placed = self._try_place(sim, job, usage, shares, failed)
            if placed:
                usage[owner] += held_gpus(sim.state, job)
            elif self.reclaim and attempts < self.max_reclaims:
                key = (shape_of(job), owner)
                if key not in no_reclaim:
                    attempts += 1
                    if self._reclaim_for(sim, job, usage, shares) is None:
                        no_reclaim.add(key)
                    else:
                        failed.clear()  # capacity was freed
                        usage = usage_by_owner(sim)
                        placed = True
            if not placed and not self.backfill:
                queues.pop(owner, None)  # head-of-line blocking: the queue waits for its head

    def _try_place(
        self,
        sim: Simulator,
        job: Job,
        usage: dict[str, float],
        shares: dict[str, float],
        failed: set[tuple],
    ) -> bool:
        if not self.admissible(job, usage, shares):
            return False
        shape = shape_of(job)
        if shape in failed:
            return False
        plan = plan_job(sim.state, job, self.choose)
        if plan is None:
            if self.rescue(sim, job):
                failed.clear()
                return True
            failed.add(shape)
            return False
        sim.bind(job, plan)
        return True

    def _reclaim_for(
        self, sim: Simulator, job: Job, usage: dict[str, float], shares: dict[str, float]
    ) -> list[Job] | None:
        candidates = self.reclaim_candidates(sim, job, usage, shares)
        if not candidates:
            return None
        held = {v.id: held_gpus(sim.state, v) for v in candidates}
        victims = find_victims(
            sim.state,
            job,
            candidates,
            self.choose,
            enough=lambda vs: self._admissible_without(job, vs, held, usage, shares),
        )
        if victims is None:
            return None
        for victim in victims:
            sim.evict(victim)
        plan = plan_job(sim.state, job, self.choose)
        if plan is not None:
            sim.bind(job, plan)
        return victims

    def _admissible_without(
        self,
        job: Job,
        victims: list[Job],
        held: dict[int, float],
        usage: dict[str, float],
        shares: dict[str, float],
    ) -> bool:
        """The admission gate as it would be once `victims` (holding `held`) are gone."""
        after = defaultdict(float, usage)
        for victim in victims:
            after[victim.owner] -= held[victim.id]
        return self.admissible(job, after, shares)

    # ------------------------------------------------------------ helpers
    def over_share_victims(
        self,
        sim: Simulator,
        job: Job,
        usage: dict[str, float],
        shares: dict[str, float],
        running: Sequence[Job],
    ) -> list[Job]:
        """Jobs of other queues above their entitlement, most over-served queue first.

        A victim is listed only while its queue is still above its entitlement once the victims
        listed before it are gone, so reclaim never pushes a queue below what it deserves.
        """
        left = defaultdict(float, usage)
        ordered = sorted(
            (j for j in running if j.owner != job.owner),
            key=lambda j: (
                -self.queue_key(j.owner, usage, shares),
                j.priority,
                -(sim.records[j.id].start or 0.0),
                -j.id,
            ),
        )
        victims = []
        for victim in ordered:
            if left[victim.owner] > shares.get(victim.owner, 0.0) + EPS:
                victims.append(victim)
                left[victim.owner] -= held_gpus(sim.state, victim)
        return victims

    def demands(self, sim: Simulator) -> tuple[list[str], list[float]]:
        """Tenant names and their demand (held + waiting) in GPUs."""
        names = tenant_names(self.context, sim)
        demand = demand_by_owner(sim)
        return names, [demand.get(name, 0.0) for name in names]
