"""The market's own metrics: welfare, payments, negotiation effort and prices.

`MarketStats` holds the counters the mechanisms update as they go; `market_summary` turns them,
with the ledger, into the market's part of an episode summary (the rest, shared with the central
schedulers, is `envs.metrics.summarise`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market


@dataclass
class MarketStats:
    """Counters behind the market metrics of the episode summary."""

    messages: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    proposals: int = 0
    agreements: int = 0
    rounds_to_agreement: list[int] = field(default_factory=list)
    allocations: int = 0
    preemptions: int = 0
    prices: list[tuple[float, float]] = field(default_factory=list)  # (time, credits/GPU-hour)


def market_summary(market: Market) -> dict[str, Any]:
    """Mechanism, welfare, payments, negotiation and price statistics of an episode."""
    stats = market.stats
    prices = [p for _, p in stats.prices]
    utility = {
        agent: market.utility[agent] - market.ledger.paid[agent] + market.ledger.received[agent]
        for agent in market.agents
    }
    proposals = max(stats.proposals, 1)
    return {
        "mechanism": market.mechanism.name,
        "social_welfare": float(sum(market.utility.values())),
        "utility_by_agent": utility,
        "payments_by_agent": dict(market.ledger.paid),
        "market_revenue": market.ledger.market_revenue,
        "ledger_imbalance": market.ledger.imbalance(),
        "proposals": stats.proposals,
        "agreements": stats.agreements,
        "agreement_rate": stats.agreements / proposals if stats.proposals else None,
        "rounds_to_agreement_mean": (
            float(np.mean(stats.rounds_to_agreement)) if stats.rounds_to_agreement else None
        ),
        "price_mean": float(np.mean(prices)) if prices else None,
        "price_cv": (
            float(np.std(prices) / np.mean(prices)) if prices and np.mean(prices) > 0 else None
        ),
        "messages": int(sum(stats.messages.values())),
        "messages_rejected": dict(stats.rejected),
        "messages_per_allocation": (
            sum(stats.messages.values()) / stats.allocations if stats.allocations else None
        ),
        "epochs": market.epoch,
        "clearings": market.clearings,
        "preemptions": stats.preemptions,
        "clearing": market.clearing,
        "placement": market.config.placement,
        "incumbency": market.incumbency,
    }
