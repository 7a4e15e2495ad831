"""Rent: what a lease costs its holder, epoch by epoch, and what is given back.

An auction lease's rent is per epoch of reference-speed compute (`speed_of`), prepaid at signing
for the rest of the epoch (`first_payment`) and at every epoch boundary after (`charge_rents`,
which also renews leases under incumbency and lapses unpaid ones); the part prepaid after a job
finished is refunded (`refund_unused`). Loans between agents (bargaining) pay what was agreed.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from gpuparley.envs.market.messages import MARKET, Lease

if TYPE_CHECKING:
    from gpuparley.envs.cluster import Binding
    from gpuparley.envs.market.core import Market


def speed_of(market: Market, plan: list[Binding]) -> float:
    """The relative speed a job placed by `plan` runs at (its slowest GPU's; 1 without
    speed scaling): an auction lease pays its rent per epoch of reference-speed compute,
    `rent x speed` per epoch, so what a job pays over its life does not depend on the GPU
    model it lands on (it runs `speed` times as fast)."""
    return market.sim.speed_on(g for _, pod in plan for g in pod.gpus)


def rent_due(market: Market, lease: Lease) -> float:
    """One epoch's rent of a running lease: scaled by its job's speed if the market lent
    it (`speed_of`); a loan between agents pays what they agreed."""
    if lease.lender != MARKET:
        return lease.price
    job = market.jobs_by_name[lease.job]
    return lease.price * market.sim.record(job.id).speed  # `speed_of` its GPUs, set at start


def first_payment(market: Market, rent: float) -> float:
    """What a lease signed now pays at signing: the rent for the rest of this epoch."""
    return rent * signing_share(market)


def signing_share(market: Market) -> float:
    """The share of an epoch's rent a lease signed now pays at signing (`first_payment`): what
    is left of this epoch under continuous clearing, all of it under epoch clearing."""
    if not market.continuous:
        return 1.0
    share = ((market.epoch + 1) * market.epoch_seconds - market.sim.now) / market.epoch_seconds
    # min(1.0, max(0.0, share)) without the calls: asked at every clearing
    return 1.0 if share >= 1.0 else share if share > 0.0 else 0.0


_AGE = operator.attrgetter("start_epoch", "lease_id")  # oldest first


def charge_rents(market: Market) -> None:
    """Each running lease's holder pays its rent for the new epoch.

    With incumbency an auction lease at the end of its term renews itself for another term
    at the mechanism's renewal price (its holder keeps its placement while it pays); a lease
    whose rent goes unpaid lapses until its holder pays again: its job runs on, unpaid, but
    any bid higher than its rent that needs its room takes it (`lapsed`; the job then waits
    again, keeping its progress). Otherwise (loans between agents, or no incumbency) an
    unpaid lease ends and its job stops. Leases are charged oldest first, so an
    over-committed agent loses its newest leases and never goes into debt.
    """
    epoch, ledger = market.epoch, market.ledger
    for lease in sorted(market.leases.values(), key=_AGE):
        if lease.start_epoch == epoch:
            continue  # paid at signing
        auctioned = market.incumbency and lease.lender == MARKET
        if lease.expires_epoch <= epoch:
            if not auctioned:
                continue  # up for renewal (re-auction), or a loan whose lender decides
            lease = market.leases[lease.lease_id] = lease.model_copy(
                update={
                    "expires_epoch": lease.expires_epoch + market.term_epochs,
                    "price": market.mechanism.renewal_price(lease),
                }
            )
        rent = rent_due(market, lease)
        if ledger.can_pay(lease.holder, rent):
            ledger.pay(lease.holder, lease.lender, rent)
            market.lapsed.discard(lease.lease_id)
            continue
        market.stats.rejected["rent-unpaid"] += 1
        if auctioned:
            market.lapsed.add(lease.lease_id)
        else:
            market.stop(market.jobs_by_name[lease.job])
            market.end_lease(lease.lease_id, "lost")


def refund_unused(market: Market, lease: Lease, finish: float) -> None:
    """Give back the part of this epoch's prepaid market rent after the job finished."""
    if lease.lender != MARKET:
        return
    epoch_end = (market.epoch + 1) * market.epoch_seconds
    unused = min(1.0, max(0.0, (epoch_end - finish) / market.epoch_seconds))
    refund = rent_due(market, lease) * unused
    if refund > 0:
        market.ledger.refund(lease.holder, min(refund, market.ledger.market_revenue))
