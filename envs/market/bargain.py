"""Bargaining: agents own quota shares and lend idle quota to each other for a price.

Rules (one definition for the simulator and the in-cluster negotiators):

* Endowment: each agent owns `quota_share` of the cluster's GPU capacity, counted in milli-GPU
  (a whole GPU = 1000, a MIG instance its compute share), like a ResourceQuota. Simplification:
  one pool across GPU models; physical fit is still checked by the placement engine.
* Within its effective quota (own + borrowed - lent) an agent's jobs are admitted free, oldest
  first, at the start of every round of clearing (CPU-only jobs need no quota).
* An agent short of quota proposes to the agent with the most idle quota that can cover the job
  (resource = the job's demand, term = one lease term, price). The lender accepts, counters or
  rejects; the two alternate until agreement, rejection or `max_rounds` offers.
* An agreement becomes a lease of quota from lender to borrower; the borrower pays the lender the
  agreed rent now (for the rest of the epoch under continuous clearing) and every further epoch
  of the term, and its job is placed at once (if it no
  longer fits physically, the deal fails and nothing is paid). Leases end after their term
  unless renewed by a new agreement.
* Reclaim notice: a lender whose own job waits for quota it has lent out gives notice; the lease
  then ends after `RECLAIM_NOTICE_EPOCHS`, and the borrower's job is stopped if it no longer fits
  the borrower's quota (with incumbency it keeps its progress and waits again).
* An agent that rejects every offer keeps its capacity: nothing is ever taken without consent,
  except by the lease expiry or reclaim it agreed to.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuparley.envs.jobs import Job
from gpuparley.envs.market.messages import (
    Accept,
    CounterOffer,
    Lease,
    Offer,
    Reject,
    ReleaseReason,
    trusted,
)
from gpuparley.envs.market.placement import place_cpu_only
from gpuparley.envs.market.rent import first_payment
from gpuparley.envs.simulator import JobState

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market

RECLAIM_NOTICE_EPOCHS = 1


@dataclass(slots=True)
class Thread:
    """One negotiation between a borrower and a lender about one job."""

    borrower: str
    lender: str
    job: Job
    price: float
    round: int
    awaiting: str
    last_id: str
    renewal: Lease | None
    opened_epoch: int
    quota: int  # milli-GPU of quota to be lent

    def other(self, agent: str) -> str:
        return self.lender if agent == self.borrower else self.borrower


@dataclass(slots=True)
class QuotaBook:
    """Every agent's quota position at one moment, in milli-GPU (a snapshot: read it, and build
    a new one after anything changes)."""

    agents: tuple[str, ...]
    effective: dict[str, int]  # own + borrowed - lent
    usage: dict[str, int]  # taken by the agent's placed jobs
    idle: dict[str, int]  # effective - usage - promised to open negotiations
    # answers already given, by (agent, milli-GPU): the views ask about every waiting job
    _lenders: dict[tuple[str, int], str | None] = field(default_factory=dict, init=False)
    _borrowable: dict[tuple[str, int], bool] = field(default_factory=dict, init=False)

    def shortfall(self, job: Job) -> int:
        """Quota the job's owner lacks to run it: what it must borrow."""
        return max(0, self.usage[job.owner] + job.milli_gpu - self.effective[job.owner])

    def lender_for(self, job: Job) -> str | None:
        """The other agent with the most idle quota, if it covers the shortfall (ties: first)."""
        need = self.shortfall(job)
        key = (job.owner, need)
        if key not in self._lenders:  # one answer per borrower and need in a snapshot
            lenders = [
                (self.idle[other], other)
                for other in self.agents
                if other != job.owner and self.idle[other] >= need
            ]
            self._lenders[key] = max(lenders, key=lambda pair: pair[0])[1] if lenders else None
        return self._lenders[key]

    def can_borrow_for(self, job: Job) -> bool:
        """Whether the job's owner lacks quota for it and another agent could lend enough: the
        jobs worth a proposal (a job within quota is admitted free at the next round)."""
        key = (job.owner, job.milli_gpu)
        answer = self._borrowable.get(key)
        if answer is None:
            answer = self.shortfall(job) > 0 and self.lender_for(job) is not None
            self._borrowable[key] = answer
        return answer


