"""Reference negotiators: truthful (bids what a job is worth) and uniformly random.

Truthful: bids what an epoch of running is worth to its most valuable job (level 1.0), one job
per sub-step; when the budget cannot cover that, the highest affordable lower level, or the next
job (a budget-constrained truthful bidder: it never overstates its value). As a lender it
accepts any offer of at least the list price of the capacity when it has work of its own
waiting, and any offer otherwise (idle quota earns nothing, so lending it costs nothing); it
never counters. As a
proposer facing a counter it accepts a price up to the job's worth and rejects anything above.
"""

from __future__ import annotations

import numpy as np

from gpuparley.envs.market.encoding import (
    ACCEPT,
    PASS,
    REJECT,
    TRUTHFUL_LEVEL,
    AgentView,
    bid_action,
)
from gpuparley.envs.market.negotiator import first_legal


class Truthful:
    name = "truthful"
    deterministic = True  # `act` depends on its arguments alone

    def reset(self, seed: int | None = None) -> None:
        return None

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView) -> int:
        inbox = view.inbox
        if inbox is not None:
            if inbox.as_lender:
                reservation = inbox.anchor if view.pending_jobs else 0.0
                return first_legal(mask, [ACCEPT if inbox.price >= reservation else REJECT])
            return first_legal(mask, [ACCEPT if inbox.price <= inbox.anchor else REJECT])
        levels = range(TRUTHFUL_LEVEL, -1, -1)
        slots = range(len(view.slots))
        return first_legal(
            mask, [*(bid_action(slot, level) for slot in slots for level in levels), PASS]
        )


class RandomNegotiator:
    """Uniform over legal actions (a seeded baseline and a fuzzer of the market)."""

    name = "random"
    deterministic = False

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, observation: np.ndarray, mask: np.ndarray, view: AgentView) -> int:
        return int(self.rng.choice(np.flatnonzero(mask)))
