"""The sealed-bid auction: bids for whole bundles are cleared greedily by value.

Rules (one definition for the simulator and the in-cluster negotiators):

* A bid is a rent per epoch for a job's whole demand (all its pods: a gang is won all or
  nothing) over one lease term: what the job is worth to its owner, whatever its balance. The
  budget binds what is paid, not what is bid: a bid wins only if its owner can pay its rent at
  signing (for the rest of the epoch; the whole epoch under epoch clearing), and the rent is
  then due at every epoch boundary. So capacity nobody else wants goes to whoever values it at
  the reserve price, broke or not, and contested capacity to the highest bid its owner can pay.
  Rents are per epoch of reference-speed compute: on GPUs of relative speed s a lease pays s x
  its rent per epoch, and its job runs s times as fast.
* Clearing ranks bids by their rent per epoch, highest first (ties: earlier job first), and
  walks down the list, placing each bundle if it fits (MIG geometry, GPU models, CPU and memory:
  the market's placement rule decides where) and its price per GPU-hour is at least the reserve.
  Greedy by value rather than by value per GPU: large valuable bundles are placed before the
  small ones that would fragment their room (first-fit-decreasing in spirit), which on the
  bundled scenarios allocates 0-3 points more than ranking by density for the same welfare.
* Continuous clearing: a bid that loses stands, and is cleared again at every later clearing
  until it wins or its owner replaces it with a new bid for the same job. A standing bid that
  lost for room while a bid at least as high won was outbid: its job is offered to its owner
  again for one round, to raise the bid or let it stand. Epoch clearing: bids last one clearing.
* Incumbency (default): a won lease renews itself at the end of every term, so a running job
  keeps its placement while its holder pays; nothing running is re-auctioned. Under second
  price the renewed rent is the going rate for its room (`renewal_price`): what the first
  waiting bid that could use the room offers (the reserve if none), never above the winning bid.
  Without incumbency (the ablation), holders of leases that end re-bid to renew, their resources
  are re-auctioned with everything else (a renewing job keeps its exact placement when it is
  still free at its turn), and a renewal that loses ends the lease and stops the job.
* A lease whose rent goes unpaid lapses (`rent.charge_rents`): its job runs on, unpaid,
  until its holder pays again or a higher bid that does not fit otherwise takes its place; the
  lease then ends as `lost` and the job waits again with its progress. Preemption proper (only
  with `market.preemption_premium` set): such a bid may also take the place of running auction
  leases whose price per GPU-hour, raised by the premium, is below its own, cheapest first;
  their leases end as `preempted` and their jobs wait again (keeping progress as
  `settings.preemption_keeps_progress` says). Either way a bid must outbid what it displaces
  twice: per GPU-hour, and as a bundle (its rent above the displaced leases' rents together,
  each raised by the premium), because a displaced gang loses its whole room: a 2-GPU bid
  does not break up a 16-GPU lease paying more than it offers (on `gang-heavy` that rule is
  worth about 4 points of allocation at the same welfare).
* Payment: `first` price pays the bid. `second` price pays, per GPU-hour, the first bid ranked
  below the winner that lost for lack of room in the same clearing and would fit in the room
  the winner takes (or the reserve), at most the winner's own bid: the (k+1)-th price rule,
  truthful for bidders that want one unit of a homogeneous good; for bundles it approximates
  the critical price (a gang that could not use the winner's room does not raise its price).
  Payments go to the market.
* CPU-only jobs need no GPU and are placed without a bid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuparley.envs.cluster import Binding, ClusterState, PlacementError
from gpuparley.envs.jobs import Job
from gpuparley.envs.market.demand import HOUR
from gpuparley.envs.market.frozen import quick_constructor
from gpuparley.envs.market.messages import MARKET, Bid, Lease, ReleaseReason, trusted
from gpuparley.envs.market.placement import market_plan, place_cpu_only
from gpuparley.envs.market.preemption import plan_with_preemption, preempt, preemptible_leases
from gpuparley.envs.market.rent import first_payment, signing_share, speed_of
from gpuparley.envs.planner import first_fit_choice
from gpuparley.envs.simulator import JobState

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market


@dataclass(frozen=True, slots=True)
class SealedBid:
    message: Bid
    job: Job
    density: float  # rent per GPU-hour
    renewal: Lease | None
    least_rent: float  # the least rent an award can cost: at the reserve under second price
    # the message's sender and price, which clearing reads over and over: a plain attribute
    # costs a fraction of a pydantic model's
    sender: str
    price: float


_new_sealed_bid = quick_constructor(SealedBid)  # a bid or more per sub-step (see `frozen`)
CRITICAL_SCAN = 16
"""Losing bids tried, highest first, for the one that sets a winner's second price."""


