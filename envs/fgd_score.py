"""FGD: fragmentation gradient descent, scored exactly as the FGD paper's simulator scores it.

Weng et al., "Beware of Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation
Gradient Descent", USENIX ATC'23, Section 4; the authors' score plugin
`pkg/simulator/plugin/fgd_score.go` of `hkust-adsl/kubernetes-scheduler-simulator`.

For a pod and each feasible node n (the engine's filter), with F_n(M) the fragmentation of n
against the target workload M (`envs.fragmentation`: the run's typical pod types, per GPU model)
and F'_n(M) the same after placing the pod:

    score(n) = int(100 * sigmoid((F_n(M) - F'_n(M)) / 1000))      (Go's int64(): truncation)

A share is tried on every GPU of n with room for it; n's score is its best GPU's, and the pod
goes to the lowest-index GPU reaching that score. A whole-GPU pod takes n's lowest-index empty
GPUs and a CPU-only pod no GPU. The plugin has no normalisation across nodes; the top-scoring
node wins, among equal scores the one whose name sorts first (the authors' kube-scheduler fork,
see `envs.score_plugins`). The truncation makes ties common, so that rule matters: with upstream
kube-scheduler's random choice among ties FGD spreads pods, and allocates 90.8% instead of 95.5%
on seed 0 of the openb inflation experiment.

The sigmoid is monotone, so a node's best GPU is the one with the smallest increase of F; the
scores are computed from that per-node minimum. Beyond the paper: a share on an exclusive node
holds a whole GPU (`envs.fragmentation`), and a MIG pod is placed by best-fit's rule
(`envs.score_plugins`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from gpuparley.envs.cluster import ClusterState, PodPlacement
from gpuparley.envs.fragmentation import FragmentationIndex, TargetWorkload, free_gpus
from gpuparley.envs.jobs import PodDemand
from gpuparley.envs.score_plugins import MAX_SCORE

SIGMOID_SCALE = 1000.0
"""The fragmentation change (milli-GPU) is divided by this before the sigmoid, as the paper's."""


def fgd_score(change: np.ndarray) -> np.ndarray:
    """The plugin's integer score of a fragmentation change F' - F (inf: the pod cannot go)."""
    return np.trunc(1.0 / (1.0 + np.exp(change / SIGMOID_SCALE)) * MAX_SCORE).astype(np.int64)


class Fgd:
    """FGD's score plugin and GPU choice against one target workload (module docstring)."""

    def __init__(self, target: TargetWorkload) -> None:
        self.target = target
        self._states: weakref.WeakKeyDictionary[ClusterState, _StateCache] = (
            weakref.WeakKeyDictionary()
        )

    def _cache(self, state: ClusterState) -> _StateCache:
        cache = self._states.get(state)
        if cache is None:
            cache = self._states[state] = _StateCache(FragmentationIndex(self.target, state))
        return cache

    def score(self, state: ClusterState, pod: PodDemand, nodes: np.ndarray) -> np.ndarray:
        """Each node's score: its best GPU's (the one with the least increase of F)."""
        cache = self._cache(state)
        changes = cache.index.placement_deltas(state, pod, nodes)
        kept = cache.changes.get(pod)
        if kept is None:
            shape = (state.node_count, changes.shape[1])
            kept = cache.changes[pod] = (np.full(state.node_count, -1), np.empty(shape))
        kept[0][nodes] = free_gpus(state).tick
        kept[1][nodes] = changes
        return fgd_score(changes.min(axis=1))

    def select(self, state: ClusterState, pod: PodDemand, node: int) -> PodPlacement | None:
        """A share on the lowest-index GPU with the node's score; others as the device plugin."""
        if pod.gpu.kind != "share":
            return state.first_fit(pod, node)
        cache = self._cache(state)
        kept = cache.changes.get(pod)
        if kept is not None and kept[0][node] >= free_gpus(state).stamp[node]:
            changes = kept[1][node]
        else:
            changes = cache.index.placement_deltas(state, pod, np.array([node]))[0]
        slot = int(np.argmax(fgd_score(changes)))
        return PodPlacement(node, (int(state.node_first_gpu[node]) + slot,))


@dataclass
class _StateCache:
    """One state's fragmentation index, and per demand the per-GPU changes last scored on each
    node with the `FreeGpus` tick they were computed at (still valid while the node has not
    changed since), which `select` reuses."""

    index: FragmentationIndex
    changes: dict[PodDemand, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
