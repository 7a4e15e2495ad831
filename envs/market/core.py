"""The market: shared state of both mechanisms, and the clearing loop that drives the simulator.

One `Market` owns a `Simulator` (the same one the central schedulers run on), a `Ledger` of
credits, the active leases, and a mechanism (`auction` or `bargain`) that decides who gets what.
Agents act only by sending messages (`receive`), or by decisions that are turned into messages
(`decide`); a message that fails validation is rejected with a reason and changes nothing.

A round runs: `begin` (admit what needs no negotiation) -> sub-steps in which every agent acts
once (bids, offers, answers) -> `clear` (the auction allocates) -> the simulator advances to the
next clearing -> finished jobs pay out their value. With `clearing: continuous` the next clearing
is the next event (an arrival, a completion, the end of a MIG re-layout) or the next epoch
boundary, whichever is first, but no sooner than `clearing_interval` after this one; with
`clearing: epoch` it is the next epoch boundary, so a job arriving mid-epoch waits for it.
Epochs are the billing period: at each boundary budgets refill, running leases pay their rent,
and with incumbency a lease at the end of its term renews itself at its rent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.cluster import Binding
from gpuparley.envs.jobs import Job
from gpuparley.envs.market.demand import HOUR, demand_of, job_name
from gpuparley.envs.market.encoding import Decision
from gpuparley.envs.market.lease_book import LeaseBook
from gpuparley.envs.market.ledger import Ledger
from gpuparley.envs.market.market_metrics import MarketStats, market_summary
from gpuparley.envs.market.messages import (
    MARKET,
    Accept,
    CounterOffer,
    Demand,
    Lease,
    MessageError,
    Reject,
    Release,
    ReleaseReason,
    ResourceItem,
    parse_message,
    trusted,
)
from gpuparley.envs.market.placement import market_chooser, market_plan
from gpuparley.envs.market.rent import charge_rents, refund_unused
from gpuparley.envs.metrics import DeadlockMonitor
from gpuparley.envs.scenario import Scenario
from gpuparley.envs.simulator import JobState, Simulator


@dataclass(frozen=True, slots=True)
class Receipt:
    accepted: bool
    reason: str = ""


_ACCEPTED = Receipt(True)  # receipts are immutable; an accepted one says nothing else


class Mechanism(Protocol):
    name: str

    def begin(self) -> None: ...

    def handle(self, message: Any) -> str | None:
        """Apply a valid message; return a rejection reason instead to leave state unchanged."""

    def clear(self) -> None: ...

    def pending_answer(self, agent: str) -> Any:
        """The negotiation thread awaiting this agent's answer, if any."""

    def pending_answers(self) -> dict[str, Any]:
        """`pending_answer` of every agent that has one."""

    def engaged_jobs(self) -> set[int]:
        """Jobs with a live bid or negotiation whose owner has nothing to decide about now."""

    def standing_bid(self, job: Job) -> float:
        """The rent `job`'s standing bid offers (0 if none)."""

    def renewal_price(self, lease: Lease) -> float:
        """The rent of a lease that renews itself (incumbency) for its next term."""

    def proposal(self, agent: str, job: Job, price: float, common: dict[str, Any]) -> Any:
        """The bid or offer message for `job` at `price` (None if nobody could take it)."""


