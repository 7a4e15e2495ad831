"""Themis (NSDI'20): finish-time-fair GPU allocation by a partial-allocation auction.

Modelled:

* finish-time fairness rho = T_shared / T_independent per job; T_independent is the job's run
  time on a private 1/N share of the cluster (the definition `envs.metrics` reports), T_shared is
  estimated as the time waited so far plus the time still needed: a running job's remaining
  work at its current rate, a waiting job's full duration if it starts now, or one more lease
  plus its duration if it does not. A tenant's rho is the mean over its unfinished jobs;
* every scheduling cycle (each event, and every `lease_seconds` on the simulator timer, so
  waiting tenants' rho keeps rising without events) the free GPUs are offered to the fraction
  1 - f of tenants with waiting jobs that have the worst rho (at least one tenant);
* each offered tenant bids, for every set of its waiting jobs, its rho improvement
  V_i = rho_i(nothing started) / rho_i(those started); the arbiter picks the allocation that
  maximises the product of the V_i (greedily, one job at a time by log-gain per GPU, placing
  each job gang-atomically), then applies the partial-allocation rule: winner i keeps only the
  fraction c_i = prod_{j != i} V_j(x*) / prod_{j != i} V_j(x*_{-i}) of what it won (the jobs
  that fit in c_i of its won GPUs, in the order won), where x*_{-i} is the allocation without i;
* what the winners give up, and anything not offered, is left over and allocated to all waiting
  jobs in arrival order (Themis' work-conserving leftover allocation).

Choice on leases: a lease ends at the period but is renewed while the job runs; jobs are not
preempted for fairness (a revoked non-checkpointing job would lose its progress), so fairness
comes only from who gets the GPUs that free up. Left out: the per-app agents' placement
sensitivity (bids ignore locality and GPU model), the hyper-parameter-search app model (each
job is its own unit of work), and the visibility of bids across lease rounds.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpuparley.agents.schedulers.base import SchedulerContext, shape_of, tenant_names
from gpuparley.agents.scoring import most_allocated, scored_chooser
from gpuparley.envs.cluster import Binding
from gpuparley.envs.jobs import Job
from gpuparley.envs.planner import plan_job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator

_EPS = 1e-9


class _Bids:
    """rho of each tenant as a function of which of its waiting jobs start now."""

    def __init__(self, sim: Simulator, tenants: list[str], lease: float, capacity: float) -> None:
        share = capacity / max(1, len(tenants))
        self.fixed: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.gain: dict[int, float] = {}  # rho reduction of a job if it starts now
        for job in [*sim.running(), *sim.pending()]:
            record = sim.records[job.id]
            independent = job.duration * max(1.0, job.gpus / share if share > 0 else 1.0)
            waited = sim.now - job.arrival
            self.count[job.owner] += 1
            if record.state.value == "running":
                left = record.remaining / max(record.rate, _EPS)
                self.fixed[job.owner] += (waited + left) / independent
            else:
                self.fixed[job.owner] += (waited + lease + job.duration) / independent
                self.gain[job.id] = lease / independent

    def rho(self, owner: str, started: Sequence[Job] = ()) -> float:
        total = self.fixed[owner] - sum(self.gain[j.id] for j in started)
        return total / max(1, self.count[owner])

    def value(self, owner: str, started: list[Job]) -> float:
        """V_i: rho with nothing started over rho with `started` started (>= 1)."""
        return self.rho(owner) / max(self.rho(owner, started), _EPS)


class Themis:
    """Finish-time-fairness auction over the free GPUs, every event and every lease."""

    name = "themis"

    def __init__(
        self,
        context: SchedulerContext | None = None,
        lease_seconds: float = 600.0,
        fairness_knob: float = 0.8,
        bids_per_tenant: int = 8,
    ) -> None:
        if not 0 <= fairness_knob < 1:
            raise ValueError("the fairness knob f must be in [0, 1)")
        self.context = context or SchedulerContext()
        self.timer_seconds = lease_seconds
        self.f = fairness_knob
        self.bids_per_tenant = bids_per_tenant
        self.choose = scored_chooser(most_allocated)

    def schedule(self, sim: Simulator) -> None:
        waiting: dict[str, list[Job]] = defaultdict(list)
        for job in sim.pending():
            waiting[job.owner].append(job)
        if not waiting:
            return
        tenants = tenant_names(self.context, sim)
        bids = _Bids(sim, tenants, self.timer_seconds, float(sim.state.gpu_count))
        ranked = sorted(waiting, key=lambda t: (-bids.rho(t), t))
        offered = ranked[: max(1, math.ceil((1 - self.f) * len(ranked)))]
        items = [j for t in offered for j in waiting[t][: self.bids_per_tenant]]
        best = self._auction(sim, items, bids)
        for won in self._partial(sim, items, bids, best).values():
            for job, _plan in won:  # re-planned: the arbiter's plan assumed every winner's jobs
                plan = plan_job(sim.state, job, self.choose)
                if plan is not None:
                    sim.bind(job, plan)
        self._leftover(sim)

    def _auction(
        self, sim: Simulator, items: list[Job], bids: _Bids, without: str | None = None
    ) -> dict[str, list[tuple[Job, list[Binding]]]]:
        """Greedy max of prod V_i over what fits in the free GPUs (the state is unchanged)."""
        state = sim.state
        won: dict[str, list[tuple[Job, list[Binding]]]] = defaultdict(list)
        left = [j for j in items if j.owner != without]
        bound: list[tuple[Job, int]] = []
        try:
            while left:

                def gain(job: Job, won: dict = won) -> float:
                    taken = [j for j, _ in won[job.owner]]
                    before = math.log(bids.value(job.owner, taken))
                    after = math.log(bids.value(job.owner, [*taken, job]))
                    return (after - before) / max(job.gpus, 0.01)

                left.sort(key=lambda j: (-gain(j), j.arrival, j.id))
                job = left.pop(0)
                plan = plan_job(state, job, self.choose)
                if plan is None:
                    continue
                state.bind(job, plan)
                bound.append((job, len(plan)))
                won[job.owner].append((job, plan))
        finally:
            for job, _count in reversed(bound):
                state.release(job)
        return won

    def _partial(
        self,
        sim: Simulator,
        items: list[Job],
        bids: _Bids,
        best: dict[str, list[tuple[Job, list[Binding]]]],
    ) -> dict[str, list[tuple[Job, list[Binding]]]]:
        """Scale each winner's allocation by its partial-allocation factor c_i."""

        def product(allocation: dict, skip: str) -> float:
            return math.prod(
                bids.value(t, [j for j, _ in won]) for t, won in allocation.items() if t != skip
            )

        kept: dict[str, list[tuple[Job, list[Binding]]]] = {}
        for winner, won in best.items():
            others = product(self._auction(sim, items, bids, without=winner), winner)
            factor = min(1.0, product(best, winner) / max(others, _EPS))
            budget = factor * sum(j.gpus for j, _ in won) + _EPS
            kept[winner] = []
            for job, plan in won:
                if job.gpus > budget:
                    break
                budget -= job.gpus
                kept[winner].append((job, plan))
        return kept

    def _leftover(self, sim: Simulator) -> None:
        """Work conservation: whatever is still free goes to waiting jobs in arrival order."""
        failed: set[tuple] = set()
        for job in sim.pending():
            if shape_of(job) in failed:
                continue
            plan = plan_job(sim.state, job, self.choose)
            if plan is None:
                failed.add(shape_of(job))
            else:
                sim.bind(job, plan)
