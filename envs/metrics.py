"""Summary metrics of one simulation, as the papers report them.

Definitions follow `../shared/reference/schedulers-and-research.md`:

* JCT = finish - arrival, over finished jobs (mean, p50, p95, p99); queueing delay = first
  start - arrival, overall and by QoS class; makespan = last finish - first arrival.
* Finish-time fairness rho = T_shared / T_independent (Themis). T_shared is the job's JCT;
  T_independent is its run time on a private 1/N share of the cluster (N = number of tenants):
  the uncontended duration on the GPUs it got, stretched by demand / (capacity / N) when the job
  needs more than a 1/N share. Simplification: the private share is assumed to have free
  capacity of the right shape on arrival (no queueing behind the tenant's own jobs).
* Jain's index over tenants, of GPU-seconds received and of that normalised by the GPU-seconds
  each tenant asked for (a tenant that asks for little is not "starved" by receiving little).
* Gang outcomes: gangs started, gangs that ever held part of their pods without running
  (must be 0 for gang-aware policies), and the GPU-seconds held that way.
* Noisy-neighbour slowdown: for jobs that shared a time-sliced GPU with others, wall run time
  over the run time they would have needed alone.
* Welfare: the sum of realised job values (value model in `jobs.Job`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gpuparley.envs.jobs import QoS

if TYPE_CHECKING:
    from gpuparley.envs.simulator import JobRecord, Simulator


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


def summarise(sim: Simulator, agents: Sequence[str]) -> dict[str, Any]:
    """All foundation metrics of a finished (or horizon-stopped) simulation."""
    sim.close_open_intervals()
    records = list(sim.records.values())
    done = [r for r in records if r.finish is not None]
    started = [r for r in records if r.first_start is not None]
    arrivals = [r.job.arrival for r in records if r.arrived]
    capacity = float(sim.state.gpu_count)
    timeline = sim.timeline

    summary: dict[str, Any] = {
        "jobs": len(records),
        "jobs_finished": len(done),
        "jobs_unfinished": len(records) - len(done),
        "sim_time": sim.now,
        "allocation_ratio_mean": timeline.time_average("allocation_ratio"),
        "allocation_ratio_peak": float(timeline.column("allocation_ratio").max(initial=0.0)),
        "utilisation_mean": timeline.time_average("utilisation"),
        "unallocated_gpus_mean": timeline.time_average("unallocated_gpus"),
        "fragmented_gpus_mean": timeline.time_average("fragmented_gpus"),
        "makespan": (max(r.finish for r in done) - min(arrivals)) if done and arrivals else None,
    }
    summary.update(percentiles([r.finish - r.job.arrival for r in done], "jct"))
    summary.update(percentiles([r.first_start - r.job.arrival for r in started], "queueing_delay"))
    for qos in QoS:
        delays = [r.first_start - r.job.arrival for r in started if r.job.qos is qos]
        summary[f"queueing_delay_mean_{qos.value}"] = float(np.mean(delays)) if delays else None

    rho = [(r.finish - r.job.arrival) / _independent_time(r, capacity, len(agents)) for r in done]
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

    slowdowns = [
        r.run_seconds / (r.job.duration / r.speed) for r in done if r.contended and r.evictions == 0
    ]
    summary["timeslice_jobs_contended"] = len(slowdowns)
    summary.update(percentiles(slowdowns, "noisy_neighbour_slowdown"))
    summary["evictions"] = sim.evictions
    summary["mig_relayouts"] = sim.relayouts
    return summary
