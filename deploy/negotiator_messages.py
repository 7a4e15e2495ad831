"""The message a negotiator sends for a decision: a `Bid` to the market (auction); for
bargaining an `Offer` (a proposal to borrow quota), or a `CounterOffer`, `Accept` or `Reject` in
reply to the other party of the negotiation awaiting its answer.

A decoded decision says what to do about which job at what price; what it does not say is filled
in as `Market.decide` fills it in the simulator: a proposal is sent to the market, which
addresses it to a lender at the proposer's turn (`market_intake.py`); the message a reply
answers, its receiver and round come with the view (`reply` in the view document). Message ids
are `<agent>.<epoch>.<sub-step>`: one per decision, so a resend after a crash is the same object
(409), never a second message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpuparley.envs.market.encoding import Decision
from gpuparley.envs.market.messages import (
    MARKET,
    Accept,
    Bid,
    CounterOffer,
    Demand,
    Offer,
    Reject,
)

Message = Bid | Offer | CounterOffer | Accept | Reject
ACTIONS = {"Bid": "bid", "Offer": "offer", "CounterOffer": "counter", "Accept": "accept"}
ACTIONS["Reject"] = "reject"  # the Negotiator status' `action` for each kind ("pass": none)


class NoMessage(ValueError):
    """The decision cannot become a message; `reason` is the rejection it is counted under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def message_for(
    agent: str,
    decision: Decision,
    payload: dict[str, Any],
    demand: Callable[[], Demand],
    renewal_of: str | None,
    message_id: str | None = None,
) -> Message:
    """The message for a (non-pass) `decision` on the view document `payload`; `demand` gives
    the job's demand from its pods, `renewal_of` the agent's active lease on it (auction);
    `message_id` replaces the id of an answer to an asked view (`answers_ahead.ahead_id`)."""
    epoch, substep = int(payload["epoch"]), int(payload["substep"])
    message_id = message_id or f"{agent}.{epoch}.{substep}"
    common: dict[str, Any] = {"id": message_id, "sender": agent, "epoch": epoch}
    if decision.kind == "bid":
        terms = {"price": decision.price, "term_epochs": int(payload["term_epochs"])}
        if payload.get("mechanism", "auction") == "auction":
            return Bid(receiver=MARKET, demand=demand(), renewal_of=renewal_of, **terms, **common)
        return Offer(receiver=MARKET, demand=demand(), round=1, **terms, **common)
    reply = payload.get("reply")
    if not reply:
        raise NoMessage("nothing-to-answer", f"a {decision.kind} with no negotiation to answer")
    common.update(receiver=reply["receiver"], in_reply_to=reply["in_reply_to"])
    if decision.kind == "accept":
        return Accept(**common)
    if decision.kind == "reject":
        return Reject(**common)
    return CounterOffer(price=decision.price, round=int(reply["round"]) + 1, **common)
