"""Build each agent's `AgentView` from the simulated market (the deployment builds the same
view from real cluster state)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from gpuparley.envs.jobs import Job
from gpuparley.envs.market.core import HOUR, Market, job_name
from gpuparley.envs.market.encoding import JOB_SLOTS, AgentView, InboxItem, JobSlot
from gpuparley.envs.mig import COMPUTE_SLICES
from gpuparley.envs.simulator import JobState

SLACK_CAP_HOURS = 48.0


def cluster_free_fractions(market: Market) -> tuple[float, float, float]:
    """Free share of whole GPUs, of MIG compute slices, and of time-sliced milli-GPU."""
    state = market.sim.state
    total = max(state.gpu_count, 1)
    whole = float(state.node_free_gpus.sum()) / total
    mig_gpus = int(state.gpu_is_mig.sum())
    mig_free = (
        1.0 - float(state.mig_used_slices.sum()) / (mig_gpus * COMPUTE_SLICES) if mig_gpus else 0.0
    )
    sliced = ~state.gpu_is_mig & state.node_is_timeslice[state.gpu_node]
    count = int(sliced.sum())
    share_free = 1.0 - float(state.gpu_used_milli[sliced].sum()) / (count * 1000) if count else 0.0
    return whole, mig_free, share_free


def _slot(market: Market, job: Job, renewal: bool) -> JobSlot:
    """A job's slot; reused until the clock, the cluster or the leases change."""
    key = (market.sim.now, market.sim.state.version, len(market.leases))
    cached = market.view_cache.get("slots")
    if cached is None or cached[0] != key:
        cached = market.view_cache["slots"] = (key, {})
    slots = cached[1]
    slot = slots.get((job.id, renewal))
    if slot is None:
        slot = slots[(job.id, renewal)] = _build_slot(market, job, renewal)
    return slot


def _build_slot(market: Market, job: Job, renewal: bool) -> JobSlot:
    sim = market.sim
    record = sim.record(job.id)
    now = sim.now
    gpu_hours = max(job.gpus * job.duration / HOUR, 1e-9)
    slack = job.arrival + job.deadline - now
    fits = renewal or sim.state.can_fit_somewhere(job)
    within = True
    quota_check = getattr(market.mechanism, "fits_quota", None)
    if quota_check is not None and not renewal:
        within = quota_check(job)
    return JobSlot(
        job=job_name(job),
        gpus=job.gpus,
        gpu_kind=job.pod.gpu.kind,
        pods=job.pods,
        epoch_value=market.epoch_value(job),
        value_density=job.value / gpu_hours / market.reference_price,
        waited_hours=(now - job.arrival) / HOUR if record.state is JobState.PENDING else 0.0,
        slack_hours=min(slack / HOUR, SLACK_CAP_HOURS) if np.isfinite(slack) else SLACK_CAP_HOURS,
        renewal=renewal,
        fits_now=fits,
        within_quota=within,
    )


def _candidates(market: Market, pending: list[Job]) -> dict[str, list[tuple[bool, Job]]]:
    """Per agent: jobs it may act on now (renewals due first, then pending by value density)."""
    mechanism = market.mechanism
    busy = {t.job.id for t in getattr(mechanism, "threads", {}).values()}
    busy |= set(getattr(mechanism, "bids", {}))
    by_agent: dict[str, list[tuple[bool, Job]]] = defaultdict(list)
    for lease in market.due_leases():
        job = market.jobs_by_name[lease.job]
        if job.id not in busy and market.sim.record(job.id).state is JobState.RUNNING:
            by_agent[lease.holder].append((True, job))
    quota_check = getattr(mechanism, "fits_quota", None)
    lender_for = getattr(mechanism, "lender_for", None)
    for job in pending:
        if job.id in busy or job.pod.gpu.kind == "none":
            continue
        if quota_check is not None and quota_check(job):
            continue  # admitted free at the next epoch start: nothing to negotiate
        if lender_for is not None and lender_for(job) is None:
            continue  # nobody could lend enough: no proposal is possible
        by_agent[job.owner].append((False, job))
    for items in by_agent.values():
        items.sort(
            key=lambda item: (not item[0], -item[1].value / max(item[1].work, 1e-9), item[1].id)
        )
    return by_agent


@dataclass(frozen=True, slots=True)
class _Occupancy:
    """What the cluster state says about every agent; recomputed only when the state changes."""

    version: int
    free: tuple[float, float, float]
    running: dict[str, int]
    used: dict[str, float]


def _occupancy(market: Market) -> _Occupancy:
    state = market.sim.state
    cached = market.view_cache.get("occupancy")
    if cached is not None and cached.version == state.version:
        return cached
    running: dict[str, int] = defaultdict(int)
    used: dict[str, float] = defaultdict(float)
    for job_id in state.holdings:
        job = market.sim.jobs[job_id]
        running[job.owner] += 1
        used[job.owner] += job.gpus
    occupancy = _Occupancy(state.version, cluster_free_fractions(market), running, used)
    market.view_cache["occupancy"] = occupancy
    return occupancy


def agent_views(market: Market) -> dict[str, AgentView]:
    """The current view of every agent."""
    occupancy = _occupancy(market)
    whole, mig_free, share_free = occupancy.free
    running, used = occupancy.running, occupancy.used
    waiting = market.sim.pending()
    candidates = _candidates(market, waiting)
    mechanism = market.mechanism
    quota_of = getattr(mechanism, "effective_quota", None)
    usage = getattr(mechanism, "usage", None)
    pending = defaultdict(int)
    for job in waiting:
        pending[job.owner] += 1
    held = defaultdict(int)
    lent = defaultdict(int)
    for lease in market.leases.values():
        held[lease.holder] += 1
        lent[lease.lender] += 1
    views = {}
    for agent in market.agents:
        thread = mechanism.pending_answer(agent)
        inbox = None
        if thread is not None:
            as_lender = thread.lender == agent
            anchor = (
                market.list_cost(thread.job.gpus) if as_lender else market.epoch_value(thread.job)
            )
            inbox = InboxItem(
                message_id=thread.last_id,
                as_lender=as_lender,
                price=thread.price,
                anchor=max(anchor, 1e-9),
                gpus=thread.job.gpus,
                round=thread.round,
                max_rounds=market.config.max_rounds,
            )
        quota = market.quota_milli[agent] / 1000
        views[agent] = AgentView(
            balance=market.ledger.balances[agent],
            budget_per_epoch=float(market.agent_config[agent].budget_per_epoch or 0.0),
            committed=market.committed[agent],
            reference_price=market.reference_price,
            last_price=market.last_price,
            quota_gpus=quota,
            effective_quota_gpus=(quota_of(agent) / 1000) if quota_of else quota,
            used_gpus=(usage[agent] / 1000) if usage else used[agent],
            cluster_gpus=float(market.sim.state.gpu_count),
            free_whole_fraction=whole,
            free_mig_fraction=mig_free,
            free_share_fraction=share_free,
            pending_jobs=pending[agent],
            running_jobs=running[agent],
            leases_held=held[agent],
            leases_lent=lent[agent],
            epoch_fraction=market.substep / market.max_substeps,
            mechanism=mechanism.name,
            slots=tuple(
                _slot(market, job, renewal) for renewal, job in candidates[agent][:JOB_SLOTS]
            ),
            inbox=inbox,
            passed=agent in market.passed,
        )
    return views
