"""Free GPU capacity as the placement rules see it, shared by the schedulers and the market.

A GPU's usable free capacity is what a new pod could still get from it: its free milli-GPU (a
MIG GPU's free compute slices as a share of 1000), 0 while it is down for a MIG re-layout or when
a time-sliced GPU has no replica left for another pod.
"""

from __future__ import annotations

import numpy as np

from gpuparley.envs.cluster import FULL_GPU_MILLI, ClusterState, PodPlacement
from gpuparley.envs.jobs import PodDemand
from gpuparley.envs.mig import COMPUTE_SLICES


def gpu_free_milli(state: ClusterState) -> np.ndarray:
    """Usable free milli-GPU of every GPU: 0 on a GPU that is down or has no replica left."""
    free = FULL_GPU_MILLI - state.gpu_used_milli
    mig_free = (COMPUTE_SLICES - state.mig_used_slices) * FULL_GPU_MILLI // COMPUTE_SLICES
    free = np.where(state.gpu_is_mig, mig_free, free)
    usable = (state.gpu_used_slots < state.gpu_replicas) | state.gpu_is_mig
    return np.where(usable & (state.gpu_down_until <= 0), free, 0)


def node_free_milli(state: ClusterState) -> np.ndarray:
    """Free milli-GPU per node (the sum over its GPUs)."""
    return np.bincount(
        state.gpu_node, weights=gpu_free_milli(state), minlength=state.node_count
    ).astype(np.float64)


def tightest_candidate(
    state: ClusterState, pod: PodDemand, candidates: list[PodPlacement]
) -> PodPlacement:
    """Pack: the GPU with the least free capacity that still takes the pod (shares and MIG)."""
    if len(candidates) == 1 or pod.gpu.kind == "whole":
        return candidates[0]
    free = gpu_free_milli(state)
    return min(candidates, key=lambda p: (int(free[p.gpus[0]]), p.gpus[0], p.instance))
