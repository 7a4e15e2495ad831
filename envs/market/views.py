"""Build each agent's `AgentView` from the simulated market (the deployment builds the same
view from real cluster state).

Views are rebuilt for every agent at every step, which makes this the environment's hot path.
What depends only on the cluster state, the queue and the clock (occupancy, the waiting jobs in
slot order, the job slots themselves) is therefore cached in `market.view_cache` under the state's
version and what else it depends on, and everything else is gathered in one pass per step rather
than once per agent. Whether anybody has a decision at all (`any_decision`) is answered without
building views, for the rounds the environment plays out unasked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gpuparley.envs.jobs import Job
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.demand import HOUR, job_name
from gpuparley.envs.market.encoding import (
    JOB_SLOTS,
    AgentView,
    JobSlot,
    new_agent_view,
    new_inbox_item,
    new_job_slot,
)
from gpuparley.envs.market.lookahead import Lookahead
from gpuparley.envs.mig import COMPUTE_SLICES
from gpuparley.envs.simulator import JobState

if TYPE_CHECKING:
    from gpuparley.envs.market.bargain import QuotaBook

SLACK_CAP_HOURS = 48.0


def cluster_free_fractions(market: Market) -> tuple[float, float, float]:
    """Free share of whole GPUs, of MIG compute slices, and of time-sliced milli-GPU."""
    state = market.sim.state
    total = max(state.gpu_count, 1)
    whole = float(state.node_free_gpus.sum()) / total
    mig_gpus, sliced, count = _gpu_modes(market)
    mig_free = (
        1.0 - float(state.mig_used_slices.sum()) / (mig_gpus * COMPUTE_SLICES) if mig_gpus else 0.0
    )
    share_free = 1.0 - float(state.gpu_used_milli[sliced].sum()) / (count * 1000) if count else 0.0
    return whole, mig_free, share_free


def _gpu_modes(market: Market) -> tuple[int, np.ndarray, int]:
    """MIG GPUs, the time-sliced GPUs (a mask) and their number: fixed with the cluster."""
    modes = market.view_cache.get("gpu_modes")
    if modes is None:
        state = market.sim.state
        sliced = ~state.gpu_is_mig & state.node_is_timeslice[state.gpu_node]
        modes = market.view_cache["gpu_modes"] = (
            int(state.gpu_is_mig.sum()),
            sliced,
            int(sliced.sum()),
        )
    return modes


def _slots(market: Market) -> dict[tuple[int, bool, float], JobSlot]:
    """Job slots built so far; they hold until the clock, the cluster or the leases change."""
    key = (market.sim.now, market.sim.state.version, len(market.leases))
    cached = market.view_cache.get("slots")
    if cached is None or cached[0] != key:
        cached = market.view_cache["slots"] = (key, {})
    return cached[1]


def _build_slot(
    market: Market, job: Job, renewal: bool, within_quota: bool, standing: float
) -> JobSlot:
    sim = market.sim
    now = sim.now
    name, gpus, kind, density, due = _job_facts(market, job)
    slack = due - now
    slack_hours = min(slack / HOUR, SLACK_CAP_HOURS) if math.isfinite(slack) else SLACK_CAP_HOURS
    pending = sim.records[job.id].state is JobState.PENDING
    return new_job_slot(  # positional, in field order (see `agent_views`)
        name,  # job
        gpus,  # gpus
        kind,  # gpu_kind
        job.pods,  # pods
        market.epoch_value(job),  # epoch_value
        density,  # value_density
        (now - job.arrival) / HOUR if pending else 0.0,  # waited_hours
        slack_hours,  # slack_hours
        renewal,  # renewal
        renewal or sim.state.can_fit_somewhere(job),  # fits_now
        within_quota,  # within_quota
        standing,  # standing_bid
    )


def _job_facts(market: Market, job: Job) -> tuple[str, float, str, float, float]:
    """What the views say about a job that never changes: its name, GPUs, GPU kind, value
    density and when its deadline falls (worked out once per job)."""
    known = market.view_cache.get("job_facts")
    if known is None:
        known = market.view_cache["job_facts"] = {}
    facts = known.get(job.id)
    if facts is None:
        gpus = job.gpus
        gpu_hours = max(gpus * job.duration / HOUR, 1e-9)
        facts = known[job.id] = (
            job_name(job),
            gpus,
            job.pod.gpu.kind,
            job.value / gpu_hours / market.reference_price,
            job.arrival + job.deadline,
        )
    return facts


@dataclass(frozen=True, slots=True)
class _Waiting:
    """The waiting jobs; recomputed only after a simulator event (an arrival) or a change of
    the cluster state (a start, an eviction): nothing else changes the queue."""

    key: tuple[int, int]
    per_agent: dict[str, int]  # waiting jobs of each agent, CPU-only ones included
    ranked: dict[str, list[Job]]  # each agent's waiting GPU jobs, highest value per work first


def _rank(market: Market) -> dict[int, tuple[float, int]]:
    """Each job's place in slot order: highest value per unit of work first, ties by id."""
    rank = market.view_cache.get("rank")
    if rank is None:
        rank = market.view_cache["rank"] = {
            job.id: (-job.value / max(job.work, 1e-9), job.id) for job in market.sim.jobs.values()
        }
    return rank


