"""Kueue: job admission by quota (ClusterQueues in a cohort), placement left to kube-scheduler.

Modelled:

* one ClusterQueue per tenant, all in one cohort, with one resource (GPUs, in GPU-equivalents
  of the request): `nominalQuota` = the tenant's quota share of the cluster's GPUs,
  `borrowingLimit` (how far beyond its nominal quota it may go; unlimited by default) and
  `lendingLimit` (how much of its unused nominal quota others may borrow; all by default);
* a workload is admitted all-or-nothing: it is admitted when its queue's usage plus the job
  stays within nominal quota, or the excess can be borrowed from other queues' unused lendable
  quota within the borrowing limit, and the cohort as a whole stays within its nominal total.
  Admission here also requires that kube-scheduler can place every pod at once (as
  `waitForPodsReady` would requeue a workload whose pods do not all start), so an admitted job
  is bound whole (gang-atomic) and placed with kube-default's MostAllocated scoring;
* fair sharing: queues are served in order of weighted dominant resource share, the share of
  the cohort's lendable quota a queue borrows, divided by its weight; inside a queue higher
  priority first, then the oldest (BestEffortFIFO: a job that cannot be admitted is skipped);
* preemption `reclaimWithinCohort: Any`: a queue whose usage plus the job stays within its
  nominal quota takes its lent capacity back by evicting workloads of queues that are
  borrowing (usage above nominal), the most-borrowing queue first, lowest priority and most
  recently started first, only while the victim's queue is still borrowing;
* `borrowWithinCohort: LowerPriority`: a job that would itself borrow may evict strictly
  lower-priority workloads of other borrowing queues.

Left out: resource flavors (one GPU flavor), multiple cohorts and hierarchical cohorts,
`withinClusterQueue` preemption, AdmissionChecks and provisioning requests, partial admission,
the `waitForPodsReady` timeout and requeueing backoff, and LocalQueues (one per tenant).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuparley.agents.schedulers.base import SchedulerContext
from gpuparley.agents.schedulers.queues import EPS, FairQueues
from gpuparley.agents.scoring import most_allocated, scored_chooser
from gpuparley.envs.jobs import Job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator

INF = float("inf")


class Kueue(FairQueues):
    """Quota admission with borrowing, lending limits, fair sharing and cohort reclaim."""

    name = "kueue"

    def __init__(
        self,
        context: SchedulerContext,
        borrowing_limit: dict[str, float] | None = None,
        lending_limit: dict[str, float] | None = None,
        borrow_within_cohort: bool = True,
    ) -> None:
        super().__init__(context, scored_chooser(most_allocated))
        self.nominal = {t.name: context.quota(t) for t in context.tenants}
        self.borrowing_limit = borrowing_limit or {}
        self.lending_limit = lending_limit or {}
        self.borrow_within_cohort = borrow_within_cohort
        self.cohort_lendable = max(EPS, sum(self._lendable(q) for q in self.nominal))
        self.cohort_nominal = sum(self.nominal.values())

    def entitlements(self, sim: Simulator, usage: dict[str, float]) -> dict[str, float]:
        return dict(self.nominal)

    def _lendable(self, owner: str) -> float:
        return min(self.nominal.get(owner, 0.0), self.lending_limit.get(owner, INF))

    def queue_key(self, owner: str, usage: dict[str, float], shares: dict[str, float]) -> float:
        """Weighted dominant resource share: borrowed GPUs over the cohort's lendable GPUs."""
        borrowed = max(0.0, usage[owner] - self.nominal.get(owner, 0.0))
        return borrowed / self.cohort_lendable / self.weight.get(owner, 1.0)

    def admissible(self, job: Job, usage: dict[str, float], shares: dict[str, float]) -> bool:
        owner = job.owner
        nominal = self.nominal.get(owner, 0.0)
        need = usage[owner] + self.need(job)
        if sum(usage.values()) + self.need(job) > self.cohort_nominal + EPS:
            return False  # the cohort's total quota is spent
        borrow = need - nominal
        if borrow <= EPS:
            return True
        if borrow > self.borrowing_limit.get(owner, INF) + EPS:
            return False
        lendable = sum(
            min(self._lendable(q), max(0.0, self.nominal[q] - usage[q]))
            for q in self.nominal
            if q != owner
        )
        return borrow <= lendable + EPS

    def reclaim_candidates(
        self, sim: Simulator, job: Job, usage: dict[str, float], shares: dict[str, float]
    ) -> list[Job]:
        within_nominal = usage[job.owner] + self.need(job) <= self.nominal.get(job.owner, 0) + EPS
        running = sim.running()
        if not within_nominal:
            if not self.borrow_within_cohort:
                return []
            running = [j for j in running if j.priority < job.priority]
        return self.over_share_victims(sim, job, usage, shares, running)
