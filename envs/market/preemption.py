"""Preemption in the auction: the running leases a bid may take the place of, and taking it.

A lapsed (unpaid) lease may be displaced by any bid above its rent; with
`market.preemption_premium` set, so may every other running auction lease, by a bid above its
rent raised by the premium. The rules themselves are stated in `envs.market.auction`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpuparley.envs.cluster import Binding
from gpuparley.envs.jobs import Job
from gpuparley.envs.market.demand import HOUR
from gpuparley.envs.market.messages import MARKET, Lease
from gpuparley.envs.simulator import JobState

if TYPE_CHECKING:
    from gpuparley.envs.market.auction import SealedBid
    from gpuparley.envs.market.core import Market


def preemptible_leases(market: Market) -> list[tuple[float, Lease]]:
    """Running auction leases a bid may take the place of, with the price per GPU-hour it
    must exceed, cheapest first: lapsed (unpaid) leases at their rent, and with
    `preemption_premium` set every other one at its rent raised by the premium."""
    premium = market.config.preemption_premium
    if premium is None and not market.lapsed:
        return []
    out = []
    for lease in market.leases.values():
        lapsed = lease.lease_id in market.lapsed
        if lease.lender != MARKET or (premium is None and not lapsed):
            continue
        job = market.jobs_by_name[lease.job]
        if market.sim.record(job.id).state is JobState.RUNNING:
            density = lease.price / (job.gpus * market.epoch_seconds / HOUR)
            out.append((density if lapsed else density * (1.0 + (premium or 0.0)), lease))
    out.sort(key=lambda pair: (pair[0], pair[1].start_epoch, pair[1].lease_id))
    return out


def plan_with_preemption(
    market: Market,
    bid: SealedBid,
    preemptible: list[tuple[float, Lease]],
    taken: list[tuple[Job, list[Binding]]],
) -> tuple[list[Binding] | None, tuple[Lease, ...]]:
    """Free the cheapest leases the bid outbids until it fits, or put them back and return
    no plan. A lease is outbid when its threshold price per GPU-hour is below the bid's and
    the bid's rent stays above the thresholds of everything it displaces together."""
    state = market.sim.state
    hours = market.epoch_seconds / HOUR
    if not _room_if_preempted(market, bid, preemptible, hours):
        return None, ()
    victims: list[Lease] = []
    displaced = 0.0  # the threshold rents of the victims so far
    for threshold, lease in list(preemptible):
        if threshold >= bid.density:
            break
        job = market.jobs_by_name[lease.job]
        rent = threshold * job.gpus * hours
        if job.id not in state.holdings or displaced + rent >= bid.price:
            continue
        displaced += rent
        taken.append((job, state.release(job)))
        victims.append(lease)
        plan = market.plan(bid.job)
        if plan is not None:
            for victim in victims:
                preemptible.remove(next(p for p in preemptible if p[1] is victim))
            return plan, tuple(victims)
    for _ in victims:
        job, held = taken.pop()
        state.bind(job, held)
    return None, ()


def _room_if_preempted(
    market: Market, bid: SealedBid, preemptible: list[tuple[float, Lease]], hours: float
) -> bool:
    """Whether `plan_with_preemption` could succeed, from GPU counts alone (a necessary
    condition, so that hopeless attempts release and re-bind nothing): for a whole-GPU bid,
    some node of an allowed model would have enough free GPUs if every running lease the
    bid may displace gave all its GPUs back. Other requests are not screened."""
    job = bid.job
    request = job.pod.gpu
    if request.kind != "whole":
        return True
    state = market.sim.state
    freed: dict[int, int] = {}
    for threshold, lease in preemptible:
        if threshold >= bid.density:
            break
        victim = market.jobs_by_name[lease.job]
        if threshold * victim.gpus * hours >= bid.price:
            continue  # it alone outweighs the bid: never displaced
        for _pod, placement in state.holdings.get(victim.id, ()):
            freed[placement.node] = freed.get(placement.node, 0) + len(placement.gpus)
    if not freed:
        return False
    allowed = state.model_mask(job.allowed_models)
    free = state.node_free_gpus
    if job.pods == 1 and job.id not in state.holdings:
        # a lone pod fits no node now (it has no plan): only nodes with victims may change
        return any(allowed[n] and free[n] + k >= request.count for n, k in freed.items())
    room = free.copy()
    for node, count in freed.items():
        room[node] += count
    return bool((allowed & (room >= request.count)).any())


def preempt(market: Market, lease: Lease) -> None:
    """Take a lease's place: a lapsed one's job keeps its progress; a priced preemption's
    victim keeps it as the scenario says."""
    job = market.jobs_by_name[lease.job]
    lapsed = lease.lease_id in market.lapsed
    if market.sim.record(job.id).state is JobState.RUNNING:
        market.sim.evict(job, keep_progress=True if lapsed else None)
    market.end_lease(lease.lease_id, "lost" if lapsed else "preempted")
    if not lapsed:
        market.stats.preemptions += 1
