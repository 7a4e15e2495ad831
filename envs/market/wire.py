"""The wire form of what a market sends a negotiator (plain JSON types, exact both ways: JSON
floats round-trip): its view, and under the auction the lookahead with which it answers the rest
of a round ahead. A market controller writes these into the view document; the negotiator reads
them back and encodes exactly what the simulator would have encoded.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from gpuparley.envs.market.encoding import AgentView, InboxItem, JobSlot
from gpuparley.envs.market.lookahead import Lookahead


def view_to_dict(view: AgentView) -> dict[str, object]:
    """The wire form of a view (plain JSON types): how a market controller hands an agent its
    view, so the negotiator encodes exactly what the simulator would have encoded."""
    return dataclasses.asdict(view)


def view_from_dict(data: dict[str, object]) -> AgentView:
    """Inverse of `view_to_dict` (JSON floats round-trip exactly); raises ValueError/TypeError
    on a document that is not a view."""
    fields = dict(data)
    slot_documents = cast("list[dict[str, Any]]", fields.pop("slots", []))
    slots = tuple(JobSlot(**slot) for slot in slot_documents)
    inbox = fields.pop("inbox", None)
    return AgentView(
        **fields,  # type: ignore[arg-type]
        slots=slots,
        inbox=InboxItem(**inbox) if inbox else None,  # type: ignore[arg-type]
    )


def lookahead_to_dict(ahead: Lookahead) -> dict[str, Any]:
    return {
        "queue": [dataclasses.asdict(slot) for slot in ahead.queue],
        "more": ahead.more,
        "round_substep": ahead.round_substep,
        "max_substeps": ahead.max_substeps,
        "bids": [list(bid) for bid in ahead.bids],
    }


def lookahead_from_dict(data: dict[str, Any]) -> Lookahead:
    """Inverse of `lookahead_to_dict`; ValueError/TypeError/KeyError on anything else."""
    return Lookahead(
        tuple(JobSlot(**slot) for slot in data["queue"]),
        bool(data["more"]),
        int(data["round_substep"]),
        int(data["max_substeps"]),
        tuple((str(job), float(price)) for job, price in data["bids"]),
    )