def _waiting(market: Market) -> _Waiting:
    sim = market.sim
    key = (sim.events_processed, sim.state.version)
    cached = market.view_cache.get("waiting")
    if cached is not None and cached.key == key:
        return cached
    jobs = sim.jobs
    per_agent: dict[str, int] = {}
    for job_id in sim.waiting_ids():
        owner = jobs[job_id].owner
        per_agent[owner] = per_agent.get(owner, 0) + 1
    ranked: dict[str, list[Job]] = defaultdict(list)
    for job_id in sorted(sim.waiting_ids(), key=_rank(market).__getitem__):
        job = jobs[job_id]
        if job.pod.gpu.kind != "none":
            ranked[job.owner].append(job)
    waiting = _Waiting(key, per_agent, ranked)
    market.view_cache["waiting"] = waiting
    return waiting


def _candidates(
    market: Market, ranked: dict[str, list[Job]], book: QuotaBook | None, limit: int = JOB_SLOTS
) -> dict[str, tuple[JobSlot, ...]]:
    """Per agent: the slots of the jobs it may act on now, at most `limit` (renewals due
    first, then waiting jobs by value per unit of work; ties by job id)."""
    mechanism = market.mechanism
    busy = mechanism.engaged_jobs()
    built = _slots(market)
    by_agent: dict[str, list[JobSlot]] = {agent: [] for agent in market.agents}
    rank = _rank(market)
    renewals = sorted(_renewals(market, busy), key=lambda job: rank[job.id])
    for job in renewals:
        slots = by_agent[job.owner]
        if len(slots) < limit:
            slot = built.get((job.id, True, 0.0))
            if slot is None:
                slot = built[(job.id, True, 0.0)] = _build_slot(market, job, True, True, 0.0)
            slots.append(slot)
    for agent, jobs in ranked.items():
        slots = by_agent[agent]
        for job in jobs:
            if len(slots) >= limit:
                break
            if not _may_bid(job, busy, book):
                continue
            standing = mechanism.standing_bid(job)
            slot = built.get((job.id, False, standing))
            if slot is None:
                slot = built[(job.id, False, standing)] = _build_slot(
                    market, job, False, book is None, standing
                )
            slots.append(slot)
    return {agent: tuple(slots) for agent, slots in by_agent.items()}


def _renewals(market: Market, busy: set[int]) -> list[Job]:
    """Running jobs whose lease is due for renewal and not already engaged (a renewal slot)."""
    jobs = []
    for lease in market.due_leases():
        job = market.jobs_by_name[lease.job]
        if job.id not in busy and market.sim.record(job.id).state is JobState.RUNNING:
            jobs.append(job)
    return jobs


def _may_bid(job: Job, busy: set[int], book: QuotaBook | None) -> bool:
    """Whether a waiting job gets a slot: not engaged, and (bargaining) quota can be borrowed."""
    return job.id not in busy and (book is None or book.can_borrow_for(job))


def _quota_book(market: Market) -> QuotaBook | None:
    quota_book = getattr(market.mechanism, "quota_book", None)
    return quota_book() if quota_book is not None else None


def any_decision(market: Market) -> bool:
    """Whether some agent's view would have a job slot or an inbox item (`agent_views`),
    answered without building the views: the environment asks after every round, and most
    rounds in which nobody has anything to decide are played out without a view."""
    mechanism = market.mechanism
    if mechanism.pending_answers():
        return True
    busy = mechanism.engaged_jobs()
    book = _quota_book(market)
    if book is None:  # every waiting GPU job not engaged has a slot: a question of sets
        if not busy.issuperset(market.sim.waiting_ids() - market.cpu_only):
            return True
    elif any(
        job.pod.gpu.kind != "none" and _may_bid(job, busy, book) for job in market.sim.pending()
    ):
        return True
    return bool(_renewals(market, busy))


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
        used[job.owner] += _job_facts(market, job)[1]
    occupancy = _Occupancy(state.version, cluster_free_fractions(market), running, used)
    market.view_cache["occupancy"] = occupancy
    return occupancy


