"""Planning where a whole job goes, shared by every central scheduler and the market.

A gang must be placed all at once, but each pod's choice changes what is left for the next. The
planner therefore places pods one at a time on the live `ClusterState` (which checks every rule),
then takes them back out and returns the plan; the caller commits the plan atomically through the
simulator. Nothing is left half-placed whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gpuparley.envs.cluster import Binding, ClusterState, PodPlacement, any_node
from gpuparley.envs.jobs import Job

NodeChooser = Callable[[ClusterState, Job, np.ndarray], "PodPlacement | None"]
"""Given the state, the job and the feasible-node mask for its next pod, pick a placement."""


def plan_job(state: ClusterState, job: Job, choose: NodeChooser) -> list[Binding] | None:
    """Placements for every not-yet-placed pod of `job`, or None if some pod cannot fit."""
    placed = {pod for pod, _ in state.holdings.get(job.id, ())}
    todo = [pod for pod in range(job.pods) if pod not in placed]
    plan: list[Binding] = []
    bound = 0
    try:
        for pod_index in todo:
            mask = state.feasible_nodes(job.pod, job.allowed_models)
            placement = choose(state, job, mask) if any_node(mask) else None
            if placement is None:
                return None
            plan.append((pod_index, placement))
            # The next pod must see this one's resources taken. The last one need not be bound
            # when the job held nothing: binding and unbinding it would change nothing.
            if len(plan) < len(todo) or placed:
                state.bind(job, [(pod_index, placement)])
                bound += 1
        return plan
    finally:
        _unbind(state, job, bound)


def _unbind(state: ClusterState, job: Job, count: int) -> None:
    """Take back the last `count` pods the planner placed for `job`."""
    if not count:
        return
    held = state.release(job)
    keep = held[: len(held) - count]
    if keep:
        state.bind(job, keep)


def first_fit_choice(state: ClusterState, job: Job, mask: np.ndarray) -> PodPlacement | None:
    """The lowest-index feasible node, and on it the lowest-index GPUs or instance."""
    for node in mask.nonzero()[0].tolist():
        placement = state.first_fit(job.pod, node)
        if placement is not None:
            return placement
    return None
