"""GPU fragmentation of nodes against a target workload, vectorised and kept current incrementally.

The measure is the FGD paper's (Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing
Workloads with Fragmentation Gradient Descent", USENIX ATC'23, Section 3), with the details of
the authors' simulator (`hkust-adsl/kubernetes-scheduler-simulator`, `pkg/utils/frag.go`):

* the target workload M is a distribution over typical pod types m = (milli-CPU, per-GPU
  milli-GPU, GPU count, allowed GPU models), with probabilities p_m. GPU models are part of the
  type, so a pod that may only run on T4 is a different type from the same request that may run
  anywhere. The typical types are the most frequent pod types (CPU-only ones included) whose
  cumulated share first reaches 95% of the workload's pods, re-normalised to sum to one (the
  authors' experiments: popularity threshold 95, increase step 1, CPU pods involved). Memory is
  not part of a type, as in the authors' simulator;
* the fragmentation of node n for type m, F_n(m), in milli-GPU:
  - all of n's free GPU capacity if m requests no GPU, may not run on n's GPU model, lacks CPU
    on n, or finds fewer than its GPU count of n's GPUs with its per-GPU milli free;
  - otherwise the free milli-GPU of n's GPUs with less than m's per-GPU milli free;
* F_n(M) = sum_m p_m F_n(m), the expected GPU capacity of n the next pod could not use.

A GPU's free capacity is 1000 milli minus what its pods hold, 0 once a time-sliced GPU has no
replica left for another pod. MIG GPUs count as having none: the paper has no MIG, and the
policies built on this place MIG instances by other rules.

Two pieces, both keyed to one `ClusterState` and both recomputing only the nodes that changed
since they last looked (a placement changes one node of ~1,200 in the openb cluster):

* `FreeGpus` (one per state, `free_gpus(state)`): every node's per-GPU free milli-GPU as a
  padded node x GPU matrix, its row sums, free CPU, and a per-node change stamp;
* `FragmentationIndex`: F_n(M) of every node, and the change Delta F that placing one pod on
  each GPU of given nodes would cause, which is FGD's gradient.
"""

from __future__ import annotations

import math
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gpuparley.envs.cluster import FULL_GPU_MILLI, ClusterState
from gpuparley.envs.jobs import Job, PodDemand

POPULARITY = 0.95
"""Share of the workload's pods the typical pod types must cover (the authors' setting)."""

GpuTypes = list[tuple[int, list[tuple[int, int, float]]]]
"""`TargetWorkload.gpu_types`: per request level, the (milli-CPU, GPU count, p) of its types."""

_SCALAR_BELOW = 8
"""Fewer nodes than this are scored one at a time in plain Python (`FragmentationIndex`)."""

_DECIMALS = 6
"""Fragmentation changes are rounded to 1e-6 milli-GPU so that a placement that leaves F
unchanged gives exactly 0 whatever order numpy sums in (FGD's integer score turns -1e-13 and 0
into different scores)."""


def pod_type(pod: PodDemand) -> tuple[int, int, int]:
    """(milli-CPU, per-GPU milli-GPU, GPU count) of a pod; a MIG instance counts as its share."""
    request = pod.gpu
    if request.kind == "whole":
        return pod.cpu_milli, FULL_GPU_MILLI, request.count
    if request.kind in ("share", "mig"):
        return pod.cpu_milli, request.milli_gpu, 1
    return pod.cpu_milli, 0, 0


