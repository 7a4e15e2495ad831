"""The market controller: the auctioneer and lease registry of one host cluster.

It runs the simulator's own market -- the `gpu_market_v1` environment over `Market`
(`envs/market/`: ledger, leases, clearing, message validation; continuous or epoch clearing as
the scenario says) -- driven by real messages instead of in-process calls, sub-step by sub-step:

1. **views**: each agent with something to decide (a job to bid on, an offer to answer: the
   environment's `has_decision`) gets its view (the environment's, with the time since its last
   decision) as the ConfigMap `gpuparley-market-view` in its home namespace, which only that
   agent can read (`market_questions.py`); the others pass without being asked, as in the
   environment, and an agent that answered this very view ahead is not asked either
   (`answers_ahead.py`: a burst's round costs one round trip, not one per sub-step);
2. **answers**: it waits (on a watch of the `Negotiator` objects) until every asked agent's status
   says it answered this (epoch, sub-step), or the sub-step times out (a silent agent passes: a
   partitioned agent only delays);
3. **messages**: it takes the `Offer` objects of the negotiation from its watch of them
   (`market_intake.py`: forged, duplicate, malformed, stale, out-of-turn, unaffordable ones are
   rejected with a reason; bargaining proposals are addressed to a lender);
4. **commit**: the sub-step's inputs (the messages handed to the market, the passes) are appended
   to the market's journal in the host apiserver (`market_state.py`) -- a sub-step nobody was
   asked in (all answered ahead) together with the next write, before anything else leaves the
   controller -- then the environment closes the sub-step (`GPUMarketEnv.advance`: clearing
   when the round is over, the simulator moving to the next clearing, rounds nobody decides in
   played out);
5. **effects** (after the next sub-step's views are out): the leases are reconciled into
   `GPULease` objects in the holders' namespaces (`market_leases.py`: with the `grant` their pods
   must stay inside; an ended one -- once its pods were bound -- is marked `status.ending`, its
   pods are deleted, and once they are gone it gets `status.release`), consumed
   messages are deleted, pods no active lease covers are deleted at each clearing, and a
   lease's pods are bound as soon as all of them exist (`market_pods.py`, on a watch of the
   host's pods).

**Restart-safe**: a controller killed at any point and started again (or a standby replica that
takes over the leader election) replays the journal through the same environment, gets the same
ledger, leases, lease ids and clock, checks them against the stored summary, reconciles the
`GPULease` objects, and goes on from the sub-step it was in: no lease lost or doubled, no pod
under a valid lease evicted, no job leased twice, credits conserved.

Simplification (stated in deploy/README.md): the market's clock is logical (the simulator's; it
moves at clearings, not with wall time), and job progress comes from the market's simulator (the
rig's KWOK containers compute nothing), so a job's lease ends "finished" when the model says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.crds import APPLIED_RELEASES
from gpuparley.deploy.informer import Informer, Wakeup, wait_until
from gpuparley.deploy.kube import ApiError, Kube, retrying
from gpuparley.deploy.leader import LeaderElector
from gpuparley.deploy.market_fence import await_fence
from gpuparley.deploy.market_intake import MessageIntake
from gpuparley.deploy.market_leases import LeasePublisher
from gpuparley.deploy.market_pods import LeasePods
from gpuparley.deploy.market_questions import Questions
from gpuparley.deploy.market_setup import MarketSetupError, check_host_nodes, until_authorised
from gpuparley.deploy.market_state import MarketState, Record, StateError
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.envs.market.messages import MARKET
from gpuparley.envs.market.parallel_env import GPUMarketEnv, has_decision
from gpuparley.envs.scenario import Scenario

log = logging.getLogger("gpuparley.market")
STATUS_CONFIGMAP = "gpuparley-market"
BID_ARRIVAL_SECONDS = 2.0  # how long an announced bid may lag its sender's status in the watch
STATUS_SECONDS = 0.5  # the public status is rewritten at most this often (and at the end)


class MarketController:
    """One market over the host cluster, stepped sub-step by sub-step."""

    def __init__(
        self,
        kube: Kube,
        scenario: Scenario,
        seed: int,
        mechanism: str | None = None,
        *,
        substep_timeout: float = 10.0,
        placement_timeout: float = 30.0,
        max_epochs: int | None = None,
        telemetry: Telemetry | None = None,
        trace_path: str | Path | None = None,
        keep_released: int | None = None,
    ) -> None:
        if keep_released is not None and keep_released > APPLIED_RELEASES // 2:
            raise MarketSetupError(
                f"--keep-released {keep_released}: keep at most {APPLIED_RELEASES // 2} released"
                f" leases per agent (a negotiator lists at most {APPLIED_RELEASES} it applied)"
            )
        self.kube = kube
        self.env = GPUMarketEnv(scenario=scenario, mechanism=mechanism, max_epochs=max_epochs)
        self.env.reset(seed=seed)
        market = self.env.market
        assert market is not None
        self.market = market
        self.agents = list(market.agents)
        self.seq = 0  # sub-steps closed: the journal's length once `_uncommitted` is written
        self.substep_timeout = substep_timeout
        self.max_epochs = self.env.max_epochs
        self.telemetry = telemetry or Telemetry("market")
        self.timeouts: Counter[str] = Counter()
        self.resumed_at = 0  # the journal length this process started from
        self.state = MarketState(
            kube,
            {
                "scenario": scenario.name,
                "seed": seed,
                "mechanism": market.mechanism.name,
                "clearing": market.clearing,
            },
        )
        self.wakeup = Wakeup()
        self._cleared = False  # a clearing happened whose effects are not all made yet
        self._unsettled = False  # sub-steps closed whose effects are not all made yet
        self._status_at = 0.0  # when the status was last published
        # Sub-steps answered wholly ahead, closed but not in the journal yet (see `_journal`).
        self._uncommitted: list[Record] = []
        # Watches of every namespace (no namespace given).
        self.negotiators = Informer(kube, "negotiators", notify=self.wakeup)
        # The auction takes bids to the market only; bargaining brokers messages between agents.
        self.selector = objects.RECEIVER_LABEL
        if market.mechanism.name == "auction":
            self.selector = f"{objects.RECEIVER_LABEL}={MARKET}"
        self.offers = Informer(kube, "offers", selector=self.selector, notify=self.wakeup)
        self.pod_watch = Informer(kube, "pods", notify=self.wakeup)
        self.questions = Questions(kube, self.env, self.negotiators)
        self.bids = MessageIntake(kube, market, self.telemetry)
        self.pods = LeasePods(
            kube, market, self.agents, self.telemetry, self.pod_watch.objects, self.state.confirm
        )
        self.leases = LeasePublisher(
            kube,
            market,
            self.pods,
            self.telemetry,
            self.wakeup,
            placement_timeout,
            Path(trace_path) if trace_path else None,
            self._applied_releases,
            keep_released,
        )
        self.informers = [self.negotiators, self.offers, self.pod_watch, self.leases.watch]

    @property
    def trace(self) -> list[Any]:
        return self.leases.recorder.events

    @property
    def rejected(self) -> Counter[str]:
        return self.bids.rejected

    # ------------------------------------------------------------------ the loop
    @property
    def done(self) -> bool:
        return self.market.finished or self.market.epoch >= self.max_epochs

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, elector: LeaderElector | None = None
    ) -> dict[str, Any]:
        """Step until the workload is done (or the epoch cap, or `should_stop`); the summary.

        With an `elector` (several replicas, `--leader-elect`) only the leader steps; a standby
        waits, and when it takes over it resumes the market from the state in the apiserver.
        A leader that cannot renew stops stepping before anyone else may take over."""
        retrying(
            lambda: until_authorised(lambda: check_host_nodes(self.kube, self.market.scenario))
        )
        while elector is not None and not should_stop() and not elector.try_acquire_or_renew():
            self.telemetry.heartbeat()
            self.telemetry.leader.set(0)
            time.sleep(elector.duration / 5)
        renewed = time.monotonic()
        try:
            if elector is not None and not retrying(lambda: await_fence(self.kube)):
                raise MarketSetupError("the market fence still refuses this elected replica")
            for informer in self.informers:  # first: `resume` ends leases, reading their pods
                informer.start()
            for informer in self.informers:
                informer.wait_synced(30.0)
            self.resume()
            # Objects every run writes, made before the first question: start-up, not
            # negotiation (a fresh market's first view write would otherwise also create).
            retrying(self.questions.open_views)
            self.publish_status()
            # When, and its start-up's requests: for whoever measures what placements cost.
            log.info("ready", extra={"requests": dict(self.kube.requests)})
            self.telemetry.ready = True
            while not self.done and not should_stop():
                if elector is not None:
                    if time.monotonic() - renewed > elector.duration / 3:
                        elector.try_acquire_or_renew()
                        renewed = time.monotonic()
                    self.telemetry.leader.set(1 if elector.is_leader else 0)
                    if not elector.is_leader:
                        raise MarketSetupError("lost the market's leadership; exiting to restart")
                self._step()
            while self.done and self._unsettled:  # the last sub-step's effects, with the
                self._step()  # last leases' pods admitted before it goes (`LeasePublisher.settle`)
        except StateError as exc:
            raise MarketSetupError(str(exc)) from None
        finally:
            for informer in self.informers:
                informer.stop()
        return self.publish_status()

    def resume(self) -> None:
        """Replay the stored journal (nothing for a new market), check the state it gives
        against the stored summary, and reconcile the GPULease objects with it."""
        try:
            records = retrying(self.state.load)
        except StateError as exc:
            raise MarketSetupError(str(exc)) from None
        existing = retrying(lambda: self.kube.list("gpuleases"))
        if not records and existing:
            names = ", ".join(o["metadata"]["name"] for o in existing[:3])
            raise MarketSetupError(
                f"GPULease objects of an earlier market exist ({names}, ...) but no market state: "
                "delete them before starting a new market (their ids would collide)"
            )
        for record in records[:-1]:
            self._replay(record)
        if records:  # the summary is of the state the last record was applied to
            self._check_summary(self.state.summary)
            self._restore_counters(self.state.summary.get("counters") or {})
            self._replay(records[-1])
            log.info("market resumed", extra={"substeps": self.seq, "epoch": self.market.epoch})
        self.resumed_at = self.seq
        self.leases.changes = []  # the replayed sub-steps' effects: reconciled here instead
        self.leases.adopt(existing)
        retrying(self.leases.publish)
        self.leases.rewrite_trace()
        # The last sub-step's effects may not all have been made: the first `_effects` also
        # deletes the pods no lease covers, as after a clearing (their leases may have ended).
        self._cleared = self._unsettled = bool(records)

    def _replay(self, record: Record) -> None:
        """Close one stored sub-step again: its messages handed to the market anew (each must
        fare as it did, or the journal is not this market's), then `_close`."""
        for entry in record.messages:
            if not self.bids.replay(entry):
                raise MarketSetupError(
                    f"the journal does not replay: message {entry['source']!r} at sub-step "
                    f"{self.seq} is not taken as it was (the scenario or the code changed)"
                )
        self._close(record)

    def _close(self, record: Record) -> None:
        """Close the sub-step whose bids the market took: the passes, then the environment."""
        self.market.passed.update(record.passed)
        self.env.advance()
        self.seq += 1

    def substep(self) -> None:
        """Ask the agents with a decision, take their bids, commit, close, publish."""
        market = self.market
        self.telemetry.heartbeat()
        token = (market.epoch, self.seq)
        started = time.perf_counter()
        deciders = [a for a in self.agents if has_decision(self.env.views[a])]
        documents = self.questions.documents(deciders, token)
        ahead = self.questions.answered_ahead(documents, token)
        asked = [agent for agent in deciders if agent not in ahead]
        if asked:  # a new view may replace the answers given ahead the journal still needs
            self._flush()
        self.questions.publish({agent: documents[agent] for agent in asked})
        if asked or self._cleared:  # else nothing is waited for: the effects can wait too
            self._effects()  # the last sub-steps', while the asked negotiators think
        answers = self._wait_for_answers(asked, token)
        # The asked agents' bids: in their statuses (auction), or Offer objects (bargaining).
        given = self.questions.bids(token, list(answers))  # the bids taken from the statuses
        offers = self._offers({a: answer for a, answer in answers.items() if a not in given})
        decision = {a: f"{a}.{token[0]}.{token[1]}" for a in self.agents}
        for agent, answer in ahead.items():
            answers[agent] = (str(answer.get("action") or "pass"), str(answer.get("message") or ""))
            if isinstance(answer.get("bid"), dict):
                decision[agent], given[agent] = answers[agent][1], answer["bid"]
        entries = self.bids.receive(offers, decision, set(deciders), given)
        for agent in deciders:
            if agent not in answers:
                self.timeouts[agent] += 1
                self.telemetry.rejections.labels("timeout").inc()
        passed = [a for a in self.agents if answers.get(a, ("pass", ""))[0] == "pass"]
        clearings = market.clearings
        record = Record(entries, passed)
        self._journal(record, asked=bool(asked))  # before anything of it leaves the controller
        self._close(record)
        self._cleared = self._cleared or market.clearings != clearings
        self._unsettled = True
        events = self.leases.write_trace()
        log.info(
            "sub-step closed",
            extra={
                "epoch": token[0],
                "substep": token[1],
                "asked": len(asked),
                "answered_ahead": len(ahead),
                "messages": len(entries),
                "leases_changed": len(events),
                "seconds": round(time.perf_counter() - started, 4),
            },
        )
        self.telemetry.price.labels("clearing").set(market.last_price)
        self.telemetry.price.labels("reference").set(market.reference_price)

    def _effects(self) -> None:
        """What the committed sub-steps changed, made real on the host: leases published, after
        a clearing the pods no lease covers deleted, consumed messages deleted (last: nobody
        waits on that), and after a clearing (at most twice a second, and at the end) the status
        published. Run right after the next sub-step's views are out, so the negotiators decide
        meanwhile, and skipped while nobody is asked and nothing cleared (answers given ahead).
        Idempotent: after a failure (the apiserver went away) the loop calls it again until it
        is through."""
        if not self._unsettled:
            return
        self._flush()
        self.leases.apply_changes()  # first: the holders wait on them
        if self._cleared:
            self.telemetry.epoch.set(self.market.epoch)
            self.pods.enforce()
        if self.done:  # the last leases' pods first (`run`), then the rest
            retrying(self.leases.settle)
        self.bids.consume()
        if self._cleared:
            if self.done or time.monotonic() - self._status_at > STATUS_SECONDS:
                self.publish_status()
                self._status_at = time.monotonic()
            self._cleared = False
        self._unsettled = False

    def _step(self) -> None:
        """One sub-step, or -- after the apiserver failed us -- the rest of the last one's
        effects (a sub-step not committed yet is simply asked again)."""
        try:
            if self.done:
                self._effects()
            else:
                self.substep()
        except ApiError as exc:  # Unavailable, or e.g. 403 while a restarted apiserver warms up
            log.warning("apiserver request failed; retrying", extra={"error": str(exc)})
            self.telemetry.heartbeat()
            self.wakeup.wait(1.0)

    # ------------------------------------------------------------------ views and answers
    def _wait_for_answers(
        self, agents: list[str], token: tuple[int, int]
    ) -> dict[str, tuple[str, str]]:
        """The asked agents' answers; those that did not answer in time are missing. Leases'
        pods are admitted meanwhile (the wait is on the same watches)."""
        answers: dict[str, tuple[str, str]] = {}

        def all_in() -> bool:
            nonlocal answers
            self.pods.admit(self.pods.lease_pods())
            answers = {a: v for a, v in self.questions.answers(token).items() if a in agents}
            return len(answers) == len(agents)

        wait_until(self.wakeup, all_in, self.substep_timeout)
        return answers

    def _offers(self, answers: dict[str, tuple[str, str]]) -> list[dict[str, Any]]:
        """The Offers addressed to the market, once every announced bid is among them (the bid
        is created before its sender's status, but two watches do not keep that order); a list
        request if one does not show up in time."""
        announced = {m for action, m in answers.values() if action != "pass" and m}

        def arrived() -> bool:
            return announced <= {(o.get("spec") or {}).get("id") for o in self.offers.objects()}

        if wait_until(self.wakeup, arrived, BID_ARRIVAL_SECONDS):
            return self.offers.objects()
        return self.kube.list("offers", None, selector=self.selector)

    # ------------------------------------------------------------------ state
    def _summary(self) -> dict[str, Any]:
        market = self.market
        return {
            "substeps": self.seq,
            "epoch": market.epoch,
            "now": round(market.sim.now, 6),
            "leases": sorted(market.leases),
            "released": len(market.releases),
            "balances": {a: round(b, 6) for a, b in market.ledger.balances.items()},
            "counters": {
                "rejected": dict(self.bids.rejected),
                "timeouts": dict(self.timeouts),
                "placement_timeouts": self.leases.placement_timeouts,
                "evicted": self.pods.evicted,
                "misfits": dict(self.pods.misfits),
                "reclaimed_pods": self.pods.reclaimed_pods,
                "collected": dict(self.leases.collector.decided),
            },
        }

    def _applied_releases(self, holder: str) -> set[str]:
        """The released GPULeases whose end `holder`'s negotiator has applied, as its status
        (its own object: nobody else can write it) lists them."""
        negotiator = self.negotiators.get(
            objects.agent_namespace(holder), objects.agent_name(holder)
        )
        return set(((negotiator or {}).get("status") or {}).get("appliedReleases") or [])

    def _check_summary(self, stored: dict[str, Any]) -> None:
        replayed = self._summary()
        differ = [k for k in stored if k != "counters" and stored[k] != replayed.get(k)]
        if differ:
            raise MarketSetupError(
                f"the replayed market differs from the stored state in {', '.join(differ)} "
                f"(stored {[stored[k] for k in differ]}, replayed {[replayed[k] for k in differ]})"
                ": the scenario or the code changed since that run"
            )

    def _restore_counters(self, counters: dict[str, Any]) -> None:
        self.bids.rejected.update(counters.get("rejected") or {})
        self.timeouts.update(counters.get("timeouts") or {})
        self.leases.placement_timeouts = int(counters.get("placement_timeouts") or 0)
        self.pods.evicted.extend(counters.get("evicted") or [])
        self.pods.misfits.update(counters.get("misfits") or {})
        self.pods.reclaimed_pods = int(counters.get("reclaimed_pods") or 0)
        self.leases.collector.restore(counters.get("collected") or {})

    def _journal(self, record: Record, asked: bool) -> None:
        """Commit the sub-step, or -- nobody was asked in it -- hold it for the next commit.

        Why it may wait: the inputs of a sub-step answered wholly ahead are the answers in the
        negotiators' statuses, which stay there until a new view is published (`substep`
        flushes first), and nothing of it leaves the controller before `_effects` (which flushes
        first). A controller killed meanwhile redoes it from the same inputs, as it would a
        sub-step killed before its commit. So a round answered ahead costs one journal write."""
        self._uncommitted.append(record)
        if asked:
            self._flush()

    def _flush(self) -> None:
        """Commit the sub-steps held by `_journal`. It runs before anything else of the next
        sub-step or of the effects, so the state is still the one the last of them left, and
        its summary is the one to store."""
        if not self._uncommitted:
            return
        records, summary, delay = self._uncommitted, self._summary(), 0.1
        # Retried until it is written (the market has taken the messages, so it can neither go
        # on without the records nor forget them); StateError if deposed.
        while True:
            try:
                self.state.commit(records, summary)
                self._uncommitted = []
                self.leases.collector.committed = summary["counters"]["collected"]
                return
            except ApiError as exc:
                log.warning("cannot commit the sub-step; retrying", extra={"error": str(exc)})
                self.telemetry.heartbeat()
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    # ------------------------------------------------------------------ status
    def publish_status(self) -> dict[str, Any]:
        """The market's public record (ConfigMap `gpuparley-market` in gpuparley-system)."""
        market = self.market
        extras = market.summary_extras()
        status = {
            "epoch": market.epoch,
            "substeps": self.seq,
            "resumed_at": self.resumed_at,
            "finished": market.finished,
            "done": self.done,
            "leases_active": len(market.leases),
            "rejected": dict(self.bids.rejected),
            "timeouts": dict(self.timeouts),
            "placement_timeouts": self.leases.placement_timeouts,
            "evicted_pods": len(self.pods.evicted),
            "evicted": self.pods.evicted[-20:],
            "misfit_pods": dict(self.pods.misfits),
            "reclaimed_pods": self.pods.reclaimed_pods,
            "social_welfare": extras["social_welfare"],
            "ledger_imbalance": extras["ledger_imbalance"],
            "agreements": extras["agreements"],
            "messages": extras["messages"],
            "requests": dict(self.kube.requests),
        }
        self.telemetry.apiserver_requests.labels("host").set(sum(self.kube.requests.values()))
        try:
            self.kube.apply_configmap(
                objects.MARKET_NAMESPACE, STATUS_CONFIGMAP, {"status.json": json.dumps(status)}
            )
        except ApiError as exc:
            log.error("cannot publish the market status", extra={"error": str(exc)})
        return status
