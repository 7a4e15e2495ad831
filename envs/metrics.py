"""Summary metrics of one simulation, as the papers report them.

Definitions follow `docs/reference.md` ("Metrics"):

* Allocation ratio, utilisation, unallocated and fragmented GPUs (`timeline`) are time averages
  over the window in which the workload is offered, from the first arrival to the last: every
  policy faces the same offered load there, while the tail after it lasts as long as a policy
  takes to drain (and a market episode may be capped), and the empty cluster before it as long
  as an allocator's clock ran before the first job, which would make averages incomparable.
* JCT = finish - arrival, over finished jobs (mean, p50, p95, p99); queueing delay = first
  start - arrival, overall and by QoS class; makespan = last finish - first arrival.
* Finish-time fairness rho = T_shared / T_independent (Themis). T_shared is the job's JCT;
  T_independent is its run time on a private 1/N share of the cluster (N = number of tenants):
  the uncontended duration on the GPUs it got, stretched by demand / (capacity / N) when the job
  needs more than a 1/N share. Simplification: the private share is assumed to have free
  capacity of the right shape on arrival (no queueing behind the tenant's own jobs).
  A job that arrived but did not finish counts too, with the end of the run as its finish time:
  a lower bound of its rho, included in rho mean, max and the share above 1, so a policy cannot
  improve its fairness by leaving the worst-served jobs unfinished. In `gpuparley eval` every
  run ends when every job is done or at the horizon cap common to every policy
  (`gpuparley.evaluation.horizon`), so that end is the cap. (A job that never arrived, possible
  only with a cap before the last arrival, has no rho.)
* Unfinished work: `jobs_unfinished` (jobs not finished at the end of the run, arrived or not)
  and `unfinished_gpu_hours`, the work they still needed then (GPU-equivalents x remaining
  run time at full speed; a job evicted without kept progress needs its whole duration again).
* Jain's index over tenants, of GPU-seconds received and of that normalised by the GPU-seconds
  each tenant asked for (a tenant that asks for little is not "starved" by receiving little).
* Gang outcomes: gangs started, gangs that ever held part of their pods without running
  (must be 0 for gang-aware policies), and the GPU-seconds held that way.
* Deadlock episodes (`DeadlockMonitor`): the simulator is *gang-deadlocked* at an instant when,
  after the allocator has acted, at least two gangs are PARTIAL (each holds some of its pods
  and waits for the rest) and none of them could complete even if every running job finished
  now: with all running jobs taken away and the partial gangs keeping what they hold, no
  partial gang's remaining pods fit (checked pod by pod, lowest-index node first). Only the
  waiting gangs themselves block each other, so nothing short of an eviction ends it. An
  episode is a maximal run of consecutive deadlocked instants; `deadlock_episodes` counts the
  episodes (None when the run was not monitored).
* Noisy-neighbour slowdown: for jobs that shared a time-sliced GPU with others, wall run time
  over the run time they would have needed alone.
* Welfare: the sum of realised job values (value model in `jobs.Job`); an unfinished job
  realises nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.ma  # np.percentile imports it on first use: a 20 ms stall in an episode's last step

from gpuparley.envs.jobs import Job, QoS

if TYPE_CHECKING:
    from gpuparley.envs.cluster import ClusterState
    from gpuparley.envs.simulator import JobRecord, Simulator


class DeadlockMonitor:
    """Counts gang-deadlock episodes (module docstring); call it after every simulator step.

    Pass it as (or from) the `on_event` callback of `Simulator.run` / `advance`. The check costs
    nothing unless two or more gangs are partly placed at once.
    """

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.episodes = 0
        self._in_episode = False

    def __call__(self) -> None:
        deadlocked = is_gang_deadlocked(self.sim)
        if deadlocked and not self._in_episode:
            self.episodes += 1
        self._in_episode = deadlocked


def is_gang_deadlocked(sim: Simulator) -> bool:
    """Whether >= 2 partial gangs block each other with every running job gone (docstring)."""
    state = sim.state
    partial = [  # the state first: it is the cheapest test, and most jobs are running
        job
        for job_id in state.holdings
        if sim.records[job_id].state.value == "partial"
        and (job := sim.jobs[job_id]).is_gang
        and len(state.holdings[job_id]) < job.pods
    ]
    if len(partial) < 2:
        return False
    running = sim.running()
    held = [(job, state.release(job)) for job in running]
    try:
        return not any(_rest_fits(state, job) for job in partial)
    finally:
        for job, bindings in reversed(held):
            state.bind(job, bindings)


def _rest_fits(state: ClusterState, job: Job) -> bool:
    """Whether the job's unplaced pods fit now, placed one by one on the lowest-index node."""
    done = {pod for pod, _ in state.holdings.get(job.id, ())}
    placed = 0
    try:
        for pod in range(job.pods):
            if pod in done:
                continue
            mask = state.feasible_nodes(job.pod, job.allowed_models)
            placement = next(
                (p for n in mask.nonzero()[0] if (p := state.first_fit(job.pod, int(n)))), None
            )
            if placement is None:
                return False
            state.bind(job, [(pod, placement)])
            placed += 1
        return True
    finally:
        if placed:
            kept = state.release(job)[:-placed]
            if kept:
                state.bind(job, kept)


def percentiles(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    """Mean, p50, p95, p99 of a sample (None when the sample is empty)."""
    if not len(values):
        return {f"{prefix}_{k}": None for k in ("mean", "p50", "p95", "p99")}
    array = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        f"{prefix}_mean": float(array.mean()),
        f"{prefix}_p50": float(p50),
        f"{prefix}_p95": float(p95),
        f"{prefix}_p99": float(p99),
    }


