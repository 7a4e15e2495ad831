"""Offered-load measures of `envs.load` on hand-computed workloads."""

from __future__ import annotations

import dataclasses

import pytest

from gpuparley.envs.load import (
    arrival_scale_for,
    arrival_window,
    gpu_demand,
    load_ceiling,
    offered_load,
    offered_work_ratio,
    peak_demand,
    speed_weighted_capacity,
)
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.topology import ClusterSpec, NodeSpec

from builders import gpu_job


def workload():
    """Window [0, 100]: a 2-GPU job living 50 s, a 1-GPU job living 300 s (outlives it by 250),
    a half-GPU share arriving last."""
    return [
        gpu_job(0, "a", gpus=2, duration=50.0, arrival=0.0),
        gpu_job(1, "a", gpus=1, duration=300.0, arrival=0.0),
        gpu_job(2, "b", milli=500, duration=10.0, arrival=100.0),
    ]


def test_offered_load_clips_lifetimes_to_the_arrival_window() -> None:
    jobs = workload()
    assert arrival_window(jobs) == (0.0, 100.0)
    # held inside [0, 100]: 2 x 50 + 1 x 100 + 0.5 x 0 = 200 GPU-s over 4 GPUs x 100 s
    assert offered_load(jobs, 4) == pytest.approx(0.5)
    # unclipped: 2 x 50 + 1 x 300 + 0.5 x 10 = 405 GPU-s
    assert offered_work_ratio(jobs, 4) == pytest.approx(405 / 400)
    assert peak_demand(jobs) == pytest.approx(3.0)


def test_peak_counts_a_job_ending_as_another_starts_once() -> None:
    jobs = [gpu_job(0, "a", gpus=4, duration=10.0), gpu_job(1, "a", gpus=4, arrival=10.0)]
    assert peak_demand(jobs) == pytest.approx(4.0)
    assert peak_demand([]) == 0.0


def test_arrival_scale_for_hits_the_target() -> None:
    jobs = [gpu_job(i, "a", gpus=1, duration=100.0, arrival=50.0 * i) for i in range(40)]
    scale = arrival_scale_for(jobs, 4, 1.1)
    packed = [dataclasses.replace(job, arrival=job.arrival * scale) for job in jobs]
    assert offered_load(packed, 4) == pytest.approx(1.1, rel=1e-9)
    assert offered_load(jobs, 4) < 1.1  # at scale 1 the load is lower: the scale compresses
    assert scale < 1


def test_unreachable_load_and_degenerate_windows_are_errors() -> None:
    jobs = [gpu_job(0, "a", arrival=0.0), gpu_job(1, "a", arrival=10.0)]
    with pytest.raises(ValueError, match="at most"):
        arrival_scale_for(jobs, 8, 1.1)
    with pytest.raises(ValueError, match="arrival window"):
        offered_load([gpu_job(0, "a"), gpu_job(1, "a")], 4)
    with pytest.raises(ValueError, match="without jobs"):
        offered_work_ratio([], 4)


def test_a_contended_share_holds_a_whole_gpu() -> None:
    share = gpu_job(0, "a", milli=250)
    contended = SimulationSettings(timeslice_overhead=0.2)
    assert gpu_demand(share, contended) == pytest.approx(1 / 0.8)
    assert gpu_demand(share, SimulationSettings(contention=False)) == pytest.approx(0.25)
    assert gpu_demand(gpu_job(1, "a", gpus=4), contended) == 4.0
    jobs = workload()
    demand = [gpu_demand(job, contended) for job in jobs]
    # the share arrives last, so it never counts inside the window: only the ceiling moves
    assert offered_load(jobs, 4, demand) == pytest.approx(offered_load(jobs, 4))
    assert load_ceiling(jobs, 4) == pytest.approx((2 + 1) / 4)


def test_capacity_counts_each_gpu_at_its_speed() -> None:
    cluster = ClusterSpec(
        (
            NodeSpec("h", 1000, 1000, "H100-80GB", 2),
            NodeSpec("t", 1000, 1000, "T4", 4),
            NodeSpec("cpu", 1000, 1000),
        )
    )
    assert speed_weighted_capacity(cluster) == pytest.approx(2 * 2.5 + 4 * 0.2)
    assert speed_weighted_capacity(cluster, speed_scaling=False) == 6.0