@dataclass(frozen=True)
class TargetWorkload:
    """The typical pod types fragmentation is measured against (the module docstring's M)."""

    cpu: np.ndarray  # (T,) milli-CPU
    milli: np.ndarray  # (T,) per-GPU milli-GPU, 0 for a CPU-only type
    count: np.ndarray  # (T,) GPUs per pod
    models: tuple[tuple[str, ...], ...]  # (T,) allowed GPU models, () = any
    weight: np.ndarray  # (T,) probabilities summing to 1
    thresholds: np.ndarray = field(init=False)  # distinct per-GPU requests (D,)
    level: np.ndarray = field(init=False)  # (T,) index into thresholds
    _thresholds: list[int] = field(init=False, repr=False)  # the same, for the scalar form
    _weight_sum: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        thresholds, level = np.unique(np.maximum(self.milli, 1), return_inverse=True)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "_thresholds", thresholds.tolist())
        object.__setattr__(self, "_weight_sum", float(self.weight.sum()))

    @classmethod
    def from_jobs(cls, jobs: Iterable[Job], popularity: float = POPULARITY) -> TargetWorkload:
        """The typical types of every pod of `jobs` (a one-whole-GPU type when there are none).

        Types are ranked by pod count, ties by the larger (CPU, milli, count, models) first, as
        the authors' simulator sorts them; the shortest prefix reaching `popularity` is kept.
        """
        counter: Counter[tuple[int, int, int, tuple[str, ...]]] = Counter()
        for job in jobs:
            counter[(*pod_type(job.pod), job.allowed_models)] += job.pods
        if not counter:
            counter[(0, FULL_GPU_MILLI, 1, ())] = 1
        ranked = sorted(counter, key=lambda t: (counter[t], *t[:3], "|".join(t[3])), reverse=True)
        total = sum(counter.values())
        kept, covered = [], 0
        for key in ranked:
            if covered >= popularity * total:
                break
            kept.append(key)
            covered += counter[key]
        weight = np.array([counter[t] for t in kept], dtype=np.float64)
        return cls(
            cpu=np.array([t[0] for t in kept], dtype=np.int64),
            milli=np.array([t[1] for t in kept], dtype=np.int64),
            count=np.array([t[2] for t in kept], dtype=np.int64),
            models=tuple(t[3] for t in kept),
            weight=weight / weight.sum(),
        )

    def accessible(self, node_models: Iterable[str | None]) -> np.ndarray:
        """(nodes, T): whether type m may run on each node's GPU model (CPU nodes: unconstrained
        types only), the authors' `IsNodeAccessibleToPod`."""
        return np.array(
            [[not allowed or model in allowed for allowed in self.models] for model in node_models],
            dtype=bool,
        ).reshape(-1, len(self.models))

    def fragmentation(self, free: np.ndarray, cpu: np.ndarray, access: np.ndarray) -> np.ndarray:
        """F_n(M) of k nodes from their per-GPU free milli (k, GPUs), free CPU (k,) and
        `accessible` rows (k, T).

        Written as F = free total - sum_m p_m [m fits] x (free on the GPUs with room for m).
        Each GPU is ranked by how many of the distinct per-GPU requests it has room for, and
        per-rank counts and free sums come from one bincount each, so the cost grows with
        GPUs + distinct requests per node rather than their product.
        """
        k = len(free)
        levels = len(self.thresholds) + 1
        rank = np.searchsorted(self.thresholds, free, side="right")
        flat = (rank + np.arange(k)[:, None] * levels).ravel()
        count = np.bincount(flat, minlength=k * levels).reshape(k, levels)
        amount = np.bincount(flat, free.ravel(), minlength=k * levels).reshape(k, levels)
        # A GPU has room for request d when its rank exceeds d: suffix sums over the ranks.
        usable = np.cumsum(count[:, :0:-1], axis=1)[:, ::-1][:, self.level]
        room = np.cumsum(amount[:, :0:-1], axis=1)[:, ::-1][:, self.level]
        fits = access & (cpu[:, None] >= self.cpu) & (usable >= self.count) & (self.milli > 0)
        return amount.sum(axis=1) * self._weight_sum - (fits * room) @ self.weight

    def gpu_types(self, access: np.ndarray) -> GpuTypes:
        """The GPU types a node whose `accessible` row is `access` may run, grouped by per-GPU
        request: [(request level, [(milli-CPU, GPU count, p), ...]), ...], what
        `node_fragmentation` needs."""
        groups: dict[int, list[tuple[int, int, float]]] = {}
        for t in np.flatnonzero(access & (self.milli > 0)).tolist():
            groups.setdefault(int(self.level[t]), []).append(
                (int(self.cpu[t]), int(self.count[t]), float(self.weight[t]))
            )
        return sorted(groups.items())

    def node_fragmentation(self, free: list[int], cpu: int, types: GpuTypes) -> float:
        """F(M) of one node from its GPUs' free milli, free CPU and `gpu_types`: the same sum as
        `fragmentation`, in plain Python, about ten times cheaper for a single node than a
        numpy call (whose fixed cost dominates on one row)."""
        thresholds = self._thresholds
        levels = len(thresholds)
        count = [0] * (levels + 1)
        amount = [0] * (levels + 1)
        for gpu_free in free:
            rank = bisect_right(thresholds, gpu_free)
            count[rank] += 1
            amount[rank] += gpu_free
        usable, room = [0] * levels, [0] * levels
        gpus = spare = 0
        for level in range(levels, 0, -1):  # suffix sums: room for request `level - 1`
            gpus += count[level]
            spare += amount[level]
            usable[level - 1], room[level - 1] = gpus, spare
        fitting = 0.0
        for level, group in types:
            if room[level]:  # else no GPU has room for this request: nothing of it fits
                for type_cpu, needed, weight in group:
                    if cpu >= type_cpu and usable[level] >= needed:
                        fitting += weight * room[level]
        return sum(amount) * self._weight_sum - fitting


