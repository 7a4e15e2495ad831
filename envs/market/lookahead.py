"""An agent's next view within an auction round, worked out by the agent alone.

Within one round of the auction nothing another agent does shows in an agent's view: bids are
sealed and stand until the clearing, the clock and the cluster do not move, and the slots hold
the agent's own jobs. What changes from one sub-step to the next is what the agent's own
decision changed -- the job it bid on leaves its slots (the next of its queue moves up), the
bid's price counts in its committed credits, a pass marks it passed -- and the sub-step counter.
So an agent that knows its queue can answer the sub-steps ahead before it is asked, and a
market that finds the view it would send equal to the one the agent answered can take that
answer without a round trip (`deploy/answers_ahead.py`). The prediction is a shortcut,
never a source of truth: the market compares the whole view and asks as usual on any
difference (a bid it rejected, the round ending, anything this module does not foresee).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gpuparley.envs.market.encoding import JOB_SLOTS, AgentView, Decision, JobSlot


@dataclass(frozen=True)
class Lookahead:
    """What a view does not show but its next one depends on: the agent's candidates after its
    slots, in slot order (`more`: the market has further ones it did not list), where the
    round stands (the view's `epoch_fraction` is `round_substep / max_substeps`), and the
    agent's outstanding bids (job, price) in the order its committed credits sum them."""

    queue: tuple[JobSlot, ...]
    more: bool
    round_substep: int
    max_substeps: int
    bids: tuple[tuple[str, float], ...]


def next_view(
    view: AgentView, decision: Decision, ahead: Lookahead
) -> tuple[AgentView, Lookahead] | None:
    """The view (and lookahead) the agent gets at the next sub-step of the same round if the
    market takes `decision` as sent, or None when that cannot be known from here: a bargaining
    market (others' offers arrive in the inbox), the round's last sub-step, a queue cut short,
    or committed credits that are not the sum of the bids listed."""
    if (
        view.mechanism != "auction"
        or view.inbox is not None
        or decision.kind not in ("bid", "pass")
    ):
        return None
    following = ahead.round_substep + 1
    if following >= ahead.max_substeps:
        return None  # the round ends at the cap: a clearing changes everything
    if _summed(ahead.bids) != view.committed:
        return None
    candidates = view.slots + ahead.queue
    committed, bids = view.committed, ahead.bids
    if decision.kind == "bid":
        chosen = next((s for s in view.slots if s.job == decision.job), None)
        if chosen is None:
            return None
        candidates = tuple(s for s in candidates if s is not chosen)
        if any(job == decision.job for job, _ in bids):  # a bid replaced: re-summed in order
            bids = tuple((job, decision.price if job == decision.job else p) for job, p in bids)
            committed = _summed(bids)
        else:  # a new bid: added last
            bids += ((str(decision.job), decision.price),)
            committed = committed + decision.price
        if ahead.more and len(candidates) < JOB_SLOTS:
            return None  # the slot freed is filled from beyond what the market listed
    following_view = dataclasses.replace(
        view,
        committed=committed,
        epoch_fraction=following / ahead.max_substeps,
        slots=candidates[:JOB_SLOTS],
        passed=view.passed or decision.kind == "pass",
        since_decision_hours=0.0,  # the clock stands still within a round
    )
    rest = Lookahead(candidates[JOB_SLOTS:], ahead.more, following, ahead.max_substeps, bids)
    return following_view, rest


def _summed(bids: tuple[tuple[str, float], ...]) -> float:
    """The prices summed one by one from 0.0, as `Auction._recommit` sums them."""
    total = 0.0
    for _, price in bids:
        total += price
    return total
