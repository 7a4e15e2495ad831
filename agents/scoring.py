"""Node and GPU scoring shared by the incumbent schedulers, vectorised over nodes.

A scheduler picks a pod's placement in two steps, as kube-scheduler does: score every feasible
node in one numpy expression (the engine's `feasible_nodes` mask says where the pod fits), then
choose the GPUs on the winning node. Ties go to the lowest node index (kube-scheduler itself picks
at random among equal scores; a deterministic choice keeps the central schedulers reproducible
without a generator). Keeping both steps here means kube-default's
`MostAllocated`, KAI's bin-packing and `best-fit-gpu` differ only in the score, not in copied
loops.

GPU accounting used by the quota-based schedulers is in GPU-equivalents of what a pod *holds*
(`held_gpus`): a whole GPU is 1, a share on a time-sliced GPU its milli / 1000, a share on an
exclusive GPU a whole 1 (the device plugin hands it the whole GPU), a MIG instance N/7.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpuparley.envs.cluster import FULL_GPU_MILLI, ClusterState, PodPlacement
from gpuparley.envs.free_capacity import node_free_milli
from gpuparley.envs.jobs import Job, PodDemand
from gpuparley.envs.mig import COMPUTE_SLICES
from gpuparley.envs.planner import NodeChooser

NodeScore = Callable[[ClusterState, PodDemand], np.ndarray]
"""Score of every node for one pod (higher is better); only feasible nodes are looked at."""

GpuPick = Callable[[ClusterState, PodDemand, list[PodPlacement]], PodPlacement]
"""Choose among a node's candidate placements (never called with an empty list)."""


@dataclass(frozen=True)
class _Capacity:
    cpu: np.ndarray
    mem: np.ndarray
    gpu_milli: np.ndarray
    gpu_index: np.ndarray  # node x max GPUs per node, global GPU index or -1


_CAPACITY: weakref.WeakKeyDictionary[ClusterState, _Capacity] = weakref.WeakKeyDictionary()


def capacity(state: ClusterState) -> _Capacity:
    """Per-node allocatable CPU, memory and milli-GPU, and a padded node x GPU index matrix."""
    cached = _CAPACITY.get(state)
    if cached is None:
        nodes = state.spec.nodes
        width = int(state.node_gpu_count.max(initial=0))
        index = np.full((state.node_count, max(1, width)), -1, dtype=np.int64)
        for n in range(state.node_count):
            gpus = state.gpus_of(n)
            index[n, : len(gpus)] = np.arange(gpus.start, gpus.stop)
        cached = _Capacity(
            cpu=np.array([max(1, n.cpu_milli) for n in nodes], dtype=np.float64),
            mem=np.array([max(1, n.memory_mib) for n in nodes], dtype=np.float64),
            gpu_milli=state.node_gpu_count.astype(np.float64) * FULL_GPU_MILLI,
            gpu_index=index,
        )
        _CAPACITY[state] = cached
    return cached


def request_milli(pod: PodDemand) -> int:
    """Milli-GPU one pod asks for (whole = 1000 per GPU, share = its milli, MIG = N/7)."""
    return pod.gpu.milli_gpu


def _requested(state: ClusterState, pod: PodDemand) -> tuple[np.ndarray, np.ndarray]:
    """(requested after placing `pod`, allocatable) per node (rows) and scored resource
    (columns: milli-CPU, MiB of memory, milli-GPU), allocatable 0 where a resource is skipped.

    kube-scheduler skips a resource a node has none of, and an extended resource the pod does not
    request: so the GPU column counts only for a GPU pod on a GPU node.
    """
    cap = capacity(state)
    requested = np.column_stack(
        [
            cap.cpu - state.cpu_free + pod.cpu_milli,
            cap.mem - state.mem_free + pod.memory_mib,
            cap.gpu_milli - node_free_milli(state) + request_milli(pod),
        ]
    ).astype(np.int64)
    gpu = cap.gpu_milli if pod.gpu.kind != "none" else np.zeros(state.node_count)
    allocatable = np.column_stack([cap.cpu, cap.mem, gpu]).astype(np.int64)
    return requested, allocatable


def _weighted_mean(scores: np.ndarray, allocatable: np.ndarray) -> np.ndarray:
    """kube-scheduler's node score: the integer mean of the per-resource integer scores over the
    resources not skipped (all weights 1)."""
    counted = allocatable > 0
    return np.where(counted, scores, 0).sum(axis=1) // np.maximum(counted.sum(axis=1), 1)


def most_allocated(state: ClusterState, pod: PodDemand) -> np.ndarray:
    """kube-scheduler's `NodeResourcesFit` score, strategy `MostAllocated` (bin-packing):
    per resource `min(requested, allocatable) * 100 // allocatable`, then their integer mean
    (`noderesources/most_allocated.go`), over CPU, memory and `nvidia.com/gpu` weighted 1 each.

    `requested` is what the node's pods hold plus this pod; the GPU is counted in milli-GPU held
    (a device count on exclusive GPUs, finer where time-sliced shares are packed). Left out: the
    scheduler's non-zero defaults for a pod that requests no CPU or memory (100m, 200 MiB).
    """
    requested, allocatable = _requested(state, pod)
    safe = np.maximum(allocatable, 1)
    scores = np.minimum(requested, allocatable) * 100 // safe
    return _weighted_mean(scores, allocatable)