def _rank(bid: SealedBid) -> tuple[float, float, int]:
    """Clearing order: highest rent per epoch first, then the earlier job."""
    return (-bid.price, bid.job.arrival, bid.job.id)


def _fits(state: ClusterState, job: Job) -> bool:
    """Whether `job`'s unplaced pods would fit now (whether, not where). A lone pod fits
    wherever `feasible_nodes` says one fits (the engine's contract), which the state's cached
    fit check answers; a gang needs a plan, and the cheap first-fit chooser makes it."""
    if job.pods == 1 and job.id not in state.holdings:
        return state.can_fit_somewhere(job)
    return market_plan(state, job, first_fit_choice) is not None


@dataclass(frozen=True, slots=True)
class Award:
    bid: SealedBid
    plan: list[Binding]
    kept_placement: bool
    victims: tuple[Lease, ...] = ()  # running leases this award preempts


_new_award = quick_constructor(Award)


class Auction:
    """Sealed-bid, greedy-by-density clearing with first- or second-price payments."""

    name = "auction"

    def __init__(self, market: Market) -> None:
        self.market = market
        self.bids: dict[int, SealedBid] = {}  # by job id; standing ones under continuous clearing
        self._ranked: list[SealedBid] | None = None  # `bids` in clearing order, until they change
        self._renewing: set[str] = set()  # the leases `_ranked` bids renew
        self.outbid: set[int] = set()  # jobs whose standing bid was outbid at the last clearing
        self.ceilings: dict[str, float] = {}  # lease id -> the bid that won it

    def begin(self) -> None:
        place_cpu_only(self.market)

    def pending_answer(self, agent: str) -> None:
        return None

    def pending_answers(self) -> dict[str, Any]:
        return {}

    def engaged_jobs(self) -> set[int]:
        """Jobs whose owner has nothing to decide now: a standing bid that was not outbid."""
        return set(self.bids) - self.outbid if self.outbid else set(self.bids)

    def standing_bid(self, job: Job) -> float:
        """The rent the job's standing bid offers (0 if it has none)."""
        bid = self.bids.get(job.id)
        return bid.price if bid is not None else 0.0

    def bids_of(self, agent: str) -> tuple[tuple[str, float], ...]:
        """The agent's outstanding bids (job name, price) in the order its committed credits
        sum them (`_recommit`; a new bid is added last)."""
        return tuple(
            (b.message.demand.job, b.price) for b in self.bids.values() if b.sender == agent
        )

    def proposal(self, agent: str, job: Job, price: float, common: dict[str, Any]) -> Bid:
        market = self.market
        lease_id = market.lease_by_job.get(job.id)
        return trusted(
            Bid,
            {
                "receiver": MARKET,
                "demand": market.demand(job),
                "price": price,
                "term_epochs": market.term_epochs,
                "renewal_of": lease_id,
                **common,
            },
        )

    def handle(self, message: Any) -> str | None:
        market = self.market
        if not isinstance(message, Bid):
            return f"the auction accepts only bids, not {message.kind}"
        if message.receiver != MARKET:
            return "bids are addressed to the market"
        sender, price = message.sender, message.price
        job, reason = market.job_asked_for(sender, message.demand)
        if job is None:
            return reason
        if message.term_epochs != market.term_epochs:
            return f"the lease term is {market.term_epochs} epochs"
        replaced = self.bids.get(job.id)
        if replaced is not None and not market.continuous:
            return "this job already has a bid this epoch"
        record = market.sim.record(job.id)
        renewal = None
        if message.renewal_of is not None:
            renewal, reason = market.lease_due_for_renewal(
                message.renewal_of, sender, message.demand.job
            )
            if renewal is None:
                return reason
        elif not record.arrived or record.state is not JobState.PENDING:
            return f"job {message.demand.job!r} is not waiting for resources"
        gpu_hours = job.gpus * market.epoch_seconds / HOUR
        least = price
        if market.config.payment_rule == "second":
            least = min(least, market.config.reserve_price_per_gpu_hour * gpu_hours)
        self.bids[job.id] = _new_sealed_bid(
            message, job, price / gpu_hours, renewal, least, sender, price
        )
        self._ranked = None
        self.outbid.discard(job.id)
        if replaced is None:  # a new last bid: the sum in bid order just gains a last term
            market.committed[sender] += price
        else:
            self._recommit()
        market.stats.proposals += 1
        return None

    def _ranked_bids(self) -> list[SealedBid]:
        """The bids in clearing order (`_rank`), sorted again only after they changed (the
        list is shared: callers do not change it); `_renewing` is then up to date too."""
        if self._ranked is None:
            self._ranked = sorted(self.bids.values(), key=_rank)
            self._renewing = {b.renewal.lease_id for b in self._ranked if b.renewal is not None}
        return self._ranked

    def _recommit(self) -> None:
        """Every agent's committed credits: the sum of its outstanding bids."""
        committed = dict.fromkeys(self.market.agents, 0.0)
        for bid in self.bids.values():
            committed[bid.sender] += bid.price
        self.market.committed = committed

    def clear(self) -> None:
        market = self.market
        ranked = self._ranked_bids()
        renewing = self._renewing
        for lease in market.due_leases():
            if lease.lease_id not in renewing:
                self._end(lease, "expired")
        reserve = market.config.reserve_price_per_gpu_hour
        if not renewing and self._first_contender(
            ranked, preemptible_leases(market), reserve
        ) == len(ranked):  # nothing can win, as in most clearings: every bid lost
            self._retire_bids([], [])  # (none of them renews a lease)
            return
        awards, lost, prices = self._settle_awards(ranked)
        for bid in lost:
            if bid.renewal is not None:
                self._end(bid.renewal, "expired")
        for award in awards:
            for victim in award.victims:
                preempt(market, victim)
            if award.bid.renewal is not None and not award.kept_placement:
                market.stop(award.bid.job)  # migration to its new resources
        for award, price in zip(awards, prices, strict=True):
            self._sign(award, price)
        self._retire_bids(awards, lost)

    def _retire_bids(self, awards: list[Award], lost: list[SealedBid]) -> None:
        """Take out the bids a clearing is done with: under continuous clearing the winners
        and the renewals that lost (the rest stand, and those a bid at least as high beat for
        room are marked outbid); under epoch clearing every bid."""
        market = self.market
        top = max([award.bid.density for award in awards]) if awards else None
        standing = len(self.bids)
        if market.continuous:
            for award in awards:
                del self.bids[award.bid.job.id]
            for bid in lost:
                if bid.renewal is not None:
                    del self.bids[bid.job.id]  # its lease has ended; the job may bid anew
            # outbid: lost for room while a bid at least as high won
            self.outbid = (
                {bid.job.id for bid in self.bids.values() if bid.density <= top}
                if top is not None
                else set()
            )
        else:
            self.bids.clear()
        if len(self.bids) != standing:  # (bids are only taken out here: else none changed)
            self._ranked = None
            self._recommit()

    def _settle_awards(
        self, ranked: list[SealedBid]
    ) -> tuple[list[Award], list[SealedBid], list[float]]:
        """Winners, losers, and each winner's rent.

        A bidder must be able to pay what its awards cost at signing. What a second-price
        winner pays depends on the bids below it, so the walk admits a bid its owner could pay
        at the reserve; an award whose actual payment its owner then cannot cover (with the
        owner's awards ranked above it) is dropped, lost for lack of budget, and the walk runs
        again without it until every award is affordable.
        """
        market = self.market
        reserve = market.config.reserve_price_per_gpu_hour
        dropped: list[SealedBid] = []
        left = ranked
        while True:
            awards, critical, lost = self._allocate(left)
            prices = [self._price(a.bid, c, reserve) for a, c in zip(awards, critical, strict=True)]
            spent: dict[str, float] = {}
            unaffordable = None
            for award, price in zip(awards, prices, strict=True):
                sender = award.bid.sender
                rent = price * speed_of(market, award.plan)
                spent[sender] = spent.get(sender, 0.0) + first_payment(market, rent)
                if not market.ledger.can_pay(sender, spent[sender]):
                    unaffordable = award.bid
                    break
            if unaffordable is None:
                return awards, [*lost, *dropped], prices
            market.stats.rejected["unaffordable-bid"] += 1
            dropped.append(unaffordable)
            left = [bid for bid in left if bid is not unaffordable]

    def _sign(self, award: Award, price: float) -> None:
        """Place an award (unless it kept its placement), take the payment, write the lease."""
        market, bid = self.market, award.bid
        if not award.kept_placement:
            market.place(bid.job, award.plan)
        rent = price * speed_of(market, award.plan)
        market.ledger.pay(bid.sender, MARKET, first_payment(market, rent))
        if bid.renewal is not None:
            lease = market.renew_lease(bid.renewal, price)
        else:
            lease = market.issue_lease(bid.sender, MARKET, bid.job, price)
        self.ceilings[lease.lease_id] = bid.price
        market.stats.agreements += 1
        market.record_price(price, bid.job.gpus)

    def _allocate(
        self, ranked: list[SealedBid]
    ) -> tuple[list[Award], list[float], list[SealedBid]]:
        """Decide winners on the engine without touching the simulator, then restore it.

        Returns the awards, each award's critical density (the second price per GPU-hour) and the
        losing bids.
        """
        market = self.market
        state = market.sim.state
        reserve = market.config.reserve_price_per_gpu_hour
        saved = {b.job.id: state.release(b.job) for b in ranked if b.renewal is not None}
        preemptible = preemptible_leases(market)
        start = self._first_contender(ranked, preemptible, reserve)
        if start == len(ranked):  # nothing can win (and no renewal released anything)
            return [], [], list(ranked)
        taken: list[tuple[Job, list[Binding]]] = []  # victims released during the walk
        awards: list[Award] = []
        lost_for_room: list[SealedBid] = []
        lost: list[SealedBid] = []
        marks: list[int] = []  # per award: how many room losers ranked above it
        critical: list[float] = []
        spent: dict[str, float] = {}  # what each bidder's awards so far cost at signing
        can_pay = market.ledger.can_pay
        share = signing_share(market)  # of the rent, paid at signing (`first_payment`)
        lost.extend(ranked[:start])
        try:
            for bid in ranked[start:]:
                sender = bid.sender
                least = bid.least_rent * share  # the least it can cost now
                if bid.density < reserve or not can_pay(sender, spent.get(sender, 0.0) + least):
                    lost.append(bid)  # below the reserve, or more than its owner can pay
                    continue
                plan, kept = None, False
                victims: tuple[Lease, ...] = ()
                if bid.renewal is not None:
                    try:
                        state.bind(bid.job, saved[bid.job.id])
                        plan, kept = saved[bid.job.id], True
                    except PlacementError:
                        pass
                if plan is None:
                    plan = market.plan(bid.job)
                if plan is None and preemptible and preemptible[0][0] < bid.density:
                    plan, victims = plan_with_preemption(market, bid, preemptible, taken)
                if plan is None:
                    lost_for_room.append(bid)
                    lost.append(bid)
                    continue
                if not kept:
                    state.bind(bid.job, plan)
                awards.append(_new_award(bid, plan, kept, victims))
                marks.append(len(lost_for_room))
                spent[sender] = spent.get(sender, 0.0) + least
            # Second price: what each winner displaced, the first bid ranked below it that lost
            # for room and would fit in the room it takes. A loser that could not use that room
            # (a gang too big for it) sets no price: it lost to the cluster, not to the winner.
            # (the last award need not take its room back: it is released below anyway)
            last = len(awards) - 1
            critical = [
                self._first_to_fit_in_room_of(award.bid.job, lost_for_room[mark:], i < last)
                for i, (award, mark) in enumerate(zip(awards, marks, strict=True))
            ]
        finally:
            for award in awards:
                if award.bid.job.id in state.holdings:
                    state.release(award.bid.job)
            for job, held in reversed(taken):
                state.bind(job, held)
            for job_id, held in saved.items():
                state.bind(market.sim.jobs[job_id], held)
        return awards, critical, lost

    def _first_contender(
        self, ranked: list[SealedBid], preemptible: list[tuple[float, Lease]], reserve: float
    ) -> int:
        """Where the walk of `_allocate` must begin: the first bid that could win, from checks
        that need no plan and no payment (most clearings of a continuous market award nothing).

        A bid ranked above it is lost whatever its owner can pay: it is below the reserve, or
        none of its pods fits anywhere and it outbids no preemptible lease. Whether such a bid
        lost for room or for budget matters only below an award (the second price), and none
        is above it, so the walk may skip it.
        """
        state = self.market.sim.state
        holdings, can_fit = state.holdings, state.can_fit_somewhere
        cheapest = preemptible[0][0] if preemptible else None
        for index, bid in enumerate(ranked):
            density = bid.density
            if density < reserve:
                continue
            job = bid.job
            if bid.renewal is not None or job.id in holdings or can_fit(job):
                return index
            if cheapest is not None and cheapest < density:
                return index
        return len(ranked)

    def _first_to_fit_in_room_of(
        self, job: Job, bids: list[SealedBid], restore: bool = True
    ) -> float:
        """The density of the first of `bids` (at most `CRITICAL_SCAN` tried) that would fit if
        `job` released what it holds now, or 0; the state is left as it was, or with `job`
        released if not `restore`."""
        bids = bids[:CRITICAL_SCAN]
        state = self.market.sim.state
        if not bids or job.id not in state.holdings:
            return 0.0
        held = state.release(job)
        try:
            for bid in bids:
                if _fits(state, bid.job):
                    return bid.density
            return 0.0
        finally:
            if restore:
                state.bind(job, held)

    def renewal_price(self, lease: Lease) -> float:
        """The rent of an incumbent lease for its next term: under second price, what the
        first waiting bid that could use its room offers per GPU-hour (the reserve if none), at
        most the bid that won the lease; under first price, unchanged. A holder thus pays the
        going rate for keeping its place, not the price of the day it signed."""
        market = self.market
        ceiling = self.ceilings.get(lease.lease_id, lease.price)
        if market.config.payment_rule == "first":
            return lease.price
        job = market.jobs_by_name[lease.job]
        waiting = self._ranked_bids()
        density = max(
            market.config.reserve_price_per_gpu_hour, self._first_to_fit_in_room_of(job, waiting)
        )
        return min(ceiling, density * job.gpus * market.epoch_seconds / HOUR)

    def _price(self, bid: SealedBid, critical: float, reserve: float) -> float:
        if self.market.config.payment_rule == "first":
            return bid.price
        density = max(reserve, critical)
        gpu_hours = bid.job.gpus * self.market.epoch_seconds / HOUR
        return min(bid.price, density * gpu_hours)

    def _end(self, lease: Lease, reason: ReleaseReason) -> None:
        market = self.market
        market.stop(market.jobs_by_name[lease.job])
        market.end_lease(lease.lease_id, reason)
