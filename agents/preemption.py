"""Choosing whom to evict so that a waiting job fits: shared by every preempting scheduler.

kube-scheduler's PriorityClass preemption, Volcano's and KAI's reclaim, Kueue's cohort
preemption and KAI's consolidation all ask the same question: "if these jobs were gone, would
the waiting job fit, and which is the shortest prefix of my ordered victim list that makes it
fit?". The answer is found on the live `ClusterState` by releasing candidates one at a time and
planning the job (as `placement.plan_job` does), and everything is put back exactly as it was
before returning: the caller then evicts for real through the simulator, which keeps the books.

Victims are whole jobs: evicting one pod of a gang kills the gang (Volcano's gang plugin vetoes
partial reclaim; a Kubernetes Job whose pod is preempted restarts it from scratch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gpuparley.envs.cluster import Binding, ClusterState
from gpuparley.envs.jobs import Job
from gpuparley.envs.planner import NodeChooser, plan_job

if TYPE_CHECKING:
    from gpuparley.envs.simulator import Simulator


def find_victims(
    state: ClusterState,
    job: Job,
    candidates: Sequence[Job],
    choose: NodeChooser,
    enough: Callable[[list[Job]], bool] = lambda _victims: True,
    rehome: NodeChooser | None = None,
) -> list[Job] | None:
    """The shortest prefix of `candidates` whose removal lets `job` be placed, or None.

    `enough(victims)` adds a non-physical condition (quota, fair share) that must also hold.
    With `rehome`, every victim must also find a new place once `job` is in (KAI's
    consolidation: "move pods only if every evicted pod has a new home"). The state is
    unchanged on return.
    """
    if not _fits_without(state, job, candidates, choose, enough):
        return None  # not even evicting every candidate would do
    released: list[tuple[Job, list[Binding]]] = []
    try:
        for victim in candidates:
            released.append((victim, state.release(victim)))
            victims = [v for v, _ in released]
            if not enough(victims):
                continue
            plan = plan_job(state, job, choose)
            if plan is None:
                continue
            if rehome is None or _all_rehomed(state, job, plan, victims, rehome):
                return victims
        return None
    finally:
        for victim, held in reversed(released):
            state.bind(victim, held)


def _fits_without(
    state: ClusterState,
    job: Job,
    candidates: Sequence[Job],
    choose: NodeChooser,
    enough: Callable[[list[Job]], bool],
) -> bool:
    """Whether `job` could be placed with every candidate gone (a cheap upper bound)."""
    if not candidates or not enough(list(candidates)):
        return False
    released = [(victim, state.release(victim)) for victim in candidates]
    try:
        return plan_job(state, job, choose) is not None
    finally:
        for victim, held in reversed(released):
            state.bind(victim, held)


def _all_rehomed(
    state: ClusterState, job: Job, plan: list[Binding], victims: list[Job], choose: NodeChooser
) -> bool:
    """Whether every victim can be placed again after `job` takes its plan."""
    state.bind(job, plan)
    placed: list[Job] = []
    try:
        for victim in victims:
            again = plan_job(state, victim, choose)
            if again is None:
                return False
            state.bind(victim, again)
            placed.append(victim)
        return True
    finally:
        for victim in reversed(placed):
            state.release(victim)
        _release_pods(state, job, len(plan))


def _release_pods(state: ClusterState, job: Job, count: int) -> None:
    """Take back the last `count` pods bound for `job`, keeping any it held before."""
    held = state.release(job)
    keep = held[: len(held) - count]
    if keep:
        state.bind(job, keep)


def move_jobs(sim: Simulator, victims: Sequence[Job], choose: NodeChooser) -> int:
    """Re-place evicted jobs (consolidation's second half); returns how many found a home."""
    moved = 0
    for victim in victims:
        plan = plan_job(sim.state, victim, choose)
        if plan is not None:
            sim.bind(victim, plan)
            moved += 1
    return moved
