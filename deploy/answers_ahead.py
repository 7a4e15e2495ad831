"""Answers given ahead: a negotiator answers the rest of an auction round before it is asked,
and the market takes such an answer only for the very view it would have sent.

Why: in the cluster every sub-step costs a round trip through the host apiserver (the view
written, the negotiator woken, its status written, the market woken), and a burst of
jobs takes a sub-step per job per agent, so a round of 20 jobs took nine of them. Within an
auction round an agent's next view depends only on its own decisions (`envs/market/lookahead.py`),
so with its view the market sends the agent's queue and standing bids (`lookahead` in the view
document), the negotiator works out its next views and answers them too, each answer recorded in
its Negotiator status as (sub-step, digest of the view document it answers, action, and the bid
itself, with an id of its own: `ahead_id`) -- no Offer object: the status is the agent's own
object, bounded by its schema, and the market validates the bid as any other. At every sub-step
the market compares the digest of the document it would send with the agent's answer for that
sub-step: equal, it takes the answer without asking; different (a bid it rejected, the round
ended, a new arrival), it asks as usual, and the answers given ahead are simply replaced by the
agent's next answer. The lease trace is the simulator's either way: the answer taken is the
policy's answer to exactly that view. Only a negotiator whose policy is a function of the view
answers ahead (`deterministic`): a seeded random one would draw differently from the simulator's.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from gpuparley.deploy.negotiator_messages import ACTIONS
from gpuparley.envs.market.encoding import AgentView, Decision
from gpuparley.envs.market.lookahead import next_view
from gpuparley.envs.market.wire import (
    lookahead_from_dict,
    lookahead_to_dict,
    view_to_dict,
)

LOOKAHEAD_KEY = "lookahead"  # in the view document: not part of what the digest covers
_MARK = "~"  # joins a sub-step's message id and the view digest (never in an agent's name)
MAX_AHEAD = 64  # answers recorded at most (the Negotiator status bounds the list)


def view_digest(document: dict[str, Any]) -> str:
    """A digest of what a view document asks (everything but its lookahead)."""
    asked = {k: v for k, v in document.items() if k != LOOKAHEAD_KEY}
    text = json.dumps(asked, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def ahead_id(agent: str, epoch: int, substep: int, digest: str) -> str:
    """The id of a message answering sub-step `substep` ahead: unlike the id of an answer to an
    asked view (`<agent>.<epoch>.<sub-step>`), it names the view it answers, so a different
    view of the same sub-step, asked later, gets a message of its own."""
    return f"{agent}.{epoch}.{substep}{_MARK}{digest}"


def answer_for(status: dict[str, Any], substep: int, digest: str) -> dict[str, Any] | None:
    """A Negotiator status' answer given ahead for `substep` of the view document whose digest
    is `digest` (its `action`, `message` id and `bid`); None if it gave none for that view."""
    for entry in status.get("ahead") or ():
        if not isinstance(entry, dict):
            continue
        if entry.get("substep") == substep and entry.get("view") == digest:
            return entry
    return None


Decide = Callable[[AgentView, dict[str, Any], str], "tuple[Decision, Any] | None"]


def answers_ahead(
    document: dict[str, Any], view: AgentView, decision: Decision, decide: Decide, agent: str
) -> list[dict[str, Any]]:
    """The answers to the round's next views after `decision` answered `view` (the view of
    `document`), as Negotiator status entries (a bid with the message, as JSON).

    `decide(view, document, message_id)` is the negotiator's policy: (its decision, the message
    it stands for or None for a pass), or None if the decision cannot be sent (the chain stops
    there: asked, the negotiator answers it as usual)."""
    raw = document.get(LOOKAHEAD_KEY)
    if not isinstance(raw, dict):
        return []
    try:
        ahead = lookahead_from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return []
    entries: list[dict[str, Any]] = []
    while len(entries) < MAX_AHEAD:
        following = next_view(view, decision, ahead)
        if following is None or not following[0].slots:
            break
        view, ahead = following
        substep = int(document["substep"]) + 1
        document = {
            **document,
            "substep": substep,
            "view": view_to_dict(view),
            LOOKAHEAD_KEY: lookahead_to_dict(ahead),
        }
        digest = view_digest(document)
        message_id = ahead_id(agent, int(document["epoch"]), substep, digest)
        answered = decide(view, document, message_id)
        if answered is None:
            break
        decision, message = answered
        entry = {"substep": substep, "view": digest, "action": "pass"}
        if message is not None:
            entry.update(action=ACTIONS[message.kind], message=message_id)
            entry["bid"] = message.model_dump(mode="json")
        entries.append(entry)
    return entries
