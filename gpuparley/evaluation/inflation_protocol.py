"""The FGD paper's "inflation" experiment: GPU allocation ratio as arrived workload grows.

Protocol (the paper's, as `docs/reference.md` states it, followed exactly):

1. take every pod of the trace split (the scenario's jobs; a multi-pod job gives each pod);
2. add copies of pods drawn uniformly at random from that list until the summed GPU request
   (`num_gpu x 1000` milli-GPU, or `gpu_milli` for a sharing pod; CPU-only pods add 0) reaches
   `target` (130%) of the cluster's GPU capacity;
3. shuffle, then place the pods one at a time with no departures; a pod that fits nowhere
   (GPU, CPU or memory: the engine's `feasible_nodes` and `bind` decide) stays unplaced;
4. report the GPU allocation ratio (allocated milli-GPU / total milli-GPU) as a curve over the
   arrived workload (0 .. target of capacity), its final value, and the unallocated GPUs.

Placement is the policy's own node chooser (`allocator.choose`, the callback its scheduler
passes to `plan_job`) on a fresh `ClusterState` of the scenario's cluster, so the experiment
measures exactly what the scheduler does in the simulator. Randomness (the copies and the
shuffle) comes from `seed`; the policy is built with the same seed (`random` uses it). Every
policy of a seed replays the same pods: the last seed's workload is kept, not rebuilt.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np

from gpuparley.agents.registry import make_allocator
from gpuparley.envs.cluster import ClusterState
from gpuparley.envs.jobs import Job
from gpuparley.envs.scenario import Scenario

WORKLOADS_KEPT = 8
"""Inflated workloads kept in memory: one per target of the seed being run."""


def trace_pods(jobs: list[Job]) -> list[Job]:
    """One single-pod job per pod of the workload, ids 0..n-1 in workload order."""
    pods: list[Job] = []
    for job in sorted(jobs, key=lambda j: j.id):
        for _ in range(job.pods):
            pods.append(dataclasses.replace(job, id=len(pods), pods=1, arrival=0.0))
    return pods


def inflate(pods: list[Job], capacity_milli: int, target: float, seed: int) -> list[Job]:
    """All `pods` plus uniformly drawn copies until their GPU request reaches target x capacity,
    shuffled. Copies get fresh ids."""
    rng = np.random.default_rng(seed)
    requests = np.array([p.pod.gpu.milli_gpu for p in pods], dtype=np.int64)
    total = int(requests.sum())
    goal = target * capacity_milli
    if not requests.any():
        raise ValueError("the workload requests no GPU; nothing to inflate")
    workload = list(pods)
    while total < goal:
        source = pods[int(rng.integers(len(pods)))]
        workload.append(dataclasses.replace(source, id=len(workload)))
        total += source.pod.gpu.milli_gpu
    order = rng.permutation(len(workload))
    return [workload[i] for i in order]


@functools.lru_cache(maxsize=WORKLOADS_KEPT)
def seed_workload(scenario: Scenario, seed: int, target: float) -> tuple[list[Job], list[Job]]:
    """The scenario's jobs for `seed` and the inflated, shuffled pods replayed for it. Jobs are
    immutable and nothing changes the lists, so the runs of one seed (every target of each
    policy in turn) share them."""
    jobs = scenario.build_jobs(seed)
    return jobs, inflated(scenario, jobs, seed, target)


def inflated(scenario: Scenario, jobs: list[Job], seed: int, target: float) -> list[Job]:
    """`jobs`' pods inflated to `target` of the scenario cluster's GPU capacity, shuffled."""
    gpus = sum(node.gpu_count for node in scenario.build_cluster().nodes)
    return inflate(trace_pods(jobs), gpus * 1000, target, seed)


def run_inflation(
    scenario: Scenario,
    policy_name: str,
    seed: int,
    target: float = 1.3,
    points: int = 131,
    trace: list[Job] | None = None,
) -> dict[str, Any]:
    """Run the inflation experiment for one policy and seed (module docstring), on the
    scenario's jobs for `seed` or on `trace` when given.

    Returns the curve (`arrived` as a share of GPU capacity, `allocation_ratio` at each of
    `points` evenly spaced arrival levels from 0 to `target`), `final_allocation_ratio`,
    `unallocated_gpus` (capacity minus allocated, in GPUs), pod counts and the wall time.
    """
    start = time.perf_counter()
    if trace is None:
        jobs, workload = seed_workload(scenario, seed, target)
    else:
        jobs, workload = trace, inflated(scenario, trace, seed, target)
    allocator = make_allocator(policy_name, scenario, seed, jobs)
    choose = getattr(allocator, "choose", None)
    if choose is None:
        raise ValueError(f"policy {policy_name!r} has no per-pod placement choice to replay")
    state = ClusterState(scenario.build_cluster())
    capacity_milli = state.gpu_count * 1000

    grid = np.linspace(0.0, target, points)
    curve = np.zeros(points)
    next_point = 1 if points > 1 else points
    arrived = 0
    unplaced = 0
    for pod in workload:
        mask = state.feasible_nodes(pod.pod, pod.allowed_models)
        placement = choose(state, pod, mask) if mask.any() else None
        if placement is None:
            unplaced += 1
        else:
            state.bind(pod, [(0, placement)])
        arrived += pod.pod.gpu.milli_gpu
        ratio = state.allocated_milli / capacity_milli
        while next_point < points and arrived >= grid[next_point] * capacity_milli - 1e-6:
            curve[next_point] = ratio
            next_point += 1
    final = state.allocated_milli / capacity_milli
    curve[next_point:] = final
    return {
        "policy": policy_name,
        "scenario": scenario.name,
        "seed": seed,
        "target": target,
        "arrived": [float(x) for x in grid],
        "allocation_ratio": [float(x) for x in curve],
        "final_allocation_ratio": float(final),
        "unallocated_gpus": float((capacity_milli - state.allocated_milli) / 1000),
        "gpus": state.gpu_count,
        "pods": len(workload),
        "pods_unplaced": unplaced,
        "wall_s": time.perf_counter() - start,
    }
