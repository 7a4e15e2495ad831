"""Node tests of the placement engine in plain Python, for clusters of a few nodes.

`ClusterState` keeps its per-node numbers in numpy arrays so that a scheduler can filter
thousands of nodes in one expression. On a few nodes numpy's cost per call is most of the work
(each of the half-dozen operations of a node mask costs more than a Python loop over the
nodes), and the market asks after every change of a small cluster. So the state answers its
hottest questions through these functions when it has at most `FEW_NODES` nodes; each gives
exactly what the vectorised form gives (`tests/test_cluster_properties.py` checks that).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gpuparley.envs.cluster import ClusterState
    from gpuparley.envs.jobs import PodDemand

FEW_NODES = 64


def largest(values: np.ndarray) -> int:
    """`values.max(initial=0)` of a per-node array."""
    if len(values) <= FEW_NODES:
        return max([0, *values.tolist()])
    return int(values.max(initial=0))


def any_feasible_node(
    state: ClusterState, pod: PodDemand, allowed_models: tuple[str, ...] = ()
) -> bool:
    """`state.feasible_nodes(pod, allowed_models).any()`, node by node."""
    request = pod.gpu
    kind = request.kind
    room: list[int] = []  # per node: its free GPUs (whole, share) or free instances (MIG)
    if kind == "mig":
        instances = state.node_mig_free.get(request.profile or "")
        if instances is None:
            return False
        room = instances.tolist()
    elif kind != "none":
        room = state.node_free_gpus.tolist()
    largest_share = state.node_max_free_milli.tolist() if kind == "share" else []
    timeslice = state.node_is_timeslice.tolist() if kind == "share" else []
    allowed = state.model_mask(allowed_models).tolist() if kind != "none" else []
    cpu, memory = state.cpu_free.tolist(), state.mem_free.tolist()
    for n in range(state.node_count):
        if cpu[n] < pod.cpu_milli or memory[n] < pod.memory_mib:
            continue
        if kind == "none":
            return True
        if not allowed[n]:
            continue
        if kind == "whole":
            fits = room[n] >= request.count
        elif kind == "share":
            fits = largest_share[n] >= request.milli if timeslice[n] else room[n] >= 1
        else:
            fits = room[n] > 0
        if fits:
            return True
    return False
