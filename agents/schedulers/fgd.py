"""FGD: fragmentation-gradient-descent placement (Weng et al., ATC'23, Alibaba openb trace).

Modelled, after the paper's definitions:

* the *target workload* M is the distribution of pod requests (per-GPU milli-GPU, GPU count,
  CPU, memory), estimated from the scenario's jobs (every GPU-requesting pod, weighted by its
  pod count);
* the fragmentation of a node w.r.t. one pod type m is the free GPU capacity that m could not
  use there: all of the node's free milli-GPU if m does not fit the node at all (CPU, memory or
  not enough GPUs with room for it), otherwise the free milli-GPU of the GPUs whose free share
  is below m's per-GPU request (a partly used GPU is a fragment for a whole-GPU pod);
  F_n(M) = sum_m p_m F_n(m) is the expected fragmentation;
* each pod goes to the (node, GPU) whose placement increases F_n(M) the least (the gradient
  step); ties go to the lowest node and GPU index. Multi-GPU pods take the node's lowest-index
  free GPUs (all free GPUs are interchangeable for them).

Also the paper's baselines: `best-fit` (the node with the least free milli-GPU left after the
placement, then the tightest GPU on it) and `random-fit` (uniform among feasible nodes, then
among the GPUs that fit, from a seeded generator). As a simulator scheduler each is the
arrival-order gang-atomic loop of `base.GangPlacer`; the inflation experiment
(`gpuparley.evaluation.inflation_protocol`) calls the same `choose` directly.

Left out: the GPU-model affinity of pods in the target distribution (types are pooled across
models), MIG (a MIG pod, or a cluster whose feasible nodes include MIG ones, falls back to
best-fit), and the paper's other baselines (dot-product, GPU-packing, GPU-clustering).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpuparley.agents.schedulers.base import GangPlacer, SchedulerContext
from gpuparley.agents.scoring import (
    capacity,
    gpu_free_milli,
    least_free_gpu,
    scored_chooser,
    tightest_candidate,
)
from gpuparley.envs.cluster import FULL_GPU_MILLI, ClusterState, PodPlacement
from gpuparley.envs.jobs import GPURequest, Job
from gpuparley.envs.planner import NodeChooser


@dataclass(frozen=True)
class TargetWorkload:
    """The pod-type distribution fragmentation is measured against (FGD's M)."""

    thresholds: np.ndarray  # distinct per-GPU milli requests (D,)
    type_threshold: np.ndarray  # index into thresholds per type (T,)
    count: np.ndarray  # GPUs per pod (T,)
    cpu: np.ndarray  # (T,)
    mem: np.ndarray  # (T,)
    weight: np.ndarray  # probabilities (T,)

    @classmethod
    def from_jobs(cls, jobs: Sequence[Job]) -> TargetWorkload:
        """Every GPU-requesting pod of `jobs` (weighted by pods); a whole-GPU pod if none."""
        counter: Counter[tuple[int, int, int, int]] = Counter()
        for job in jobs:
            request = job.pod.gpu
            if request.kind == "whole":
                key = (FULL_GPU_MILLI, request.count)
            elif request.kind == "share":
                key = (request.milli, 1)
            elif request.kind == "mig":
                key = (request.milli_gpu, 1)
            else:
                continue
            counter[(*key, job.pod.cpu_milli, job.pod.memory_mib)] += job.pods
        if not counter:
            counter[(FULL_GPU_MILLI, 1, 0, 0)] = 1
        types = sorted(counter)
        per_gpu = np.array([t[0] for t in types], dtype=np.int64)
        thresholds, type_threshold = np.unique(per_gpu, return_inverse=True)
        weight = np.array([counter[t] for t in types], dtype=np.float64)
        return cls(
            thresholds=thresholds,
            type_threshold=type_threshold,
            count=np.array([t[1] for t in types], dtype=np.int64),
            cpu=np.array([t[2] for t in types], dtype=np.int64),
            mem=np.array([t[3] for t in types], dtype=np.int64),
            weight=weight / weight.sum(),
        )

    def fragmentation(self, free: np.ndarray, cpu: np.ndarray, mem: np.ndarray) -> np.ndarray:
        """Expected fragmentation F_n(M) of nodes given per-GPU free milli (rows) and CPU/memory.

        Written as F = free total - sum_m p_m fit_m x (free on GPUs with room for m), and the
        per-threshold counts come from one bincount over (node, threshold rank) rather than a
        node x GPU x threshold comparison, which keeps a 1,213-node cluster at ~1 ms per call.
        """
        k = free.shape[0]
        levels = len(self.thresholds) + 1
        rank = np.searchsorted(self.thresholds, free, side="right")  # thresholds <= free
        flat = (np.arange(k)[:, None] * levels + rank).ravel()
        count = np.bincount(flat, minlength=k * levels).reshape(k, levels)
        amount = np.bincount(flat, weights=free.ravel(), minlength=k * levels).reshape(k, levels)
        # GPUs whose free share reaches threshold d have rank > d: suffix sums over ranks.
        usable = np.cumsum(count[:, ::-1], axis=1)[:, ::-1][:, 1:]
        room = np.cumsum(amount[:, ::-1], axis=1)[:, ::-1][:, 1:]
        fit = (
            (cpu[:, None] >= self.cpu)
            & (mem[:, None] >= self.mem)
            & (usable[:, self.type_threshold] >= self.count)
        )
        usable_free = (fit * room[:, self.type_threshold]) @ self.weight
        return amount.sum(axis=1) - usable_free


@dataclass
class _NodeFragmentation:
    """Per-node F_n(M) and the free resources it was computed from."""

    free: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    frag: np.ndarray


class FragmentationChooser:
    """The FGD node chooser: the placement with the smallest fragmentation increase."""

    def __init__(self, target: TargetWorkload) -> None:
        self.target = target
        self.fallback = scored_chooser(least_free_gpu, tightest_candidate)
        self._cache: weakref.WeakKeyDictionary[ClusterState, _NodeFragmentation] = (
            weakref.WeakKeyDictionary()
        )

    def node_fragmentation(self, state: ClusterState, free: np.ndarray) -> np.ndarray:
        """F_n(M) of every node, recomputed only for nodes whose free resources changed."""
        cached = self._cache.get(state)
        if cached is None:
            cached = self._cache[state] = _NodeFragmentation(
                free.copy(),
                state.cpu_free.copy(),
                state.mem_free.copy(),
                self.target.fragmentation(free, state.cpu_free, state.mem_free),
            )
            return cached.frag
        changed = np.flatnonzero(
            (free != cached.free).any(axis=1)
            | (state.cpu_free != cached.cpu)
            | (state.mem_free != cached.mem)
        )
        if len(changed):
            cached.free[changed] = free[changed]
            cached.cpu[changed] = state.cpu_free[changed]
            cached.mem[changed] = state.mem_free[changed]
            cached.frag[changed] = self.target.fragmentation(
                free[changed], state.cpu_free[changed], state.mem_free[changed]
            )
        return cached.frag

    def __call__(self, state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
        pod = job.pod
        nodes = np.flatnonzero(mask)
        if not len(nodes):
            return None
        if pod.gpu.kind == "mig" or state.node_is_mig[nodes].any():
            return self.fallback(state, job, mask)
        all_index = capacity(state).gpu_index
        all_free = np.where(all_index >= 0, gpu_free_milli(state)[np.maximum(all_index, 0)], 0)
        before = self.node_fragmentation(state, all_free)[nodes]
        index, free = all_index[nodes], all_free[nodes]
        cpu, mem = state.cpu_free[nodes], state.mem_free[nodes]
        rows, gpu_slot, after_free = self._candidates(state, pod.gpu.kind, pod.gpu, nodes, free)
        if not len(rows):
            return None
        after = self.target.fragmentation(
            after_free, cpu[rows] - pod.cpu_milli, mem[rows] - pod.memory_mib
        )
        # Rounded so that equal increases tie exactly and go to the lowest index.
        best = int(np.argmin(np.round(after - before[rows], 6)))
        node = int(nodes[rows[best]])
        if pod.gpu.kind in ("none", "whole"):
            return state.first_fit(pod, node)
        gpu = int(index[rows[best], gpu_slot[best]])
        return next((p for p in state.candidate_placements(node, pod) if p.gpus[0] == gpu), None)

    @staticmethod
    def _candidates(
        state: ClusterState, kind: str, request: GPURequest, nodes: np.ndarray, free: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(node row, GPU slot, free matrix after) of every distinct way to place the pod."""
        k = len(nodes)
        if kind == "none":
            return np.arange(k), np.zeros(k, dtype=np.int64), free
        if kind == "whole":
            whole = free == FULL_GPU_MILLI
            take = whole & (np.cumsum(whole, axis=1) <= request.count)
            ok = whole.sum(axis=1) >= request.count
            return (
                np.flatnonzero(ok),
                np.zeros(int(ok.sum()), np.int64),
                np.where(take, 0, free)[ok],
            )
        shared = state.node_is_timeslice[nodes]
        fits = np.where(shared[:, None], free >= request.milli, free == FULL_GPU_MILLI)
        rows, slots = np.nonzero(fits)
        # GPUs of one node with the same free share are interchangeable: keep the first.
        _, first = np.unique(rows * (FULL_GPU_MILLI + 1) + free[rows, slots], return_index=True)
        first.sort()
        rows, slots = rows[first], slots[first]
        after = free[rows].copy()
        taken = np.where(shared[rows], request.milli, FULL_GPU_MILLI)
        after[np.arange(len(rows)), slots] -= taken
        return rows, slots, after


def fgd(context: SchedulerContext) -> GangPlacer:
    """FGD placement with the target workload estimated from the context's jobs."""
    return GangPlacer(FragmentationChooser(TargetWorkload.from_jobs(context.jobs)), "fgd")


def best_fit(context: SchedulerContext) -> GangPlacer:
    """The FGD paper's best-fit baseline."""
    del context
    return GangPlacer(scored_chooser(least_free_gpu, tightest_candidate), "best-fit")


def random_chooser(seed: int) -> NodeChooser:
    """Uniform among feasible nodes, then among the placements on it (seeded)."""
    rng = np.random.default_rng(seed)

    def choose(state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
        nodes = np.flatnonzero(mask)
        while len(nodes):
            pick = int(rng.integers(len(nodes)))
            candidates = state.candidate_placements(int(nodes[pick]), job.pod)
            if candidates:
                return candidates[int(rng.integers(len(candidates)))]
            nodes = np.delete(nodes, pick)
        return None

    return choose


def random_fit(context: SchedulerContext) -> GangPlacer:
    """The FGD paper's random-fit baseline, seeded from the context."""
    return GangPlacer(random_chooser(context.seed), "random-fit")
