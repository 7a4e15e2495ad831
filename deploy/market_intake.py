"""The market's intake of messages: the `Offer` objects of the negotiation, checked and handed
to the market.

A message to the market (a bid, or a bargaining proposal) waits in its sender's home namespace; a
bargaining answer (counter-offer, accept, reject) in its receiver's inbox
(`objects.outbox_namespace`). The market watches them across namespaces by the receiver label
and is the broker of every message, as in the simulator: the receiver of an offer learns of it
from its view. An object whose namespace or label disagrees with its message is `forged`. Of an
agent's valid messages for one sub-step only one reaches the market -- its decision's own (id
`<agent>.<epoch>.<sub-step>`) if present, else the first by name; the rest are `duplicate` (one
action per agent per sub-step, as in the simulator), and a valid message from an agent that was not
asked (it had nothing to decide) is `unasked`. Every other message goes to the market
(`take`), which rejects malformed, stale, replayed, unauthorised, unknown-job, out-of-turn and
unaffordable ones with a reason and changes nothing. Objects already being deleted (a finalizer
holds them) were consumed before and are skipped; messages the market's journal already holds
(judged before a restart, deleted after it) are deleted without a second verdict.

A bid an agent gave ahead for the view the market would send it (`answers_ahead.py`) comes from
its Negotiator status rather than an Offer object, and is judged the same way, in its agent's
turn.

Consumed objects are deleted only after the sub-step is committed (`consume`), so a market killed
in between finds them again.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.demand import job_name
from gpuparley.envs.market.encoding import Decision
from gpuparley.envs.market.messages import (
    MARKET,
    Accept,
    CounterOffer,
    MessageError,
    Offer,
    Reject,
    parse_message,
)

log = logging.getLogger("gpuparley.market")


def _outbox(spec: dict[str, Any]) -> str | None:
    """The namespace a message must wait in (None if it names no sender or receiver)."""
    sender, receiver = spec.get("sender"), spec.get("receiver")
    if not isinstance(sender, str) or not isinstance(receiver, str):
        return None
    if receiver == MARKET:
        return objects.agent_namespace(sender)
    return objects.inbox_namespace(receiver)


def _forgery(obj: dict[str, Any], given_by: str | None, decision: dict[str, str]) -> str | None:
    """Why a message does not come from where its sender says (None: it does). An Offer object
    carries its sender's label and waits in its outbox; a bid in a Negotiator status (`given_by`:
    the agent whose status holds it, answering the asked view or given ahead) is that agent's,
    under the id it announced."""
    spec = obj.get("spec") or {}
    sender = spec.get("sender")
    if given_by is not None:
        if sender != given_by or spec.get("id") != decision.get(given_by):
            return "a bid in a Negotiator status is its own agent's, under the id it announced"
        return None
    if (obj["metadata"].get("labels") or {}).get(objects.SENDER_LABEL) != sender:
        return "sender label and message sender differ"
    if not isinstance(sender, str) or obj["metadata"].get("namespace") != _outbox(spec):
        return "a message waits in its sender's home (to the market) or its receiver's inbox"
    return None


class MessageIntake:
    """Messages in, verdicts counted, consumed objects deleted after the commit."""

    def __init__(self, kube: Kube, market: Market, telemetry: Telemetry) -> None:
        self.kube = kube
        self.market = market
        self.telemetry = telemetry
        self.rejected: Counter[str] = Counter()
        self.consumed: set[str] = set()  # ids of the messages the market took (the journal's)
        self._handled: set[str] = set()  # uids of the objects already judged
        self._to_delete: list[tuple[str, str]] = []

    def receive(
        self,
        offers: list[dict[str, Any]],
        decision: dict[str, str],
        asked: set[str],
        in_status: dict[str, dict[str, Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Judge `offers` (`decision`: agent -> its decision's message id this sub-step;
        `asked`: the agents with a decision) and the bids the market takes from the Negotiator
        statuses (`in_status`: agent -> the bid its status holds for this sub-step, answering
        the asked view or given ahead, `answers_ahead.py`), in the agents' order as the
        simulator takes decisions; the journal entries of the messages handed to the market, in
        order (`take`)."""
        order = {agent: i for i, agent in enumerate(self.market.agents)}

        def rank(obj: dict[str, Any]) -> tuple[int, bool, str]:
            spec = obj.get("spec") or {}
            sender = spec.get("sender")
            mine = isinstance(sender, str) and spec.get("id") == decision.get(sender)
            return order.get(sender, len(order)), not mine, obj["metadata"]["name"]

        fresh = [
            o
            for o in offers
            if not o["metadata"].get("deletionTimestamp")
            and o["metadata"].get("uid", o["metadata"]["name"]) not in self._handled
        ]
        items = [(rank(obj), obj, None) for obj in fresh]
        for agent, spec in (in_status or {}).items():
            answer = {"metadata": {"name": f"{agent}'s bid in its status"}, "spec": spec}
            items.append(((order.get(agent, len(order)), False, ""), answer, agent))
        entries: list[dict[str, Any]] = []
        bid_from: set[str] = set()
        for _rank, obj, given_by in sorted(items, key=lambda item: item[0]):
            spec = obj.get("spec") or {}
            meta = obj["metadata"]
            sender = spec.get("sender")
            if given_by is None:  # an Offer object: judged once, deleted after the commit
                self._handled.add(meta.get("uid", meta["name"]))
                self._to_delete.append((meta["namespace"], meta["name"]))
            if spec.get("id") in self.consumed:
                continue  # taken before a restart; only its deletion was left to do
            forged = _forgery(obj, given_by, decision)
            if forged is not None:
                self._rejected("forged", obj, forged)
            elif sender in bid_from and self._valid(sender, spec):
                self._rejected("duplicate", obj, "one message per agent and sub-step")
            elif sender not in asked and self._valid(sender, spec):
                self._rejected("unasked", obj, "the agent had nothing to decide this sub-step")
            else:
                before = Counter(self.market.stats.rejected)
                entry, reason = self.take(spec)
                entries.append(entry)
                if entry["accepted"]:
                    bid_from.add(sender)
                    self.telemetry.messages.labels(spec.get("kind", "?"), "received").inc()
                else:
                    category = next(iter(self.market.stats.rejected - before), "invalid")
                    self._rejected(category, obj, reason)
        return entries

    def take(self, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Hand one message to the market; its journal entry (`source`: the object's message
        id, `sender`, `message` or `decision`: what the market was given, `accepted`) and the
        rejection reason.

        A bid goes to `Market.receive` as it is. A bargaining message is taken as the decision
        it stands for (`Market.decide`, what the simulator runs for every action): a proposal
        names no lender -- it is sent to the market, which addresses it at the proposer's turn
        (the lender with the most idle quota, or the lender of the lease it renews), and an
        answer applies to the negotiation awaiting the agent's answer at its turn (normally the
        one its message names; when another agent opened one earlier in the same sub-step, the
        simulator's rule -- oldest first, then by id -- decides, so the cluster does the same).
        Ids, thread order and quota moves within a sub-step are then the simulator's."""
        source, sender = str(spec.get("id")), str(spec.get("sender"))
        self.consumed.add(source)
        entry: dict[str, Any] = {"source": source, "sender": sender}
        decision = self._decision(spec)
        if decision is None:
            receipt = self.market.receive(spec)
            entry["message"] = spec
        else:
            receipt = self.market.decide(sender, decision)
            entry["decision"] = asdict(decision)
        return {**entry, "accepted": receipt.accepted}, receipt.reason

    def replay(self, entry: dict[str, Any]) -> bool:
        """Hand a journal entry to the market again; whether it fared as it did the first time."""
        self.consumed.add(str(entry["source"]))
        if "decision" in entry:
            receipt = self.market.decide(str(entry["sender"]), Decision(**entry["decision"]))
        else:
            receipt = self.market.receive(entry["message"])
        return receipt.accepted == entry["accepted"]

    def _decision(self, spec: dict[str, Any]) -> Decision | None:
        """The simulator's decision a bargaining message of this epoch stands for (None: the
        auction, or a message `Market.receive` must judge -- and reject -- as it is)."""
        if self.market.mechanism.name != "bargain":
            return None
        try:
            message = parse_message(spec)
        except MessageError:
            return None
        if message.epoch != self.market.epoch or message.sender not in self.market.agents:
            return None
        if isinstance(message, Offer):
            job, _reason = self.market.job_asked_for(message.sender, message.demand)
            return None if job is None else Decision("bid", job=job_name(job), price=message.price)
        if isinstance(message, CounterOffer):
            return Decision("counter", message_id=message.in_reply_to, price=message.price)
        if isinstance(message, Accept | Reject):
            kind = "accept" if isinstance(message, Accept) else "reject"
            return Decision(kind, message_id=message.in_reply_to)
        return None

    def consume(self) -> None:
        """Delete the objects judged since the last call (after the sub-step's commit)."""
        self.kube.each(lambda key: self.kube.delete("offers", *key), self._to_delete)
        self._to_delete = []

    def _valid(self, sender: str, spec: dict[str, Any]) -> bool:
        """Whether `spec` is a message the market could take from `sender` now, by the checks
        that change nothing (so a second one is a `duplicate`, while junk keeps its reason)."""
        try:
            message = parse_message(spec)
        except MessageError:
            return False
        if message.sender != sender or message.epoch != self.market.epoch:
            return False
        if message.kind in ("Bid", "Offer"):
            job, _reason = self.market.job_asked_for(sender, message.demand)
            return job is not None
        thread = self.market.mechanism.pending_answer(sender)
        return thread is not None and getattr(message, "in_reply_to", None) == thread.last_id

    def _rejected(self, category: str, obj: dict[str, Any], reason: str) -> None:
        self.rejected[category] += 1
        self.telemetry.rejections.labels(category).inc()
        log.warning(
            "message rejected",
            extra={"category": category, "object": obj["metadata"]["name"], "reason": reason},
        )
