"""The sealed-bid auction: each epoch, bids for whole bundles are cleared greedily by value.

Rules (one definition for the simulator and the in-cluster negotiators):

* A bid is a rent per epoch for a job's whole demand (all its pods: a gang is won all or
  nothing) over one lease term, and may not exceed the bidder's free balance (balance minus its
  other bids this epoch). The first epoch's rent is paid at clearing, the rest epoch by epoch.
* Clearing ranks bids by price per GPU-hour (ties: earlier job first) and walks down the list,
  placing each bundle if it fits (MIG geometry, GPU models, CPU and memory: the placement engine
  decides) and its price per GPU-hour is at least the reserve.
* Holders of leases that end this epoch re-bid to renew; their current resources are
  re-auctioned with everything else, but a renewing job keeps its exact placement when it is
  still free at its turn (no restart). A renewal that loses, or a lease not renewed, ends: the
  job is evicted and waits again.
* Payment: `first` price pays the bid. `second` price pays, per GPU-hour, the highest losing bid
  ranked below the winner that lost for lack of room (or the reserve): the (k+1)-th price rule,
  truthful for bidders that want one unit of a homogeneous good; for multi-GPU bundles it is an
  approximation of the critical price. Payments go to the market.
* CPU-only jobs need no GPU and are placed without a bid, first-fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuparley.envs.cluster import Binding, PlacementError
from gpuparley.envs.jobs import Job
from gpuparley.envs.market.demand import HOUR
from gpuparley.envs.market.frozen import quick_constructor
from gpuparley.envs.market.messages import MARKET, Bid, Lease, ReleaseReason
from gpuparley.envs.market.placement import market_plan, place_cpu_only
from gpuparley.envs.simulator import JobState

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market


@dataclass(frozen=True, slots=True)
class SealedBid:
    message: Bid
    job: Job
    density: float  # rent per GPU-hour
    renewal: Lease | None


_new_sealed_bid = quick_constructor(SealedBid)  # a bid or more per sub-step (see `frozen`)


@dataclass(frozen=True, slots=True)
class Award:
    bid: SealedBid
    plan: list[Binding]
    kept_placement: bool


class Auction:
    """Sealed-bid, greedy-by-density clearing with first- or second-price payments."""

    name = "auction"

    def __init__(self, market: Market) -> None:
        self.market = market
        self.bids: dict[int, SealedBid] = {}

    def begin(self) -> None:
        self.bids.clear()
        place_cpu_only(self.market)

    def pending_answer(self, agent: str) -> None:
        return None

    def pending_answers(self) -> dict[str, Any]:
        return {}

    def proposal(self, agent: str, job: Job, price: float, common: dict[str, Any]) -> Bid:
        market = self.market
        lease_id = market.lease_by_job.get(job.id)
        return Bid.model_validate(  # faster than keywords, see `Market.issue_lease`
            {
                "receiver": MARKET,
                "demand": market.demand(job),
                "price": price,
                "term_epochs": market.term_epochs,
                "renewal_of": lease_id,
                **common,
            }
        )

    def handle(self, message: Any) -> str | None:
        market = self.market
        if not isinstance(message, Bid):
            return f"the auction accepts only bids, not {message.kind}"
        if message.receiver != MARKET:
            return "bids are addressed to the market"
        job, reason = market.job_asked_for(message.sender, message.demand)
        if job is None:
            return reason
        if message.term_epochs != market.term_epochs:
            return f"the lease term is {market.term_epochs} epochs"
        if job.id in self.bids:
            return "this job already has a bid this epoch"
        record = market.sim.record(job.id)
        renewal = None
        if message.renewal_of is not None:
            renewal, reason = market.lease_due_for_renewal(
                message.renewal_of, message.sender, message.demand.job
            )
            if renewal is None:
                return reason
        elif not record.arrived or record.state is not JobState.PENDING:
            return f"job {message.demand.job!r} is not waiting for resources"
        if message.price > market.free_balance(message.sender) + 1e-9:
            return "the bid exceeds the free balance"
        gpu_hours = job.gpus * market.epoch_seconds / HOUR
        self.bids[job.id] = _new_sealed_bid(message, job, message.price / gpu_hours, renewal)
        market.committed[message.sender] += message.price
        market.stats.proposals += 1
        return None

    def clear(self) -> None:
        market = self.market
        renewing = {b.renewal.lease_id for b in self.bids.values() if b.renewal is not None}
        for lease in market.due_leases():
            if lease.lease_id not in renewing:
                self._end(lease, "expired")
        ranked = sorted(self.bids.values(), key=lambda b: (-b.density, b.job.arrival, b.job.id))
        awards, lost_for_room, lost = self._allocate(ranked)
        for bid in lost:
            if bid.renewal is not None:
                self._end(bid.renewal, "expired")
        for award in awards:
            if award.bid.renewal is not None and not award.kept_placement:
                market.sim.evict(award.bid.job)  # migration: it restarts on its new resources
        reserve = market.config.reserve_price_per_gpu_hour
        for award in awards:
            bid = award.bid
            if not award.kept_placement:
                market.place(bid.job, award.plan)
            price = self._price(bid, lost_for_room, reserve)
            market.ledger.pay(bid.message.sender, MARKET, price)
            if bid.renewal is not None:
                market.renew_lease(bid.renewal, price)
            else:
                market.issue_lease(bid.message.sender, MARKET, bid.job, price)
            market.stats.agreements += 1
            market.record_price(price, bid.job.gpus)
        self.bids.clear()

    def _allocate(
        self, ranked: list[SealedBid]
    ) -> tuple[list[Award], list[float], list[SealedBid]]:
        """Decide winners on the engine without touching the simulator, then restore it."""
        market = self.market
        state = market.sim.state
        reserve = market.config.reserve_price_per_gpu_hour
        saved = {b.job.id: state.release(b.job) for b in ranked if b.renewal is not None}
        awards: list[Award] = []
        lost_for_room: list[float] = []
        lost: list[SealedBid] = []
        try:
            for bid in ranked:
                if bid.density < reserve:
                    lost.append(bid)
                    continue
                plan, kept = None, False
                if bid.renewal is not None:
                    try:
                        state.bind(bid.job, saved[bid.job.id])
                        plan, kept = saved[bid.job.id], True
                    except PlacementError:
                        pass
                if plan is None:
                    plan = market_plan(state, bid.job)
                    if plan is not None:
                        state.bind(bid.job, plan)
                if plan is None:
                    lost_for_room.append(bid.density)
                    lost.append(bid)
                else:
                    awards.append(Award(bid, plan, kept))
        finally:
            for award in awards:
                state.release(award.bid.job)
            for job_id, held in saved.items():
                state.bind(market.sim.jobs[job_id], held)
        return awards, lost_for_room, lost

    def _price(self, bid: SealedBid, lost_for_room: list[float], reserve: float) -> float:
        if self.market.config.payment_rule == "first":
            return bid.message.price
        below = [d for d in lost_for_room if d <= bid.density]
        density = max([reserve, *below])
        gpu_hours = bid.job.gpus * self.market.epoch_seconds / HOUR
        return min(bid.message.price, density * gpu_hours)

    def _end(self, lease: Lease, reason: ReleaseReason) -> None:
        market = self.market
        job = market.jobs_by_name[lease.job]
        if market.sim.record(job.id).state is JobState.RUNNING:
            market.sim.evict(job)
        market.end_lease(lease.lease_id, reason)