def jain_index(values: Iterable[float]) -> float | None:
    """Jain's fairness index: 1 when all equal, 1/n when one tenant has everything."""
    array = np.asarray(list(values), dtype=np.float64)
    if len(array) == 0 or not np.any(array):
        return None
    return float(array.sum() ** 2 / (len(array) * (array**2).sum()))


def _independent_time(record: JobRecord, capacity_gpus: float, tenants: int) -> float:
    job = record.job
    share = capacity_gpus / max(1, tenants)
    stretch = max(1.0, job.gpus / share) if share > 0 else 1.0
    return job.duration / record.speed * stretch


def summarise(
    sim: Simulator, agents: Sequence[str], deadlocks: DeadlockMonitor | None = None
) -> dict[str, Any]:
    """All foundation metrics of a finished (or horizon-stopped) simulation."""
    sim.close_open_intervals()
    records = list(sim.records.values())
    done = [r for r in records if r.finish is not None]
    started = [r for r in records if r.first_start is not None]
    finish = {r.job.id: r.finish for r in done if r.finish is not None}  # (typed: never None)
    first_start = {r.job.id: r.first_start for r in started if r.first_start is not None}
    arrivals = [r.job.arrival for r in records if r.arrived]
    capacity = float(sim.state.gpu_count)
    timeline = sim.timeline
    # Cluster-level averages cover the window in which the workload is offered, from the first
    # arrival to the last, the same for every allocator: the tail after it depends on how long
    # a run lasts, and the empty cluster before it on when an allocator's clock starts (a
    # central scheduler's first event is the first arrival, a market's clock starts at 0).
    offered_since = min(arrivals) if arrivals else None
    offered_until = max(arrivals) if arrivals and max(arrivals) > 0 else None

    summary: dict[str, Any] = {
        "jobs": len(records),
        "jobs_finished": len(done),
        "jobs_unfinished": len(records) - len(done),
        "unfinished_gpu_hours": float(
            sum(r.remaining * r.job.gpus for r in records if r.finish is None) / 3600
        ),
        "sim_time": sim.now,
        "allocation_ratio_mean": timeline.time_average(
            "allocation_ratio", offered_until, offered_since
        ),
        "allocation_ratio_peak": float(timeline.column("allocation_ratio").max(initial=0.0)),
        "utilisation_mean": timeline.time_average("utilisation", offered_until, offered_since),
        "unallocated_gpus_mean": timeline.time_average(
            "unallocated_gpus", offered_until, offered_since
        ),
        "fragmented_gpus_mean": timeline.time_average(
            "fragmented_gpus", offered_until, offered_since
        ),
        "makespan": (max(finish.values()) - min(arrivals)) if done and arrivals else None,
    }
    summary.update(percentiles([finish[r.job.id] - r.job.arrival for r in done], "jct"))
    summary.update(
        percentiles([first_start[r.job.id] - r.job.arrival for r in started], "queueing_delay")
    )
    for qos in QoS:
        delays = [first_start[r.job.id] - r.job.arrival for r in started if r.job.qos is qos]
        summary[f"queueing_delay_mean_{qos.value}"] = float(np.mean(delays)) if delays else None

    # Unfinished jobs that arrived count with the run's end as a lower-bound finish (docstring).
    rho = [
        (finish.get(r.job.id, sim.now) - r.job.arrival)
        / _independent_time(r, capacity, len(agents))
        for r in records
        if r.arrived
    ]
    summary["ftf_rho_max"] = float(max(rho)) if rho else None
    summary["ftf_rho_mean"] = float(np.mean(rho)) if rho else None
    summary["ftf_share_rho_above_1"] = float(np.mean(np.asarray(rho) > 1.0)) if rho else None

    received: dict[str, float] = defaultdict(float)
    asked: dict[str, float] = defaultdict(float)
    value: dict[str, float] = defaultdict(float)
    for r in records:
        received[r.job.owner] += r.gpu_seconds
        asked[r.job.owner] += r.job.work if r.arrived else 0.0
        value[r.job.owner] += r.job.realised_value(r.finish)
    summary["jain_gpu_time"] = jain_index(received[a] for a in agents)
    summary["jain_gpu_time_normalised"] = jain_index(
        received[a] / asked[a] for a in agents if asked[a] > 0
    )
    summary["welfare"] = float(sum(value.values()))
    summary["value_by_agent"] = {a: value[a] for a in agents}
    summary["gpu_seconds_by_agent"] = {a: received[a] for a in agents}

    gangs = [r for r in records if r.job.is_gang]
    summary["gangs"] = len(gangs)
    summary["gangs_started"] = sum(1 for r in gangs if r.first_start is not None)
    summary["gangs_partially_held"] = sum(1 for r in gangs if r.partial_gpu_seconds > 0)
    summary["partial_hold_gpu_seconds"] = float(sum(r.partial_gpu_seconds for r in records))
    summary["deadlock_episodes"] = deadlocks.episodes if deadlocks is not None else None

    slowdowns = [
        r.run_seconds / (r.job.duration / r.speed) for r in done if r.contended and r.evictions == 0
    ]
    summary["timeslice_jobs_contended"] = len(slowdowns)
    summary.update(percentiles(slowdowns, "noisy_neighbour_slowdown"))
    summary["evictions"] = sim.evictions
    # progress thrown away by evictions (restarts from zero), in GPU-hours of work to redo
    summary["work_lost_gpu_hours"] = sim.lost_gpu_seconds / 3600
    summary["mig_relayouts"] = sim.relayouts
    return summary