class FreeGpus:
    """Per-node free GPU capacity of one ClusterState, refreshed from the nodes that changed.

    `free` is nodes x (most GPUs on a node), GPU j of node n in column j (padding is 0);
    `total` its row sums; `cpu` the free milli-CPU; `stamp[n]` the `tick` of n's last change
    (any change: `ClusterState.node_changes`). It keeps no reference to the state, so a cache
    keyed by the state can let both go.
    """

    def __init__(self, state: ClusterState) -> None:
        width = max(1, int(state.node_gpu_count.max(initial=0)))
        self.free = np.zeros((state.node_count, width), dtype=np.int64)
        self.total = np.zeros(state.node_count, dtype=np.int64)
        self.cpu = np.zeros(state.node_count, dtype=np.int64)
        self.stamp = np.zeros(state.node_count, dtype=np.int64)
        self.tick = 0
        self._changes = state.node_changes.copy()
        self._version = state.version
        self._store(state, np.arange(state.node_count))

    def refresh(self, state: ClusterState) -> None:
        """Catch up with `state`: re-read the nodes that changed since the last look."""
        if state.version == self._version:
            return
        self._version = state.version
        nodes = (state.node_changes != self._changes).nonzero()[0]
        if len(nodes):
            self._changes[nodes] = state.node_changes[nodes]
            self._store(state, nodes)
            self.tick += 1
            self.stamp[nodes] = self.tick

    def _store(self, state: ClusterState, nodes: np.ndarray) -> None:
        for node in nodes.tolist():
            row = gpu_free_row(state, node)
            self.free[node, : len(row)] = row
            self.total[node] = sum(row)
            self.cpu[node] = state.cpu_free[node]


def gpu_free_row(state: ClusterState, node: int) -> list[int]:
    """Free milli-GPU of each GPU of one node (module docstring), in plain Python: a node has a
    handful of GPUs, where a numpy call costs more than the work."""
    gpus = state.gpus_of(node)
    used = state.gpu_used_milli[gpus.start : gpus.stop].tolist()
    slots = state.gpu_used_slots[gpus.start : gpus.stop].tolist()
    room = _replicas_or_none(state)[gpus.start : gpus.stop]
    return [FULL_GPU_MILLI - u if s < r else 0 for u, s, r in zip(used, slots, room, strict=True)]


def _replicas_or_none(state: ClusterState) -> list[int]:
    """Each GPU's replicas, 0 for a MIG GPU (never room here: module docstring); cached."""
    replicas = _REPLICAS.get(state)
    if replicas is None:
        replicas = _REPLICAS[state] = np.where(state.gpu_is_mig, 0, state.gpu_replicas).tolist()
    return replicas


_REPLICAS: weakref.WeakKeyDictionary[ClusterState, list[int]] = weakref.WeakKeyDictionary()
_FREE: weakref.WeakKeyDictionary[ClusterState, FreeGpus] = weakref.WeakKeyDictionary()


def distinct_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first occurrence of each distinct row, each row's position among them) of
    a matrix; each row compared as one byte string (~8x faster than `np.unique(axis=0)`)."""
    rows = np.ascontiguousarray(matrix)
    key = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, back = np.unique(key, return_index=True, return_inverse=True)
    return first, back.ravel()


def free_gpus(state: ClusterState) -> FreeGpus:
    """The state's `FreeGpus`, created on first use and brought up to date."""
    view = _FREE.get(state)
    if view is None:
        view = _FREE[state] = FreeGpus(state)
    else:
        view.refresh(state)
    return view