class Bargain:
    """Bilateral alternating-offers negotiation over idle quota."""

    name = "bargain"

    def __init__(self, market: Market) -> None:
        self.market = market
        self.threads: dict[str, Thread] = {}  # keyed by the id of the last message
        self.usage: dict[str, int] = dict.fromkeys(market.agents, 0)
        self._effective: tuple[tuple[str, ...], dict[str, int]] = ((), dict(market.quota_milli))
        self._book: tuple[tuple[object, ...], QuotaBook] | None = None

    # ------------------------------------------------------------ quota book
    def quota_book(self) -> QuotaBook:
        """Every agent's quota position now (one pass over the open negotiations).

        The views ask at every sub-step, and usually nothing has changed since the last time:
        the last book is then returned again, so that its memoised answers carry over too. It is
        kept with what it was computed from: the effective quotas (a new dict whenever the leases
        change), the usage, and the quota promised to open negotiations.
        """
        market = self.market
        effective = self._effective_quotas()
        promised = [
            (thread.lender, thread.quota) for thread in self.threads.values() if not thread.renewal
        ]
        key = (*self.usage.values(), *promised)
        if self._book is not None and self._book[1].effective is effective and self._book[0] == key:
            return self._book[1]
        idle = {agent: effective[agent] - self.usage[agent] for agent in market.agents}
        for lender, quota in promised:
            idle[lender] -= quota  # promised to an open negotiation
        book = QuotaBook(tuple(market.agents), effective, dict(self.usage), idle)
        self._book = (key, book)
        return book

    def _effective_quotas(self) -> dict[str, int]:
        """Own + borrowed - lent quota of every agent; recounted only when the set of leases
        changes (a lease's parties and quota never do, renewals and notices included)."""
        market = self.market
        key = tuple(market.leases)
        if self._effective[0] != key:
            effective = dict(market.quota_milli)
            for lease in market.leases.values():
                effective[lease.holder] += lease.quota_milli
                effective[lease.lender] -= lease.quota_milli
            self._effective = (key, effective)
        return self._effective[1]

    def effective_quota(self, agent: str) -> int:
        return self.quota_book().effective[agent]

    def _recount_usage(self) -> None:
        usage: dict[str, int] = defaultdict(int)
        sim = self.market.sim
        for job_id in sim.state.holdings:
            job = sim.jobs[job_id]
            usage[job.owner] += job.milli_gpu
        self.usage = {agent: usage[agent] for agent in self.market.agents}

    def shortfall(self, job: Job) -> int:
        return self.quota_book().shortfall(job)

    def lender_for(self, job: Job) -> str | None:
        return self.quota_book().lender_for(job)

    # ------------------------------------------------------------ epoch
    def begin(self) -> None:
        self._recount_usage()
        self._give_reclaim_notices()
        self._admit_within_quota()

    def _admit_within_quota(self) -> None:
        market = self.market
        place_cpu_only(market)
        book = self.quota_book()
        for job in market.sim.pending():
            if job.pod.gpu.kind == "none" or book.shortfall(job) > 0:
                continue
            plan = market.plan(job)
            if plan is not None:
                market.place(job, plan)
                self.usage[job.owner] += job.milli_gpu
                book = self.quota_book()

    def _give_reclaim_notices(self) -> None:
        market = self.market
        waiting: dict[str, int] = defaultdict(int)
        for job in market.sim.pending():
            if job.pod.gpu.kind != "none":
                waiting[job.owner] = max(waiting[job.owner], job.milli_gpu)
        deadline = market.epoch + RECLAIM_NOTICE_EPOCHS
        effective = self.quota_book().effective  # notices move expiries, not quota
        for lender, need in waiting.items():
            shortfall = self.usage[lender] + need - effective[lender]
            if shortfall <= 0:
                continue
            lent = sorted(
                (lease for lease in market.leases.values() if lease.lender == lender),
                key=lambda lease: -lease.start_epoch,
            )
            for lease in lent:
                if shortfall <= 0:
                    break
                if lease.expires_epoch > deadline:
                    market.leases[lease.lease_id] = lease.model_copy(
                        update={"expires_epoch": deadline}
                    )
                    shortfall -= lease.quota_milli

    def clear(self) -> None:
        market = self.market
        for thread in self.threads.values():
            market.committed[thread.borrower] -= thread.price
        self.threads.clear()
        self._recount_usage()
        for lease in market.due_leases():
            reason: ReleaseReason = (
                "expired"
                if lease.expires_epoch - lease.start_epoch >= market.term_epochs
                else "reclaimed"
            )
            market.end_lease(lease.lease_id, reason)
            job = market.jobs_by_name[lease.job]
            record = market.sim.record(job.id)
            if record.state is JobState.RUNNING and self.usage[job.owner] > self.effective_quota(
                job.owner
            ):
                market.stop(job)
                self.usage[job.owner] -= job.milli_gpu

    # ------------------------------------------------------------ messages
    def pending_answers(self) -> dict[str, Thread]:
        """The negotiation awaiting each agent's answer: the oldest opened, then by message id."""
        answers: dict[str, Thread] = {}
        for thread in self.threads.values():
            first = answers.get(thread.awaiting)
            if first is None or (thread.opened_epoch, thread.last_id) < (
                first.opened_epoch,
                first.last_id,
            ):
                answers[thread.awaiting] = thread
        return answers

    def engaged_jobs(self) -> set[int]:
        """Jobs under negotiation: their owners act on them through the inbox."""
        return {thread.job.id for thread in self.threads.values()}

    def standing_bid(self, job: Job) -> float:
        """Bargaining has no standing bids: a negotiation lasts one round."""
        del job
        return 0.0

    def renewal_price(self, lease: Lease) -> float:
        """Loans never renew themselves: their renewal is a new agreement."""
        return lease.price

    def pending_answer(self, agent: str) -> Thread | None:
        return self.pending_answers().get(agent)

    def proposal(self, agent: str, job: Job, price: float, common: dict[str, Any]) -> Offer | None:
        market = self.market
        lease_id = market.lease_by_job.get(job.id)
        lender = market.leases[lease_id].lender if lease_id is not None else self.lender_for(job)
        if lender is None:
            return None
        return trusted(
            Offer,
            {
                "receiver": lender,
                "demand": market.demand(job),
                "price": price,
                "term_epochs": market.term_epochs,
                "round": 1,
                "renewal_of": lease_id,
                **common,
            },
        )

    def handle(self, message: Any) -> str | None:
        if isinstance(message, Offer):
            return self._open(message)
        thread = self.threads.get(getattr(message, "in_reply_to", ""))
        if thread is None:
            return "no open negotiation with that message id"
        if message.sender != thread.awaiting or message.receiver != thread.other(message.sender):
            return "it is not this agent's turn in that negotiation"
        if isinstance(message, CounterOffer):
            return self._counter(thread, message)
        if isinstance(message, Accept):
            self._agree(thread)
            return None
        if isinstance(message, Reject):
            self._close(thread)
            return None
        return f"bargaining accepts offers and answers, not {message.kind}"

    def _open(self, offer: Offer) -> str | None:
        market = self.market
        job, reason = market.job_asked_for(offer.sender, offer.demand)
        if job is None:
            return reason
        if offer.receiver == offer.sender or offer.receiver not in market.quota_milli:
            return "offers go to another agent"
        if offer.term_epochs != market.term_epochs or offer.round != 1:
            return f"a first offer has round 1 and a term of {market.term_epochs} epochs"
        if any(t.job.id == job.id for t in self.threads.values()):
            return "this job is already being negotiated"
        renewal = None
        if offer.renewal_of is not None:
            renewal, reason = market.lease_due_for_renewal(
                offer.renewal_of, offer.sender, offer.demand.job
            )
            if renewal is None:
                return reason
            if renewal.lender != offer.receiver:
                return "a renewal goes to the lender of the lease"
            quota = renewal.quota_milli
        else:
            record = market.sim.record(job.id)
            if not record.arrived or record.state is not JobState.PENDING:
                return "the job is not waiting for resources"
            book = self.quota_book()
            quota = book.shortfall(job)
            if quota == 0:
                return "the job fits its owner's own quota; no loan needed"
            if book.idle[offer.receiver] < quota:
                return "the receiver has not enough idle quota"
        if offer.price > market.free_balance(offer.sender) + 1e-9:
            return "the offer exceeds the free balance"
        self.threads[offer.id] = Thread(
            offer.sender,
            offer.receiver,
            job,
            offer.price,
            1,
            offer.receiver,
            offer.id,
            renewal,
            market.epoch,
            quota,
        )
        market.committed[offer.sender] += offer.price
        market.stats.proposals += 1
        return None

    def _counter(self, thread: Thread, counter: CounterOffer) -> str | None:
        market = self.market
        if counter.round != thread.round + 1 or counter.round > market.config.max_rounds:
            return f"the next round is {thread.round + 1} (at most {market.config.max_rounds})"
        affordable = market.free_balance(thread.borrower) + thread.price + 1e-9
        if counter.sender == thread.borrower and counter.price > affordable:
            return "the counter-offer exceeds the free balance"
        del self.threads[thread.last_id]
        market.committed[thread.borrower] += counter.price - thread.price
        thread.price = counter.price
        thread.round = counter.round
        thread.awaiting = thread.other(counter.sender)
        thread.last_id = counter.id
        self.threads[counter.id] = thread
        return None

    def _agree(self, thread: Thread) -> None:
        """Execute an agreement, or let it fail without payment if the job no longer fits."""
        market = self.market
        self._close(thread)
        job = thread.job
        if not market.ledger.can_pay(thread.borrower, thread.price):
            market.stats.rejected["unaffordable-agreement"] += 1
            return
        if thread.renewal is None:
            book = self.quota_book()
            if book.idle[thread.lender] < thread.quota or book.shortfall(job) > thread.quota:
                market.stats.rejected["quota-changed"] += 1
                return
            plan = market.plan(job)
            if plan is None:
                market.stats.rejected["no-physical-room"] += 1
                return
            market.place(job, plan)
            self.usage[job.owner] += job.milli_gpu
            market.issue_lease(
                thread.borrower,
                thread.lender,
                job,
                thread.price,
                thread.quota,
                RECLAIM_NOTICE_EPOCHS,
            )
        else:
            market.renew_lease(thread.renewal, thread.price)
        market.ledger.pay(thread.borrower, thread.lender, first_payment(market, thread.price))
        market.stats.agreements += 1
        market.stats.rounds_to_agreement.append(thread.round)
        market.record_price(thread.price, job.gpus)

    def _close(self, thread: Thread) -> None:
        self.threads.pop(thread.last_id, None)
        self.market.committed[thread.borrower] -= thread.price
