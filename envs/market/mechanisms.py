"""The mechanisms by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gpuparley.envs.market.auction import Auction
from gpuparley.envs.market.bargain import Bargain

if TYPE_CHECKING:
    from gpuparley.envs.market.core import Market, Mechanism

MECHANISMS: dict[str, Callable[[Market], Mechanism]] = {"auction": Auction, "bargain": Bargain}
CLEARINGS = ("continuous", "epoch")
"""When a market clears (`market.clearing`; `envs.market.core`)."""


def make_mechanism(name: str, market: Market) -> Mechanism:
    try:
        return MECHANISMS[name](market)
    except KeyError:
        raise ValueError(
            f"unknown mechanism {name!r}; choose one of: {', '.join(MECHANISMS)}"
        ) from None