class FragmentationIndex:
    """F_n(M) of every node of one state, and the Delta F of placing a pod on a node's GPUs.

    A few nodes (what changed since the last look, usually one) are scored one at a time in
    plain Python, many (the first look at a demand) in one vectorised batch over their distinct
    states: numpy's fixed cost per call is ~10x the work on a single node.
    """

    def __init__(self, target: TargetWorkload, state: ClusterState) -> None:
        self.target = target
        self.access = target.accessible(n.gpu_model for n in state.spec.nodes)
        self.timeslice = state.node_is_timeslice
        # Nodes with the same GPU-model access and sharing mode: with the same free resources
        # they have the same F, so a large batch is evaluated once per distinct node.
        first, self.kind = distinct_rows(np.column_stack([self.access, self.timeslice]))
        self._types = [target.gpu_types(self.access[i]) for i in first]
        view = free_gpus(state)
        self.frag = target.fragmentation(view.free, view.cpu, self.access)
        self._tick = view.tick

    def node_fragmentation(self, state: ClusterState) -> np.ndarray:
        """F_n(M) of every node now (recomputed for the nodes changed since the last call)."""
        view = free_gpus(state)
        if view.tick != self._tick:
            rows = np.flatnonzero(view.stamp > self._tick)
            if len(rows) < _SCALAR_BELOW:
                for node in rows.tolist():
                    self.frag[node] = self.target.node_fragmentation(
                        view.free[node].tolist(), int(view.cpu[node]), self._types[self.kind[node]]
                    )
            else:
                self.frag[rows] = self.target.fragmentation(
                    view.free[rows], view.cpu[rows], self.access[rows]
                )
            self._tick = view.tick
        return self.frag

    def placement_deltas(
        self, state: ClusterState, pod: PodDemand, nodes: np.ndarray
    ) -> np.ndarray:
        """(len(nodes), GPUs): F after minus F before placing one `pod` on GPU j of each node.

        A share tries every GPU with room for it (on an exclusive node only an empty GPU, which
        it then holds whole); a whole-GPU pod takes the node's empty GPUs and a CPU-only pod
        none, so theirs is in column 0. inf where the pod cannot go.
        """
        if pod.gpu.kind == "mig":
            raise ValueError("fragmentation has no model of MIG instances")
        frag = self.node_fragmentation(state)
        view = free_gpus(state)
        if len(nodes) < _SCALAR_BELOW:
            out = np.array([self._node_deltas(view, frag, pod, node) for node in nodes.tolist()])
        else:
            signature = np.column_stack([view.free[nodes], view.cpu[nodes], self.kind[nodes]])
            first, back = distinct_rows(signature)
            out = self._batch_deltas(view, frag, pod, nodes[first])[back]
        return np.round(out.reshape(len(nodes), -1), _DECIMALS)

    def _share_take(self, nodes: np.ndarray | int, milli: int) -> np.ndarray | int:
        """Milli-GPU a share takes from one GPU of each node (a whole GPU on an exclusive one);
        a GPU fits it when it has that much free."""
        return np.where(self.timeslice[nodes], milli, FULL_GPU_MILLI)

    def _node_deltas(self, view: FreeGpus, frag: np.ndarray, pod: PodDemand, node: int) -> list:
        """`placement_deltas` of one node, in plain Python."""
        free = view.free[node].tolist()
        out = [math.inf] * len(free)
        cpu = int(view.cpu[node]) - pod.cpu_milli
        if cpu < 0:
            return out
        request, types, before = pod.gpu, self._types[self.kind[node]], frag[node]
        fragmentation = self.target.node_fragmentation
        if request.kind == "none":
            out[0] = fragmentation(free, cpu, types) - before
        elif request.kind == "whole":
            empty = [j for j, gpu_free in enumerate(free) if gpu_free == FULL_GPU_MILLI]
            if len(empty) >= request.count:
                after = list(free)
                for j in empty[: request.count]:
                    after[j] = 0
                out[0] = fragmentation(after, cpu, types) - before
        else:
            take = int(self._share_take(node, request.milli))
            by_free: dict[int, float] = {}  # GPUs with the same free capacity give the same F
            for j, gpu_free in enumerate(free):
                if gpu_free >= take:
                    if gpu_free not in by_free:
                        after = list(free)
                        after[j] -= take
                        by_free[gpu_free] = fragmentation(after, cpu, types) - before
                    out[j] = by_free[gpu_free]
        return out

    def _batch_deltas(
        self, view: FreeGpus, frag: np.ndarray, pod: PodDemand, nodes: np.ndarray
    ) -> np.ndarray:
        """`placement_deltas` of many nodes, vectorised."""
        free, access = view.free[nodes], self.access[nodes]
        cpu = view.cpu[nodes] - pod.cpu_milli
        before = frag[nodes]
        out = np.full(free.shape, np.inf)
        request = pod.gpu
        fragmentation = self.target.fragmentation
        if request.kind == "none":
            out[:, 0] = fragmentation(free, cpu, access) - before
        elif request.kind == "whole":
            empty = free == FULL_GPU_MILLI
            ok = np.flatnonzero(empty.sum(axis=1) >= request.count)
            take = empty[ok] & (np.cumsum(empty[ok], axis=1) <= request.count)
            after = np.where(take, 0, free[ok])
            out[ok, 0] = fragmentation(after, cpu[ok], access[ok]) - before[ok]
        else:
            take = np.asarray(self._share_take(nodes, request.milli))
            row, slot = np.nonzero(free >= take[:, None])
            # GPUs of one node with the same free capacity give the same F: evaluate one each.
            _, first, back = np.unique(
                row * (FULL_GPU_MILLI + 1) + free[row, slot], return_index=True, return_inverse=True
            )
            r, s = row[first], slot[first]
            after = free[r]
            after[np.arange(len(r)), s] -= take[r]
            out[row, slot] = (fragmentation(after, cpu[r], access[r]) - before[r])[back]
        out[cpu < 0] = np.inf
        return out
