"""Credits: per-agent budgets that are refilled each epoch and never overdrawn.

Conservation is exact and checkable: every credit ever minted is either in an agent's balance,
received by the market (auction revenue), or burned (a `reset` refill discards what an agent did
not spend). Payments between agents move credits and change none of those totals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

from gpuparley.envs.market.messages import MARKET

RefillMode = Literal["reset", "accumulate"]


class BudgetError(ValueError):
    """A payment beyond the payer's balance; nothing was moved."""


class Ledger:
    """Balances of every agent plus the market's revenue account."""

    def __init__(self, agents: Iterable[str]) -> None:
        self.balances: dict[str, float] = dict.fromkeys(agents, 0.0)
        self.market_revenue = 0.0
        self.minted = 0.0
        self.burned = 0.0
        self.paid: dict[str, float] = dict.fromkeys(self.balances, 0.0)
        self.received: dict[str, float] = dict.fromkeys(self.balances, 0.0)

    def refill(self, amounts: Mapping[str, float], mode: RefillMode) -> None:
        """Start-of-epoch budgets: `reset` sets each balance, `accumulate` adds to it."""
        balances = self.balances
        reset = mode == "reset"
        for agent, amount in amounts.items():
            if amount < 0 or not math.isfinite(amount):
                raise ValueError(f"refill for {agent} must be a finite amount >= 0")
            if reset:
                self.burned += balances[agent]
                balances[agent] = 0.0
            balances[agent] += amount
            self.minted += amount

    def can_pay(self, agent: str, amount: float) -> bool:
        return 0 <= amount <= self.balances.get(agent, -1.0) + 1e-9

    def pay(self, payer: str, payee: str, amount: float) -> None:
        """Move `amount` from payer to payee (an agent or the market); all or nothing."""
        balances = self.balances
        balance = balances.get(payer)
        if balance is None:
            raise BudgetError(f"unknown payer {payer!r}")
        if payee != MARKET and payee not in balances:
            raise BudgetError(f"unknown payee {payee!r}")
        if not math.isfinite(amount) or amount < 0:
            raise BudgetError(f"payment must be a finite amount >= 0, got {amount}")
        if not self.can_pay(payer, amount):
            raise BudgetError(f"{payer} cannot pay {amount:.4f}; balance {balance:.4f}")
        if balance < amount:  # (within the tolerance of `can_pay`)
            amount = balance
        balances[payer] = balance - amount
        self.paid[payer] += amount
        if payee == MARKET:
            self.market_revenue += amount
        else:
            balances[payee] += amount
            self.received[payee] += amount

    def refund(self, agent: str, amount: float) -> None:
        """The market pays back `amount` of its revenue to `agent` (rent prepaid for time its
        job no longer ran): its net payments fall by that much."""
        if not math.isfinite(amount) or amount < 0 or amount > self.market_revenue + 1e-9:
            raise BudgetError(f"refund must be within the market's revenue, got {amount}")
        self.market_revenue -= amount
        self.balances[agent] += amount
        self.paid[agent] -= amount

    def imbalance(self) -> float:
        """minted - (balances + market revenue + burned): zero up to rounding, always."""
        return self.minted - (sum(self.balances.values()) + self.market_revenue + self.burned)
