"""Classic scripted negotiation strategies, all behind the one `Negotiator` interface.

Each strategy sets a *target* price level (a multiple of the anchor of `envs.market.encoding`:
the job's epoch worth for a buyer, the list-price rent for a lender) and then acts the same way:
bid at the target, accept an answer that meets it, otherwise counter at it. What differs is how
the target is chosen:

* aggressive    - a buyer overbids (1.5x worth) to win; a lender asks 1.5x list price.
* budget-pacing - a buyer bids its worth, but never commits more this epoch than its income per
                  epoch, so a budget lasts (the pacing rule of budget-constrained bidders).
* boulware      - time-dependent concession (Faratin et al.), beta = 0.2: holds out at its best
                  price and concedes only near the deadline.
* conceder      - the same with beta = 5: concedes early.
* tit-for-tat   - reciprocates: answers an offer at (2 - the opponent's level), i.e. concedes as
                  much as the other side did; in the auction it follows the last clearing price.
* deadline-aware - truthful, except that a waiting job whose deadline is less than
                  `URGENT_HOURS` away bids 1.5x its worth: earliest-deadline-first as a bid, so
                  a job about to lose its value goes before one that can wait.

"Time" for concession is the negotiation round over the maximum rounds when answering, and for
bids the job's waiting time over its slack before the deadline (a job that waits longer bids
more).
"""

from __future__ import annotations

import numpy as np

from gpuparley.envs.market.encoding import (
    ACCEPT,
    PASS,
    PRICE_LEVELS,
    REJECT,
    TRUTHFUL_LEVEL,
    AgentView,
    InboxItem,
    JobSlot,
    bid_action,
    counter_action,
)
from gpuparley.envs.market.negotiator import first_legal

LOWEST, HIGHEST = PRICE_LEVELS[0], PRICE_LEVELS[-1]
URGENT_HOURS = 2.0  # deadline-aware: slack below which a waiting job outbids


def nearest_level(multiple: float) -> int:
    """Index of the price level closest to a multiple of the anchor."""
    return int(np.argmin([abs(level - multiple) for level in PRICE_LEVELS]))


class TargetStrategy:
    """Bid, accept and counter around a target level; subclasses choose the target."""

    name = "target"
    deterministic = True  # `act` depends on its arguments alone

    def reset(self, seed: int | None = None) -> None:
        return None

    def bid_target(self, view: AgentView, slot: JobSlot) -> float:
        """Target multiple of the job's epoch worth for a bid or proposal."""
        return 1.0

    def answer_target(self, view: AgentView, inbox: InboxItem) -> float:
        """Target multiple of the anchor when answering (a lender asks, a buyer offers)."""
        return 1.0

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView) -> int:
        inbox = view.inbox
        if inbox is not None:
            target = self.answer_target(view, inbox) * inbox.anchor
            acceptable = inbox.price >= target if inbox.as_lender else inbox.price <= target
            if acceptable:
                return first_legal(mask, [ACCEPT])
            level = nearest_level(self.answer_target(view, inbox))
            return first_legal(mask, [counter_action(level), REJECT])
        preferred = []
        for index, slot in enumerate(view.slots):
            top = nearest_level(self.bid_target(view, slot))
            preferred += [bid_action(index, level) for level in range(top, -1, -1)]
        return first_legal(mask, [*preferred, PASS])


def _time_share(slot: JobSlot) -> float:
    """How far a job is towards its deadline: waiting time over waiting + slack."""
    waited = max(slot.waited_hours, 0.0)
    return waited / max(waited + max(slot.slack_hours, 0.0), 1e-9)


class Aggressive(TargetStrategy):
    name = "aggressive"

    def bid_target(self, view: AgentView, slot: JobSlot) -> float:
        return HIGHEST

    def answer_target(self, view: AgentView, inbox: InboxItem) -> float:
        return HIGHEST if inbox.as_lender else 1.0


class BudgetPacing(TargetStrategy):
    name = "budget-pacing"

    def bid_target(self, view: AgentView, slot: JobSlot) -> float:
        allowance = max(view.budget_per_epoch - view.committed, 0.0)
        if slot.epoch_value <= 0:
            return LOWEST
        return min(1.0, allowance / slot.epoch_value)

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView) -> int:
        if view.inbox is None and view.committed >= view.budget_per_epoch:
            return first_legal(mask, [PASS])  # this epoch's income is spent
        return super().act(observation, mask, view)


class TimeDependent(TargetStrategy):
    """Faratin-style concession: level moves from tough to truthful as time runs out."""

    def __init__(self, beta: float, name: str) -> None:
        self.beta = beta
        self.name = name

    def _concession(self, time_share: float) -> float:
        return min(1.0, max(0.0, time_share)) ** (1.0 / self.beta)

    def bid_target(self, view: AgentView, slot: JobSlot) -> float:
        return LOWEST + (1.0 - LOWEST) * self._concession(_time_share(slot))

    def answer_target(self, view: AgentView, inbox: InboxItem) -> float:
        share = self._concession(inbox.round / max(inbox.max_rounds, 1))
        if inbox.as_lender:
            return HIGHEST - (HIGHEST - 1.0) * share
        return LOWEST + (1.0 - LOWEST) * share


class TitForTat(TargetStrategy):
    name = "tit-for-tat"

    def bid_target(self, view: AgentView, slot: JobSlot) -> float:
        if view.last_price <= 0 or slot.value_density <= 0:
            return PRICE_LEVELS[TRUTHFUL_LEVEL]
        # the market's last price relative to what this job is worth per GPU-hour
        return min(HIGHEST, (view.last_price / view.reference_price) / slot.value_density)

    def answer_target(self, view: AgentView, inbox: InboxItem) -> float:
        their_level = inbox.price / max(inbox.anchor, 1e-9)
        return min(HIGHEST, max(LOWEST, 2.0 - their_level))


class DeadlineAware(TargetStrategy):
    name = "deadline-aware"

    def bid_target(self, view: AgentView, slot: JobSlot) -> float:
        urgent = not slot.renewal and slot.slack_hours < URGENT_HOURS
        return HIGHEST if urgent else PRICE_LEVELS[TRUTHFUL_LEVEL]


def boulware() -> TimeDependent:
    return TimeDependent(beta=0.2, name="boulware")


def conceder() -> TimeDependent:
    return TimeDependent(beta=5.0, name="conceder")
