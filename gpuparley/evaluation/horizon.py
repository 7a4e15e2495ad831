"""One horizon for every policy of an evaluation: equal terms for schedulers and markets.

Every run of `gpuparley eval` lasts until every job has finished or until a cap in simulated
seconds, whichever comes first, and the cap is the same for every policy that plays the same
workload: central schedulers stop at it (`SimulationSettings.horizon`), and a market plays
`ceil(cap / epoch_seconds)` epochs with its simulator stopped at the cap too (epochs are fixed
billing periods of `market.epoch_seconds`, so the market sees exactly the same window). Jobs
still unfinished at the cap are accounted the same way for everyone (`envs.metrics`): no value,
the cap as a lower bound of their finish time in finish-time fairness, and their remaining work
in `unfinished_gpu_hours`.

**The cap**, in order of precedence: `--horizon SECONDS`; the scenario's `settings.horizon`;
else the default rule, computed from the seed's workload and the cluster:

    cap = max over jobs of (arrival + duration / slowest allowed speed)
          + 10 x (total GPU work / speed-weighted GPU capacity),
    rounded up to a whole number of market epochs.

The first term is the earliest any policy could finish everything, with unlimited GPUs and
each job on the slowest GPU model it may use (speeds count only when `speed_scaling` is on).
The second is ten times how long the whole cluster, perfectly packed at full speed, needs to
serve all the work: room for queueing behind the offered load, fragmentation, gangs waiting for
whole nodes, time-slicing contention (which can halve a GPU's throughput) and policies that
decide once per epoch. A policy that has not finished within that is cut there and shows its
unfinished work. Measured on seeds 0-4 of the bundled scenarios, every incumbent that finishes
its jobs does so within 74% of the cap (README, "Equal terms"). Rounding to whole epochs makes
the market's last epoch a whole one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.jobs import Job
from gpuparley.envs.load import gpu_demand, speed_weighted_capacity
from gpuparley.envs.scenario import Scenario
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.topology import ClusterSpec

DRAIN_FACTOR = 10.0
RULE = (
    "latest uncontended finish (arrival + duration at the slowest allowed GPU speed) "
    f"+ {DRAIN_FACTOR:g} x total GPU work / speed-weighted GPU capacity, "
    "rounded up to whole market epochs"
)
SOURCES = ("--horizon", "scenario settings.horizon", "default rule")


@dataclass(frozen=True)
class Horizon:
    """The cap of one workload (one seed) and where it came from (one of `SOURCES`)."""

    seconds: float
    source: str

    def epochs(self, epoch_seconds: float) -> int:
        """Market epochs that cover the cap (the simulator stops at the cap itself)."""
        return max(1, math.ceil(self.seconds / epoch_seconds - 1e-9))


def _speeds(cluster: ClusterSpec, speed_scaling: bool) -> dict[str, float]:
    return {
        model: (CATALOGUE[model].relative_speed if speed_scaling else 1.0)
        for model in cluster.gpu_models()
    }


def default_horizon(
    jobs: Sequence[Job], cluster: ClusterSpec, settings: SimulationSettings, epoch_seconds: float
) -> float:
    """The default cap of a workload on a cluster (the rule in the module docstring)."""
    if not jobs:
        return epoch_seconds
    speeds = _speeds(cluster, settings.speed_scaling)
    capacity = speed_weighted_capacity(cluster, settings.speed_scaling)
    if capacity <= 0:
        raise ValueError("the default horizon needs a cluster with GPUs")

    def slowest(job: Job) -> float:
        allowed = [speed for model, speed in speeds.items() if job.allows(model)]
        return min(allowed) if allowed and job.gpus > 0 else 1.0

    latest = max(job.arrival + job.duration / slowest(job) for job in jobs)
    # GPU-seconds taken from the cluster at full speed (`gpu_demand`: a contended time-slice
    # share takes turns on a whole GPU)
    drain = sum(gpu_demand(job, settings) * job.duration for job in jobs) / capacity
    cap = latest + DRAIN_FACTOR * drain
    return math.ceil(cap / epoch_seconds) * epoch_seconds


def resolve_horizon(scenario: Scenario, seed: int, override: float | None = None) -> Horizon:
    """The cap for one seed's workload: `override`, the scenario's horizon, or the rule."""
    if override is not None:
        if not override > 0:
            raise ValueError(f"--horizon must be > 0 seconds, got {override}")
        return Horizon(float(override), SOURCES[0])
    if scenario.settings.horizon is not None:
        return Horizon(float(scenario.settings.horizon), SOURCES[1])
    seconds = default_horizon(
        scenario.build_jobs(seed),
        scenario.build_cluster(),
        scenario.settings,
        float(scenario.market.epoch_seconds),
    )
    return Horizon(seconds, SOURCES[2])


def describe(horizons: dict[int, Horizon]) -> dict[str, Any]:
    """What results.json records about the horizon: the rule, the source, the cap per seed."""
    sources = sorted({h.source for h in horizons.values()})
    return {
        "rule": RULE,
        "source": sources[0] if len(sources) == 1 else sources,
        "seconds_by_seed": {str(seed): h.seconds for seed, h in horizons.items()},
    }
