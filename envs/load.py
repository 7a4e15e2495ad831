"""How much GPU work a workload offers a cluster: the measures a scenario's load is stated in.

All three look at the jobs alone, as if each ran from its arrival at full speed on a cluster
with room for everything (a job's GPU-equivalents times its `duration`), so they describe the
workload, not what any policy made of it.

* `offered_load` - the time average, over the arrival window (first to last arrival), of the
  GPU-equivalents those jobs would hold, over the cluster's GPUs. Each job counts only for the
  part of its lifetime inside the window. This is the load a policy faces while the workload is
  offered (the window `envs.metrics` averages allocation over): above 1, the cluster cannot
  hold everything that has arrived and jobs must queue.
* `offered_work_ratio` - all the work (GPU-equivalents x lifetime), over the cluster's GPUs x
  the arrival window. It equals `offered_load` when every job ends inside the window, and
  exceeds it by the work of jobs that outlive it: with heavy-tailed lifetimes (the openb trace:
  its 10 largest pods of a slice often hold half the work) it overstates the load a lot.
* `peak_demand` - the largest of those held GPU-equivalents at any instant.

What a job holds is its GPU-equivalents (`Job.gpus`) unless a `demand` per job is given:
`gpu_demand` is the honest one for a simulated cluster, where a time-slice share under
contention takes turns on a whole GPU. Capacity is in GPUs; `speed_weighted_capacity` counts
each GPU at its model's relative speed, the capacity that durations (measured on a reference
GPU) are served at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.jobs import Job
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.topology import ClusterSpec


def arrival_window(jobs: Sequence[Job]) -> tuple[float, float]:
    """(first arrival, last arrival); ValueError when there are no jobs."""
    if not jobs:
        raise ValueError("a workload without jobs offers no load")
    arrivals = [job.arrival for job in jobs]
    return min(arrivals), max(arrivals)


def gpu_demand(job: Job, settings: SimulationSettings) -> float:
    """GPU-equivalents the job takes from the cluster while it runs at full speed: its GPUs,
    except that a time-slice share under contention takes turns on a whole GPU (k sharers each
    run at (1 - overhead) / k), so it takes one GPU per pod, plus the overhead."""
    if job.pod.gpu.kind == "share" and settings.contention:
        return job.pods / (1 - settings.timeslice_overhead)
    return job.gpus


def speed_weighted_capacity(cluster: ClusterSpec, speed_scaling: bool = True) -> float:
    """The cluster's GPUs, each counted at its model's relative speed (1 each without
    `speed_scaling`): reference-GPU seconds of work it serves per second."""
    return sum(
        (CATALOGUE[model].relative_speed if speed_scaling else 1.0) * count
        for model, count in cluster.gpu_models().items()
    )


Demand = Sequence[float] | None
"""GPU-equivalents each job holds while it runs (None: `Job.gpus`)."""


def _columns(jobs: Sequence[Job], demand: Demand) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrivals (from the first), durations and GPUs held; ValueError on no window."""
    start, end = arrival_window(jobs)
    if end <= start:
        raise ValueError("every job arrives at once: the arrival window has no length")
    arrivals = np.array([job.arrival - start for job in jobs])
    durations = np.array([job.duration for job in jobs])
    gpus = np.array([job.gpus for job in jobs] if demand is None else list(demand), dtype=float)
    if len(gpus) != len(jobs):
        raise ValueError(f"demand has {len(gpus)} entries for {len(jobs)} jobs")
    return arrivals, durations, gpus


def _clipped_load(
    arrivals: np.ndarray, durations: np.ndarray, gpus: np.ndarray, capacity: float
) -> float:
    span = float(arrivals.max())
    held = gpus * (np.minimum(arrivals + durations, span) - arrivals)
    return float(held.sum() / (capacity * span))


def offered_load(jobs: Sequence[Job], capacity_gpus: float, demand: Demand = None) -> float:
    """Mean GPU-equivalents the jobs would hold over their arrival window / capacity (module
    docstring)."""
    return _clipped_load(*_columns(jobs, demand), capacity_gpus)


def offered_work_ratio(jobs: Sequence[Job], capacity_gpus: float, demand: Demand = None) -> float:
    """All GPU work / (capacity x arrival window): `offered_load` without clipping lifetimes."""
    arrivals, durations, gpus = _columns(jobs, demand)
    return float((gpus * durations).sum() / (capacity_gpus * arrivals.max()))


def peak_demand(jobs: Sequence[Job]) -> float:
    """The most GPU-equivalents the jobs would hold at once, each running from its arrival."""
    if not jobs:
        return 0.0
    times = np.array([t for job in jobs for t in (job.arrival, job.arrival + job.duration)])
    steps = np.array([s for job in jobs for s in (job.gpus, -job.gpus)])
    order = np.lexsort((steps, times))  # at one instant, ends before starts
    return float(np.cumsum(steps[order]).max(initial=0.0))


def load_ceiling(jobs: Sequence[Job], capacity_gpus: float, demand: Demand = None) -> float:
    """The `offered_load` the jobs tend to as their arrivals are compressed towards the first
    (no job then ends inside the window): sum(GPUs x share of the window left after the
    arrival) / capacity. No arrival scale reaches it."""
    arrivals, _durations, gpus = _columns(jobs, demand)
    return float((gpus * (1 - arrivals / arrivals.max())).sum() / capacity_gpus)


def arrival_scale_for(
    jobs: Sequence[Job], capacity_gpus: float, target: float, demand: Demand = None
) -> float:
    """The factor on the jobs' arrivals (lifetimes kept) that makes `offered_load` == `target`.

    How a scenario's `workload.trace.arrival_scale` is computed from its data: pass the jobs
    it builds with arrival_scale 1. Compressing arrivals can only raise the load (fewer jobs
    end inside a shorter window), so a bisection on the scale's logarithm finds it. The load
    tends to `load_ceiling` as the scale tends to 0; ValueError when that is not above `target`.
    """
    arrivals, durations, gpus = _columns(jobs, demand)
    ceiling = load_ceiling(jobs, capacity_gpus, demand)
    if ceiling <= target:
        raise ValueError(
            f"these jobs load the cluster to at most {ceiling:.2f} of its capacity however "
            f"closely they arrive: no arrival scale reaches {target}"
        )
    low, high = 1e-9, 1e9  # load(low) > target >= load(high) for any real trace
    for _ in range(200):
        middle = math.sqrt(low * high)
        if _clipped_load(arrivals * middle, durations, gpus, capacity_gpus) > target:
            low = middle
        else:
            high = middle
        if high / low < 1 + 1e-12:
            break
    return high