def agent_views(
    market: Market, last_decision: dict[str, float] | None = None
) -> dict[str, AgentView]:
    """The current view of every agent; `last_decision`: when each last had a decision (the
    environment keeps it; absent, the time since is 0)."""
    occupancy = _occupancy(market)
    whole, mig_free, share_free = occupancy.free
    running, used = occupancy.running, occupancy.used
    waiting = _waiting(market)
    pending = waiting.per_agent
    mechanism = market.mechanism
    book = _quota_book(market)
    candidates = _candidates(market, waiting.ranked, book)
    answers = mechanism.pending_answers()
    held, lent = _lease_counts(market)
    budgets, quotas = _endowments(market)
    balances, committed, passed = market.ledger.balances, market.committed, market.passed
    reference_price, last_price = market.reference_price, market.last_price
    cluster_gpus = float(market.sim.state.gpu_count)
    epoch_fraction = market.substep / market.max_substeps
    now = market.sim.now
    views = {}
    for agent in market.agents:
        thread = answers.get(agent)
        inbox = None
        if thread is not None:
            as_lender = thread.lender == agent
            anchor = (
                market.list_cost(thread.job.gpus) if as_lender else market.epoch_value(thread.job)
            )
            inbox = new_inbox_item(  # positional, in field order (see below)
                thread.last_id,  # message_id
                as_lender,  # as_lender
                thread.price,  # price
                max(anchor, 1e-9),  # anchor
                thread.job.gpus,  # gpus
                thread.round,  # round
                market.config.max_rounds,  # max_rounds
            )
        quota = quotas[agent]
        # Positional, in field order: keyword arguments would cost more than building the view
        # (CPython binds them to a Python `__init__` slowly), and this runs for every agent at
        # every sub-step. `test_views_are_built_field_by_field` checks the order.
        views[agent] = new_agent_view(
            balances[agent],  # balance
            budgets[agent],  # budget_per_epoch
            committed[agent],  # committed
            reference_price,  # reference_price
            last_price,  # last_price
            quota,  # quota_gpus
            book.effective[agent] / 1000 if book is not None else quota,  # effective_quota_gpus
            book.usage[agent] / 1000 if book is not None else used[agent],  # used_gpus
            cluster_gpus,  # cluster_gpus
            whole,  # free_whole_fraction
            mig_free,  # free_mig_fraction
            share_free,  # free_share_fraction
            pending.get(agent, 0),  # pending_jobs
            running[agent],  # running_jobs
            held.get(agent, 0),  # leases_held
            lent.get(agent, 0),  # leases_lent
            epoch_fraction,  # epoch_fraction
            mechanism.name,  # mechanism
            candidates[agent],  # slots
            inbox,  # inbox
            agent in passed,  # passed
            (now - last_decision[agent]) / HOUR if last_decision else 0.0,  # since_decision_hours
        )
    return views


def lookaheads(market: Market) -> dict[str, Lookahead]:
    """What each agent needs besides its view to work out its views for the rest of the round
    (`lookahead.next_view`): its candidates after its slots, as many as the round has sub-steps
    left to bid them in, the round's sub-step and its outstanding bids."""
    depth = JOB_SLOTS + market.max_substeps
    listed = _candidates(market, _waiting(market).ranked, _quota_book(market), depth + 1)
    bids_of = getattr(market.mechanism, "bids_of", None)  # the auction's; bargaining has none
    return {
        agent: Lookahead(
            candidates[JOB_SLOTS:depth],
            len(candidates) > depth,
            market.substep,
            market.max_substeps,
            bids_of(agent) if bids_of is not None else (),
        )
        for agent, candidates in listed.items()
    }


def _lease_counts(market: Market) -> tuple[dict[str, int], dict[str, int]]:
    """Leases held and lent by each agent; recounted only when a lease changed."""
    key = market.leases.changes
    cached = market.view_cache.get("lease_counts")
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    held: dict[str, int] = {}
    lent: dict[str, int] = {}
    for lease in market.leases.values():
        held[lease.holder] = held.get(lease.holder, 0) + 1
        lent[lease.lender] = lent.get(lease.lender, 0) + 1
    market.view_cache["lease_counts"] = (key, held, lent)
    return held, lent


def _endowments(market: Market) -> tuple[dict[str, float], dict[str, float]]:
    """Every agent's budget per epoch and own quota in GPUs (fixed for the whole episode)."""
    cached = market.view_cache.get("endowments")
    if cached is None:
        cached = market.view_cache["endowments"] = (
            market.budgets,
            {a: market.quota_milli[a] / 1000 for a in market.agents},
        )
    return cached
