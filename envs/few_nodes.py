"""Node tests of the placement engine in plain Python, for clusters of a few nodes.

`ClusterState` keeps its per-node numbers in numpy arrays so that a scheduler can filter
thousands of nodes in one expression. On a few nodes numpy's cost per call is most of the work
(each of the half-dozen operations of a node mask costs more than a Python loop over the
nodes), and the market asks after every change of a small cluster. So the state answers its
hottest questions through these functions when it has at most `FEW_NODES` nodes; each gives
exactly what the vectorised form (`ClusterState.feasible_mask`) gives, which
`tests/test_cluster_properties.py` checks.
"""

from __future__ import annotations

from collections.abc import Iterator
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


def feasible_list(
    state: ClusterState, pod: PodDemand, allowed_models: tuple[str, ...] = ()
) -> list[bool]:
    """Per node, whether one pod of this demand fits it now: `state.feasible_mask` as a list."""
    return list(_fits_by_node(state, pod, allowed_models))


def any_feasible_node(
    state: ClusterState, pod: PodDemand, allowed_models: tuple[str, ...] = ()
) -> bool:
    """`state.feasible_mask(pod, allowed_models).any()` (stops at the first node that fits)."""
    return any(_fits_by_node(state, pod, allowed_models))


def _fits_by_node(
    state: ClusterState, pod: PodDemand, allowed_models: tuple[str, ...]
) -> Iterator[bool]:
    """Node after node, whether one pod of this demand fits it now: CPU and memory, then (a
    GPU pod) an allowed GPU model and room of the request's kind, as `feasible_mask` tests."""
    request = pod.gpu
    kind = request.kind
    room: list[int] = []  # per node: its free GPUs (whole, share) or free instances (MIG)
    if kind == "mig":
        instances = state.node_mig_free.get(request.profile or "")
        room = instances.tolist() if instances is not None else [0] * state.node_count
    elif kind != "none":
        room = state.node_free_gpus.tolist()
    largest_share = state.node_max_free_milli.tolist() if kind == "share" else []
    timeslice = state.node_is_timeslice.tolist() if kind == "share" else []
    allowed = state.model_mask(allowed_models).tolist() if kind != "none" else []
    cpu, memory = state.cpu_free.tolist(), state.mem_free.tolist()
    for n in range(state.node_count):
        if cpu[n] < pod.cpu_milli or memory[n] < pod.memory_mib:
            yield False
        elif kind == "none":
            yield True
        elif not allowed[n]:
            yield False
        elif kind == "whole":
            yield room[n] >= request.count
        elif kind == "share":
            yield largest_share[n] >= request.milli if timeslice[n] else room[n] >= 1
        else:
            yield room[n] > 0
