"""The market's intake of bids: the `Offer` objects addressed to it, checked and handed over.

Bids wait in their senders' home namespaces (the market watches them across namespaces, by the
receiver label). An object whose namespace or label disagrees with its sender is `forged`. Of an
agent's valid bids for one sub-step only one reaches the market -- its decision's own (id
`<agent>.<epoch>.<sub-step>`) if present, else the first by name; the rest are `duplicate` (one
action per agent per sub-step, as in the simulator). Every other message goes to
`Market.receive`, which rejects malformed, stale, replayed, unauthorised, unknown-job and
unaffordable ones with a reason and changes nothing. Objects already being deleted (a finalizer
holds them) were consumed before and are skipped; bids the market's journal already holds (taken
before a restart, deleted after it) are deleted without a second verdict.

Consumed objects are deleted only after the sub-step is committed (`consume`), so a market killed
in between finds them again.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.messages import MessageError, parse_message

log = logging.getLogger("gpuparley.market")


class BidIntake:
    """Bids in, verdicts counted, consumed objects deleted after the commit."""

    def __init__(self, kube: Kube, market: Market, telemetry: Telemetry) -> None:
        self.kube = kube
        self.market = market
        self.telemetry = telemetry
        self.rejected: Counter[str] = Counter()
        self.consumed: set[str] = set()  # ids of the bids the market took (the journal's)
        self._handled: set[str] = set()  # uids of the objects already judged
        self._to_delete: list[tuple[str, str]] = []

    def receive(
        self, offers: list[dict[str, Any]], decision: dict[str, str]
    ) -> list[dict[str, Any]]:
        """Judge `offers` (`decision`: agent -> its decision's bid id this sub-step); the
        accepted messages, in the order the market took them."""
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
        accepted: list[dict[str, Any]] = []
        bid_from: set[str] = set()
        for obj in sorted(fresh, key=rank):
            spec = obj.get("spec") or {}
            meta = obj["metadata"]
            sender = spec.get("sender")
            self._handled.add(meta.get("uid", meta["name"]))
            self._to_delete.append((meta["namespace"], meta["name"]))
            if spec.get("id") in self.consumed:
                continue  # taken before a restart; only its deletion was left to do
            if (meta.get("labels") or {}).get(objects.SENDER_LABEL) != sender:
                self._rejected("forged", obj, "sender label and message sender differ")
            elif not isinstance(sender, str) or meta.get("namespace") != objects.agent_namespace(
                sender
            ):
                self._rejected("forged", obj, "a bid must wait in its sender's home namespace")
            elif sender in bid_from and self._valid_bid(sender, spec):
                self._rejected("duplicate", obj, "one bid per agent and sub-step")
            else:
                before = Counter(self.market.stats.rejected)
                receipt = self.market.receive(spec)
                if receipt.accepted:
                    bid_from.add(sender)
                    accepted.append(spec)
                    self.consumed.add(str(spec.get("id")))
                    self.telemetry.messages.labels(spec.get("kind", "?"), "received").inc()
                else:
                    category = next(iter(self.market.stats.rejected - before), "invalid")
                    self._rejected(category, obj, receipt.reason)
        return accepted

    def consume(self) -> None:
        """Delete the objects judged since the last call (after the sub-step's commit)."""
        for namespace, name in self._to_delete:
            self.kube.delete("offers", namespace, name)
        self._to_delete = []

    def _valid_bid(self, sender: str, spec: dict[str, Any]) -> bool:
        """Whether `spec` is a bid the market would take from `sender` now, by the checks that
        change nothing (so a second bid is a `duplicate`, while junk keeps its own reason)."""
        try:
            message = parse_message(spec)
        except MessageError:
            return False
        if message.kind != "Bid" or message.sender != sender or message.epoch != self.market.epoch:
            return False
        job, _reason = self.market.job_asked_for(sender, message.demand)
        return job is not None

    def _rejected(self, category: str, obj: dict[str, Any], reason: str) -> None:
        self.rejected[category] += 1
        self.telemetry.rejections.labels(category).inc()
        log.warning(
            "message rejected",
            extra={"category": category, "object": obj["metadata"]["name"], "reason": reason},
        )