class Market:
    """The negotiated allocation of one scenario's cluster among its agents."""

    def __init__(
        self,
        scenario: Scenario,
        seed: int,
        mechanism: str | None = None,
        clearing: str | None = None,
    ) -> None:
        from gpuparley.envs.market.mechanisms import CLEARINGS, make_mechanism

        self.scenario = scenario
        self.config = scenario.market
        self.agents: list[str] = [agent.name for agent in scenario.agents]
        self.agent_config = {agent.name: agent for agent in scenario.agents}
        jobs = scenario.build_jobs(seed)
        self.sim = Simulator(scenario.build_cluster(), jobs, None, scenario.settings)
        self.chooser = market_chooser(self.config.placement, jobs)
        self.clearing = clearing or self.config.clearing
        if self.clearing not in CLEARINGS:
            raise ValueError(f"clearing must be one of {', '.join(CLEARINGS)}, not {clearing!r}")
        self.continuous = self.clearing == "continuous"
        self.incumbency = bool(self.config.incumbency)
        self.deadlocks = DeadlockMonitor(self.sim)
        self.jobs_by_name: dict[str, Job] = {job_name(job): job for job in jobs}
        # jobs that need no GPU: placed as they fit, never negotiated
        self.cpu_only = frozenset(job.id for job in jobs if job.pod.gpu.kind == "none")
        self._demands: dict[int, Demand] = {}
        self.ledger = Ledger(self.agents)
        self.epoch = 0
        self.clearings = 0
        self.substep = 0
        self.epoch_seconds = float(self.config.epoch_seconds)
        self.term_epochs = int(self.config.lease_term_epochs)
        self.max_substeps = max(2, int(self.config.max_rounds))
        prices = [CATALOGUE[m].price_per_hour for m in self.sim.state.gpu_model_name]
        self.reference_price = float(np.mean(prices)) if prices else 1.0
        self.cluster_milli = self.sim.state.gpu_count * 1000
        self.quota_milli = {
            a.name: round((a.quota_share or 0.0) * self.cluster_milli) for a in scenario.agents
        }
        self.leases = LeaseBook()
        self._due: tuple[tuple[int, int], list[Lease]] = ((-1, -1), [])  # see `due_leases`
        self.substep_watchers: list[Callable[[Market, int], None]] = []
        self.lapsed: set[str] = set()  # unpaid leases a higher bid needing their room may take
        # Every ended lease with its release, in order: what a market controller publishes.
        self.releases: list[tuple[Lease, Release]] = []
        self.lease_by_job: dict[int, str] = {}
        self.stats = MarketStats()
        self.passed: set[str] = set()
        self.committed: dict[str, float] = dict.fromkeys(self.agents, 0.0)
        self.last_price = 0.0
        self._seen_ids: set[str] = set()
        self.view_cache: dict[str, Any] = {}  # summaries derived from the state, by version
        self._message_counter = 0
        self._lease_counter = 0
        self._settled = 0  # how many of `sim.completed` have paid out
        self.rewards: dict[str, float] = dict.fromkeys(self.agents, 0.0)
        self._net_paid_seen: dict[str, float] = dict.fromkeys(self.agents, 0.0)
        self.utility: dict[str, float] = dict.fromkeys(self.agents, 0.0)
        self.mechanism: Mechanism = make_mechanism(mechanism or self.config.mechanism, self)
        # each agent's budget per epoch: what `_refill` gives it at every epoch boundary
        self.budgets = {a.name: float(a.budget_per_epoch or 0.0) for a in scenario.agents}
        self._refill()
        self.sim.advance(0.0)
        self.mechanism.begin()

    # ------------------------------------------------------------------ messages
    def next_id(self, sender: str) -> str:
        self._message_counter += 1
        return f"{sender}.{self.epoch}.{self._message_counter}"

    def receive(self, data: Any) -> Receipt:
        """Validate and apply one message; never raises, never half-applies."""
        try:
            message = parse_message(data)
        except MessageError as error:
            return self._reject("malformed", str(error))
        if message.kind in ("Lease", "Release") or message.sender == MARKET:
            return self._reject("unauthorised", "only the market issues leases and releases")
        if message.sender not in self.ledger.balances:
            return self._reject("unknown-sender", f"unknown agent {message.sender!r}")
        if message.epoch != self.epoch:
            return self._reject("stale", f"epoch {message.epoch} is not the current {self.epoch}")
        if message.id in self._seen_ids:
            return self._reject("replayed", f"message id {message.id!r} was already received")
        reason = self.mechanism.handle(message)
        if reason is not None:
            return self._reject("invalid", reason)
        self._seen_ids.add(message.id)
        self.stats.messages[message.kind] += 1
        return _ACCEPTED

    def _reject(self, category: str, reason: str) -> Receipt:
        self.stats.rejected[category] += 1
        return Receipt(False, reason)

    def decide(self, agent: str, decision: Decision) -> Receipt:
        """Carry out a decoded policy decision by sending the message it stands for."""
        if decision.kind == "pass":
            self.passed.add(agent)
            return _ACCEPTED
        common = {"id": self.next_id(agent), "sender": agent, "epoch": self.epoch}
        if decision.kind == "bid":
            job = self.jobs_by_name[decision.job or ""]
            message = self.mechanism.proposal(agent, job, decision.price, common)
            if message is None:
                return self._reject("invalid", "no counterparty has room for this job")
            return self.receive(message)
        thread = self.mechanism.pending_answer(agent)
        if thread is None:
            return self._reject("invalid", "nothing to answer")
        common["receiver"] = thread.other(agent)
        common["in_reply_to"] = thread.last_id
        if decision.kind == "accept":
            return self.receive(trusted(Accept, common))
        if decision.kind == "reject":
            return self.receive(trusted(Reject, common))
        common["price"] = decision.price
        common["round"] = thread.round + 1
        return self.receive(trusted(CounterOffer, common))

    # ------------------------------------------------------------------ checks
    def job_asked_for(self, sender: str, demand: Demand) -> tuple[Job | None, str | None]:
        """The job a bid or offer is about, or why the message may not ask for it.

        Both mechanisms apply the same rule: the job exists, belongs to the sender, the demand
        matches it exactly, and it needs a GPU (CPU-only jobs are placed without negotiation).
        """
        job = self.jobs_by_name.get(demand.job)
        if job is None:
            return None, f"unknown job {demand.job!r}"
        if job.owner != sender:
            return None, f"job {demand.job!r} belongs to another agent"
        expected = self.demand(job)
        if demand is not expected and demand != expected:
            return None, "the demand does not match the job"
        if job.pod.gpu.kind == "none":
            return None, "CPU-only jobs need no negotiation"
        return job, None

    def lease_due_for_renewal(
        self, lease_id: str, holder: str, job: str
    ) -> tuple[Lease | None, str | None]:
        """The holder's lease on `job` that is up for renewal this epoch, or why it is not."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.holder != holder or lease.job != job:
            return None, f"no lease {lease_id!r} of yours for this job"
        if lease.expires_epoch > self.epoch:
            return None, "that lease is not due for renewal yet"
        return lease, None

    def demand(self, job: Job) -> Demand:
        """`demand_of(job)`, remembered by job id (its cache hashes the whole job each time)."""
        demand = self._demands.get(job.id)
        if demand is None:
            demand = self._demands[job.id] = demand_of(job)
        return demand

    # ------------------------------------------------------------------ leases
    def issue_lease(
        self,
        holder: str,
        lender: str,
        job: Job,
        price: float,
        quota_milli: int = 0,
        reclaim_notice: int = 0,
    ) -> Lease:
        self._lease_counter += 1
        lease = trusted(
            Lease,
            {
                "id": f"{MARKET}.{self.epoch}.lease.{self._lease_counter}",
                "sender": MARKET,
                "receiver": holder,
                "epoch": self.epoch,
                "lease_id": f"lease-{self._lease_counter}",
                "holder": holder,
                "lender": lender,
                "job": job_name(job),
                "resources": self.resources_of(job),
                "quota_milli": quota_milli,
                "start_epoch": self.epoch,
                "expires_epoch": self.epoch + self.term_epochs,
                "price": price,
                "reclaim_notice_epochs": reclaim_notice,
            },
        )
        self.leases[lease.lease_id] = lease
        self.lease_by_job[job.id] = lease.lease_id
        return lease

    def renew_lease(self, lease: Lease, price: float) -> Lease:
        renewed = lease.model_copy(
            update={
                "expires_epoch": self.epoch + self.term_epochs,
                "price": price,
                "resources": self.resources_of(self.jobs_by_name[lease.job]),
            }
        )
        self.leases[lease.lease_id] = renewed
        return renewed

    def end_lease(self, lease_id: str, reason: ReleaseReason) -> Release:
        lease = self.leases.pop(lease_id)
        self.lapsed.discard(lease_id)
        job = self.jobs_by_name[lease.job]
        self.lease_by_job.pop(job.id, None)
        release = trusted(
            Release,
            {
                "id": self.next_id(MARKET),
                "sender": MARKET,
                "receiver": lease.holder,
                "epoch": self.epoch,
                "lease_id": lease_id,
                "reason": reason,
            },
        )
        self.releases.append((lease, release))
        return release

    def resources_of(self, job: Job) -> tuple[ResourceItem, ...]:
        state = self.sim.state
        items = []
        for pod, placement in state.holdings.get(job.id, ()):
            node = state.spec.nodes[placement.node]
            first = state.gpus_of(placement.node).start
            request = job.pod.gpu
            start = None
            if request.kind == "mig":
                start = state.mig_layout[placement.gpus[0]][placement.instance][1]
            items.append(
                trusted(
                    ResourceItem,
                    {
                        "pod": pod,
                        "node": node.name,
                        "gpu_kind": request.kind,
                        "gpus": tuple(g - first for g in placement.gpus),
                        "mig_profile": request.profile,
                        "mig_start": start,
                        "gpu_milli": request.milli,
                    },
                )
            )
        return tuple(items)

    def due_leases(self) -> list[Lease]:
        """The leases at the end of their term (a shared list: not to be changed), worked out
        again only when the epoch or a lease changed."""
        key = (self.epoch, self.leases.changes)
        if self._due[0] != key:
            due = [lease for lease in self.leases.values() if lease.expires_epoch <= self.epoch]
            self._due = (key, due)
        return self._due[1]

    # ------------------------------------------------------------------ placing
    def plan(self, job: Job) -> list[Binding] | None:
        """Where `job`'s unplaced pods would go now by the market's placement rule, or None."""
        return market_plan(self.sim.state, job, self.chooser)

    def place(self, job: Job, plan: list[Binding]) -> None:
        self.sim.bind(job, plan)
        self.stats.allocations += 1

    def stop(self, job: Job) -> None:
        """Stop a running job whose lease ended without a priced preemption.

        With incumbency the market never throws work away: the job keeps its progress (a
        checkpoint) and waits again. Without it (the re-auction ablation), the scenario's
        `preemption_keeps_progress` decides, as it always did.
        """
        if self.sim.record(job.id).state is JobState.RUNNING:
            self.sim.evict(job, keep_progress=True if self.incumbency else None)

    def term_seconds(self) -> float:
        return self.term_epochs * self.epoch_seconds

    def epoch_value(self, job: Job) -> float:
        """What one epoch of running is worth to a job's owner (the truthful rent): what the
        job is worth if it runs from now to the end (less once its deadline is missed), times
        the share of the remaining work one epoch completes."""
        record = self.sim.record(job.id)
        # max(remaining, 1e-9) and min(1.0, share) without the calls: views ask at every step
        remaining = 1e-9 if record.remaining < 1e-9 else record.remaining
        share = self.epoch_seconds / remaining
        return job.realised_value(self.sim.now + remaining) * (share if share < 1.0 else 1.0)

    def list_cost(self, gpus: float) -> float:
        """List-price rent of `gpus` GPU-equivalents for one epoch."""
        return self.reference_price * gpus * self.epoch_seconds / HOUR

    def record_price(self, rent: float, gpus: float) -> None:
        """Remember a clearing/agreement rent, as credits per GPU-hour."""
        if gpus <= 0:
            return
        per_gpu_hour = rent / (gpus * self.epoch_seconds / HOUR)
        self.last_price = per_gpu_hour
        self.stats.prices.append((self.sim.now, per_gpu_hour))

    def free_balance(self, agent: str) -> float:
        return self.ledger.balances[agent] - self.committed[agent]

    # ------------------------------------------------------------------ epochs
    @property
    def substeps_over(self) -> bool:
        """Every agent has passed and no answer is awaited, or the sub-step cap is reached."""
        if self.substep >= self.max_substeps:
            return True
        answers = self.mechanism.pending_answers()
        return self.passed.issuperset(self.agents) and answers.keys().isdisjoint(self.agents)

    def end_substep(self) -> bool:
        """Close a sub-step; close the round too when it is over. Returns True at round end.

        Every `substep_watchers` callable is then called with the market and the epoch the
        sub-step began in (a lease trace is recorded at this granularity, as a market
        controller publishes it).
        """
        epoch = self.epoch
        ended = self._close_substep()
        for watch in self.substep_watchers:
            watch(self, epoch)
        return ended

    def _close_substep(self) -> bool:
        self.substep += 1
        if not self.substeps_over:
            return False
        self.mechanism.clear()
        self.clearings += 1
        boundary = (self.epoch + 1) * self.epoch_seconds
        until = boundary if not self.continuous else self.next_clearing(boundary)
        self.sim.advance(until, self.deadlocks)
        self._settle_finished()
        if until >= boundary or self.sim.now < until:  # (the horizon stops the clock: move on)
            self.epoch += 1
            self._refill()
            charge_rents(self)
        self.substep = 0
        self.passed.clear()
        self.mechanism.begin()
        return True

    def next_clearing(self, boundary: float) -> float:
        """When a continuous market clears next: the next event or epoch boundary, whichever
        comes first, but no sooner than `clearing_interval` after now."""
        now = self.sim.now
        event = self.sim.next_event_time()
        until = max(event, now + float(self.config.clearing_interval))
        return boundary if until >= boundary or until <= now else until

    def _refill(self) -> None:
        self.ledger.refill(self.budgets, self.config.budget_refill)

    def _settle_finished(self) -> None:
        """Pay out finished jobs' value to their owners and close their leases."""
        completed = self.sim.completed
        if len(completed) == self._settled:
            return  # nothing finished since the last call, so no lease can have ended either
        for job_id, lease_id in list(self.lease_by_job.items()):
            record = self.sim.record(job_id)
            if record.state is JobState.DONE:
                refund_unused(self, self.leases[lease_id], record.finish or self.sim.now)
                self.end_lease(lease_id, "finished")
        for job_id in sorted(completed[self._settled :]):  # by id, as rewards are summed
            record = self.sim.records[job_id]
            value = record.job.realised_value(record.finish)
            self.rewards[record.job.owner] += value
            self.utility[record.job.owner] += value
        self._settled = len(completed)

    def collect_rewards(self) -> dict[str, float]:
        """Value realised minus net payments since the last call, per agent."""
        rewards = {}
        for agent in self.agents:
            net_payment = self.ledger.paid[agent] - self.ledger.received[agent]
            rewards[agent] = self.rewards[agent] - (net_payment - self._net_paid_seen[agent])
            self._net_paid_seen[agent] = net_payment
            self.rewards[agent] = 0.0
        return rewards

    @property
    def finished(self) -> bool:
        """All jobs done, or nothing left that could ever happen."""
        return len(self.sim.completed) == len(self.sim.records)

    def summary_extras(self) -> dict[str, Any]:
        """The market's own metrics of the episode (`market_metrics`)."""
        return market_summary(self)