def least_allocated(state: ClusterState, pod: PodDemand) -> np.ndarray:
    """kube-scheduler's `NodeResourcesFit` score, strategy `LeastAllocated` (spreading): per
    resource `(allocatable - requested) * 100 // allocatable`, 0 when over, then their integer
    mean (`noderesources/least_allocated.go`), over the resources of `most_allocated`."""
    requested, allocatable = _requested(state, pod)
    safe = np.maximum(allocatable, 1)
    scores = np.where(requested > allocatable, 0, (allocatable - requested) * 100 // safe)
    return _weighted_mean(scores, allocatable)


def least_free_gpu(state: ClusterState, pod: PodDemand) -> np.ndarray:
    """Best-fit by GPU (`best-fit-gpu`): least free milli-GPU left on the node after placement.

    Ties go to the node with the least free CPU (a small second key, scaled below one milli).
    Exact, with no integer scores, so stronger than the FGD paper's BestFit
    (`schedulers.paper_baselines`), whose integer scores tie often (ties go by node name).
    """
    cap = capacity(state)
    free_after = node_free_milli(state) - request_milli(pod)
    return -(free_after + 0.5 * (state.cpu_free / cap.cpu.max()))


def first_candidate(
    state: ClusterState, pod: PodDemand, candidates: list[PodPlacement]
) -> PodPlacement:
    """The lowest-index GPUs (what the NVIDIA device plugin hands out)."""
    del state, pod
    return candidates[0]


def scored_chooser(score: NodeScore, pick: GpuPick = first_candidate) -> NodeChooser:
    """A `plan_job` node chooser: the best-scoring feasible node (ties: lowest index)."""

    def choose(state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
        nodes = np.flatnonzero(mask)
        if not len(nodes):
            return None
        values = score(state, job.pod)[nodes]
        for node in nodes[np.argsort(-values, kind="stable")]:
            candidates = state.candidate_placements(int(node), job.pod)
            if candidates:
                return pick(state, job.pod, candidates)
        return None

    return choose


def held_gpus(state: ClusterState, job: Job) -> float:
    """GPU-equivalents a job holds right now (see the module docstring)."""
    request = job.pod.gpu
    total = 0.0
    for _pod, placement in state.holdings.get(job.id, ()):
        if request.kind == "share" and state.node_is_timeslice[placement.node]:
            total += request.milli / FULL_GPU_MILLI
        elif request.kind == "mig":
            total += request.compute_slices / COMPUTE_SLICES
        else:
            total += len(placement.gpus)
    return total


_SHARES_PACK: weakref.WeakKeyDictionary[ClusterState, dict[tuple[str, ...], bool]] = (
    weakref.WeakKeyDictionary()
)


def pod_hold(state: ClusterState, job: Job) -> float:
    """GPU-equivalents one pod of `job` will hold once placed (what quotas must charge).

    A share holds its milli / 1000 only if every GPU node it may use is time-sliced; where it
    could land on an exclusive GPU it is charged the whole GPU it would take there, so that a
    queue's charge before placement never understates its usage after.
    """
    request = job.pod.gpu
    if request.kind != "share":
        return request.gpu_equivalent
    cache = _SHARES_PACK.setdefault(state, {})
    packs = cache.get(job.allowed_models)
    if packs is None:
        usable = state.model_mask(job.allowed_models) & (state.node_gpu_count > 0)
        packs = cache[job.allowed_models] = bool(state.node_is_timeslice[usable].all())
    return request.milli / FULL_GPU_MILLI if packs else 1.0


def demand_gpus(state: ClusterState, job: Job, placed_pods: int = 0) -> float:
    """GPU-equivalents the job's not-yet-placed pods will hold (see `pod_hold`)."""
    return (job.pods - placed_pods) * pod_hold(state, job)


def water_fill(
    capacity_total: float,
    weights: Sequence[float],
    caps: Sequence[float],
    floors: Sequence[float] | None = None,
) -> list[float]:
    """Weighted max-min fair split of `capacity_total`, each entry between its floor and cap.

    Start every entry at its floor (when the floors exceed the capacity they are scaled down),
    then hand out what is left in proportion to the weights of the entries still below their
    caps, redistributing what capped entries cannot take. This is both Volcano's proportion
    plugin (floors 0, caps = demand) and KAI's fair share (floors = min(quota, demand)).
    """
    count = len(weights)
    caps_array = np.asarray(caps, dtype=np.float64)
    share = np.zeros(count) if floors is None else np.minimum(floors, caps_array).astype(float)
    if share.sum() > capacity_total > 0:
        share *= capacity_total / share.sum()
    left = capacity_total - share.sum()
    weight = np.asarray(weights, dtype=np.float64)
    for _ in range(count + 1):
        open_ = (share < caps_array - 1e-9) & (weight > 0)
        if left <= 1e-9 or not open_.any():
            break
        portion = left * weight * open_ / weight[open_].sum()
        grant = np.minimum(portion, caps_array - share)
        share += grant
        left -= grant.sum()
    return [float(x) for x in share]
