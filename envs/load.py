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
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gpuparley.envs.jobs import Job


def arrival_window(jobs: Sequence[Job]) -> tuple[float, float]:
    """(first arrival, last arrival); ValueError when there are no jobs."""
    if not jobs:
        raise ValueError("a workload without jobs offers no load")
    arrivals = [job.arrival for job in jobs]
    return min(arrivals), max(arrivals)


def _columns(jobs: Sequence[Job]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrivals (from the first), durations and GPU-equivalents; ValueError on no window."""
    start, end = arrival_window(jobs)
    if end <= start:
        raise ValueError("every job arrives at once: the arrival window has no length")
    arrivals = np.array([job.arrival - start for job in jobs])
    durations = np.array([job.duration for job in jobs])
    gpus = np.array([job.gpus for job in jobs])
    return arrivals, durations, gpus


def _clipped_load(
    arrivals: np.ndarray, durations: np.ndarray, gpus: np.ndarray, capacity: float
) -> float:
    span = float(arrivals.max())
    held = gpus * (np.minimum(arrivals + durations, span) - arrivals)
    return float(held.sum() / (capacity * span))


def offered_load(jobs: Sequence[Job], capacity_gpus: float) -> float:
    """Mean GPU-equivalents the jobs would hold over their arrival window / capacity (module
    docstring)."""
    return _clipped_load(*_columns(jobs), capacity_gpus)


def offered_work_ratio(jobs: Sequence[Job], capacity_gpus: float) -> float:
    """All GPU work / (capacity x arrival window): `offered_load` without clipping lifetimes."""
    arrivals, durations, gpus = _columns(jobs)
    return float((gpus * durations).sum() / (capacity_gpus * arrivals.max()))


def peak_demand(jobs: Sequence[Job]) -> float:
    """The most GPU-equivalents the jobs would hold at once, each running from its arrival."""
    if not jobs:
        return 0.0
    times = np.array([t for job in jobs for t in (job.arrival, job.arrival + job.duration)])
    steps = np.array([s for job in jobs for s in (job.gpus, -job.gpus)])
    order = np.lexsort((steps, times))  # at one instant, ends before starts
    return float(np.cumsum(steps[order]).max(initial=0.0))


def arrival_scale_for(jobs: Sequence[Job], capacity_gpus: float, target: float) -> float:
    """The factor on the jobs' arrivals (lifetimes kept) that makes `offered_load` == `target`.

    How a scenario's `workload.trace.arrival_scale` is computed from its data: pass the jobs
    it builds with arrival_scale 1. Compressing arrivals can only raise the load (fewer jobs
    end inside a shorter window), so a bisection on the scale's logarithm finds it. The load
    tends to sum(GPUs x share of the window left after the arrival) / capacity as the scale
    tends to 0 (no job ends inside the window); ValueError when that is not above `target`.
    """
    arrivals, durations, gpus = _columns(jobs)
    ceiling = float((gpus * (1 - arrivals / arrivals.max())).sum() / capacity_gpus)
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
