"""The FGD paper's baseline placement policies, as the authors' simulator runs them.

Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
Gradient Descent", USENIX ATC'23, Section 5 compares FGD with Random, DotProd, GpuClustering,
GpuPacking and BestFit. Each is one kube-scheduler score plugin in the authors' simulator
(`hkust-adsl/kubernetes-scheduler-simulator`, `pkg/simulator/plugin/*_score.go`), run alone:

1. filter: the nodes where the pod fits (here the engine's `feasible_nodes` mask: CPU, memory,
   GPU model and GPU room);
2. score every feasible node with the plugin, an integer (Go's `int64()` truncates toward 0);
3. BestFit only: normalise across the feasible nodes, `(s - min) * 100 // (max - min)`, all 0
   when every score is equal (the plugin's NormalizeScore; the others have none);
4. take the top-scoring node; among equal scores the one whose name sorts first. The simulator
   builds on a fork of kube-scheduler (`mental2008/kubernetes v1.20.5-minor`) whose `selectHost`
   replaces upstream's random choice among ties by the smallest node name "for
   reproducibility"; the integer scores tie often, so this packs pods onto low-named nodes;
5. choose the GPUs on that node (the simulator's `gpuSelMethod`): `best` for all but Random, i.e.
   a share goes to the GPU with the least free milli-GPU that still fits it (the lowest index
   among equals), whole-GPU pods to the lowest-index empty GPUs; Random picks a uniformly random
   GPU that fits a share.

The scores, for a pod asking c milli-CPU and g milli-GPU in total (k GPUs of m milli each), on a
node with C milli-CPU and G milli-GPU free (G: the sum over its GPUs), MaxSpecCpu = 128,000 and
MaxSpecGpu = 8,000 (the simulator's fixed normalisers):

* best-fit: `int(100 * (1 - (0.5 (C - c) / 128000 + 0.5 (G - g) / 8000)))`, then normalised;
* dot-product (Tetris' alignment as the authors configured it: merged GPU dimension, max
  normalisation): `int(100 * (1 - ((C/128000)(c/128000) + (G/8000)(g/8000)) / 2))`;
* gpu-packing: 0 for a CPU-only pod; on a node whose GPUs are all empty `max(33 - n, n)` (n its
  GPU count); else if the pod needs empty GPUs (a whole-GPU pod, or a share that only fits an
  empty GPU: j of them) `max(50 - j, 33)`; else (a share on a partly used GPU with f milli free)
  `max(100 - (f * 100 // 1000) // 10, 50)`;
* gpu-clustering: 0 for a CPU-only pod; else `25 * (8000 - G) // 8000` plus 75 if the node runs
  only pods of the pod's shape (a share, or k whole GPUs), 50 if it runs that shape among others,
  25 if it runs no GPU pod, 0 if it runs only other shapes;
* random: one uniformly random feasible node scores 100, the others 0 (its PreScore draws it;
  `RandomChooser` draws it directly).

Random draws from a generator seeded with the run's seed; the other policies are deterministic.

Generalised beyond the paper (which has neither): on an exclusive (not time-sliced) node a share
holds a whole GPU, so it is scored as needing an empty GPU there; a MIG pod is placed by
best-fit's rule with its MIG share as g and each MIG GPU's free compute as its free milli-GPU, on
the tightest GPU with a free instance (random: a random node and instance).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpuparley.envs.cluster import FULL_GPU_MILLI, ClusterState, PodPlacement, gpu_shape
from gpuparley.envs.fragmentation import free_gpus, gpu_free_row
from gpuparley.envs.free_capacity import node_free_milli, tightest_candidate
from gpuparley.envs.jobs import Job, PodDemand

MAX_SPEC_CPU = 128_000
MAX_SPEC_GPU = 8_000
MAX_SCORE = 100
_NO_SCORE = np.iinfo(np.int64).min  # below any score: an infeasible node's

PluginScore = Callable[[ClusterState, PodDemand, np.ndarray], np.ndarray]
"""Integer score of each of the given nodes for one pod (higher is better)."""

GpuSelect = Callable[[ClusterState, PodDemand, int], PodPlacement | None]
"""Where on the chosen node the pod goes."""

_WITHIN_SPEC: weakref.WeakKeyDictionary[ClusterState, bool] = weakref.WeakKeyDictionary()
_NAME_RANK: weakref.WeakKeyDictionary[ClusterState, tuple[bool, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)  # (whether names sort in index order, each node's rank by name)


def go_div(a: np.ndarray, b: int) -> np.ndarray:
    """Go's integer division (truncates toward zero) of an int array by a positive int."""
    return np.where(a >= 0, a // b, -(-a // b))


def normalise(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The authors' NormalizeScore over the feasible (`mask`) nodes: min-max to 0..100 with
    integer division (all 0 if they are equal).

    It keeps the order and the ties of scores spanning at most 100 (each step of the old range
    is at least one step of the new), so it can change the winner only when they span more, and
    is applied only then: the winner is all that is used.
    """
    feasible = scores[mask]
    low, high = int(feasible.min()), int(feasible.max())
    if high - low <= MAX_SCORE:
        return scores
    return (scores - low) * MAX_SCORE // (high - low)


def within_spec(state: ClusterState) -> bool:
    """Whether no node has more CPU or GPU than the simulator's MaxSpec normalisers: then a
    feasible node's best-fit score is within 0..100 and the normalisation changes nothing."""
    known = _WITHIN_SPEC.get(state)
    if known is None:
        cpu = max((node.cpu_milli for node in state.spec.nodes), default=0)
        gpus = int(state.node_gpu_count.max(initial=0))
        known = _WITHIN_SPEC[state] = cpu <= MAX_SPEC_CPU and gpus * FULL_GPU_MILLI <= MAX_SPEC_GPU
    return known


def gpu_request(state: ClusterState, pod: PodDemand, nodes: np.ndarray) -> np.ndarray:
    """Milli-GPU the pod takes on each node (a share holds a whole GPU on an exclusive node)."""
    request = pod.gpu
    if request.kind != "share":
        return np.full(len(nodes), request.milli_gpu, dtype=np.int64)
    return np.where(state.node_is_timeslice[nodes], request.milli, FULL_GPU_MILLI)


def free_resources(
    state: ClusterState, pod: PodDemand, nodes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(C, G) of each node: free milli-CPU and its GPUs' free milli-GPU (MIG GPUs counted only
    for a MIG pod)."""
    view = free_gpus(state)
    if pod.gpu.kind == "mig":
        return view.cpu[nodes], node_free_milli(state)[nodes].astype(np.int64)
    return view.cpu[nodes], view.total[nodes]


def best_fit_score(state: ClusterState, pod: PodDemand, nodes: np.ndarray) -> np.ndarray:
    """BestFit (`best_fit_score.go`): least CPU and GPU left after the placement, before the
    normalisation across nodes."""
    cpu, gpu = free_resources(state, pod, nodes)
    cpu_left = cpu - pod.cpu_milli
    gpu_left = gpu - gpu_request(state, pod, nodes)
    used = cpu_left / MAX_SPEC_CPU * 0.5 + gpu_left / MAX_SPEC_GPU * 0.5
    return np.trunc((1.0 - used) * MAX_SCORE).astype(np.int64)


def dot_product_score(state: ClusterState, pod: PodDemand, nodes: np.ndarray) -> np.ndarray:
    """DotProd (`dot_product_score.go`, merged GPU dimension, max normalisation): the smaller
    the dot product of free and requested resources, the higher the score."""
    cpu, gpu = free_resources(state, pod, nodes)
    demand = gpu_request(state, pod, nodes)
    dot = (cpu / MAX_SPEC_CPU) * (pod.cpu_milli / MAX_SPEC_CPU) + (gpu / MAX_SPEC_GPU) * (
        demand / MAX_SPEC_GPU
    )
    score = np.trunc(MAX_SCORE * (1.0 - dot / 2)).astype(np.int64)
    return np.where(cpu >= pod.cpu_milli, score, 0)


def gpu_packing_score(state: ClusterState, pod: PodDemand, nodes: np.ndarray) -> np.ndarray:
    """GpuPacking (`gpu_packing_score.go`): shared GPUs first, then empty GPUs of used nodes,
    then empty nodes (fewest GPUs first)."""
    request = pod.gpu
    if request.kind == "none":
        return np.zeros(len(nodes), dtype=np.int64)
    free = free_gpus(state).free[nodes]
    empty = (free == FULL_GPU_MILLI).sum(axis=1)
    gpus = state.node_gpu_count[nodes]
    if request.kind == "whole":
        score = np.full(len(nodes), max(MAX_SCORE // 2 - request.count, MAX_SCORE // 3))
    else:
        need = gpu_request(state, pod, nodes)[:, None]
        tightest = np.where(free >= need, free, FULL_GPU_MILLI + 1).min(axis=1)
        shared = np.maximum(MAX_SCORE - (tightest * 100 // FULL_GPU_MILLI) // 10, MAX_SCORE // 2)
        score = np.where(tightest < FULL_GPU_MILLI, shared, max(MAX_SCORE // 2 - 1, MAX_SCORE // 3))
    return np.where(empty == gpus, np.maximum(MAX_SCORE // 3 - empty, empty), score)


def gpu_clustering_score(state: ClusterState, pod: PodDemand, nodes: np.ndarray) -> np.ndarray:
    """GpuClustering (`gpu_clustering_score.go`): nodes already running pods of the same shape
    first, then mixed nodes with it, then idle nodes; fuller nodes first within each band."""
    if pod.gpu.kind == "none":
        return np.zeros(len(nodes), dtype=np.int64)
    pods = state.node_gpu_pods[nodes]
    shapes = (pods > 0).sum(axis=1)
    same = pods[:, gpu_shape(pod.gpu)] > 0
    band = np.where(same, np.where(shapes == 1, 75, 50), np.where(shapes == 0, 25, 0))
    gpu = free_resources(state, pod, nodes)[1]
    fullness = go_div(MAX_SCORE // 4 * (MAX_SPEC_GPU - gpu), MAX_SPEC_GPU)
    return fullness + band


def best_gpu(state: ClusterState, pod: PodDemand, node: int) -> PodPlacement | None:
    """gpuSelMethod `best`: the fullest GPU that fits a share; the lowest-index empty GPUs."""
    return _select_gpu(state, pod, node, lambda fitting, free: min(fitting, key=free.__getitem__))


class RandomChooser:
    """Random (`random_score.go`) as a `plan_job` node chooser: its PreScore draws one feasible
    node uniformly, which alone scores 100; then gpuSelMethod `random` draws a GPU that fits a
    share (or a MIG instance) uniformly. One seeded generator draws both."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
        nodes = np.flatnonzero(mask)
        if not len(nodes):
            return None
        pod, node = job.pod, int(nodes[self.rng.integers(len(nodes))])
        if pod.gpu.kind == "mig":
            candidates = state.candidate_placements(node, pod)
            return candidates[int(self.rng.integers(len(candidates)))] if candidates else None
        return _select_gpu(
            state, pod, node, lambda fitting, free: fitting[int(self.rng.integers(len(fitting)))]
        )


def _select_gpu(
    state: ClusterState,
    pod: PodDemand,
    node: int,
    pick: Callable[[list[int], list[int]], int],
) -> PodPlacement | None:
    """The placement on `node`; `pick(fitting, free)` chooses among the GPUs (positions on the
    node) that fit a share, given every GPU's free milli-GPU. In plain Python: a node has a
    handful of GPUs."""
    request = pod.gpu
    if request.kind == "none":
        return PodPlacement(node)
    if request.kind == "mig":
        return tightest_candidate(state, pod, state.candidate_placements(node, pod))
    gpus = state.gpus_of(node)
    free = gpu_free_row(state, node)
    if request.kind == "whole":
        empty = [j for j, gpu_free in enumerate(free) if gpu_free == FULL_GPU_MILLI]
        if len(empty) < request.count:
            return None
        return PodPlacement(node, tuple(gpus.start + j for j in empty[: request.count]))
    need = request.milli if state.node_is_timeslice[node] else FULL_GPU_MILLI
    fitting = [j for j, gpu_free in enumerate(free) if gpu_free >= need]
    return PodPlacement(node, (gpus.start + pick(fitting, free),)) if fitting else None


def top_node(state: ClusterState, scores: np.ndarray, mask: np.ndarray) -> int:
    """The feasible (`mask`) node with the highest score (of every node); among equals, the one
    whose name sorts first (where names sort in index order, as in openb: the first one)."""
    known = _NAME_RANK.get(state)
    if known is None:
        order = np.argsort([node.name for node in state.spec.nodes], kind="stable")
        known = _NAME_RANK[state] = (bool((order == np.arange(len(order))).all()), order.argsort())
    in_index_order, rank = known
    masked = np.where(mask, scores, _NO_SCORE)
    if in_index_order:
        return int(np.argmax(masked))
    top = np.flatnonzero(masked == masked.max())
    return int(top[np.argmin(rank[top])])


class PluginChooser:
    """A `plan_job` node chooser running one score plugin as the authors' simulator does
    (module docstring, steps 1-5); a MIG pod is placed by best-fit.

    A deterministic plugin's score of each node is kept per pod demand, with the `FreeGpus`
    tick it was computed at, and recomputed only for feasible nodes that changed since: a
    placement costs a look-up over the feasible nodes rather than a fresh score of each.
    """

    def __init__(self, score: PluginScore, select: GpuSelect, normalised: bool = False) -> None:
        self.score = score
        self.select = select
        self.normalised = normalised
        self._scores: weakref.WeakKeyDictionary[ClusterState, dict[PodDemand, _Scores]] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
        feasible = mask.nonzero()[0]  # flatnonzero of a 1-D mask, without its wrapper
        if len(feasible) == 0:
            return None
        pod = job.pod
        if len(feasible) == 1:  # the top node whatever the scores: skip scoring
            select = best_gpu if pod.gpu.kind == "mig" else self.select
            return select(state, pod, int(feasible[0]))
        score, select, normalised = self.score, self.select, self.normalised
        if pod.gpu.kind == "mig":
            score, select, normalised = best_fit_score, best_gpu, True
        scores = self._current(state, pod, score, mask)
        if normalised and not within_spec(state):
            scores = normalise(scores, mask)
        return select(state, pod, top_node(state, scores, mask))

    def _current(
        self, state: ClusterState, pod: PodDemand, score: PluginScore, mask: np.ndarray
    ) -> np.ndarray:
        """The plugin's scores of every node for `pod`, current on the feasible (`mask`) ones:
        from the cache where still valid."""
        view = free_gpus(state)
        cache = self._scores.setdefault(state, {})
        kept = cache.get(pod)
        if kept is None:
            kept = cache[pod] = _Scores(
                np.full(state.node_count, -1), np.zeros(state.node_count, dtype=np.int64)
            )
        stale = (mask & (kept.tick < view.stamp)).nonzero()[0]
        if len(stale):
            kept.scores[stale] = score(state, pod, stale)
            kept.tick[stale] = view.tick
        return kept.scores


@dataclass
class _Scores:
    tick: np.ndarray  # (nodes,) the FreeGpus tick each score was computed at, -1 never
    scores: np.ndarray  # (nodes,)
