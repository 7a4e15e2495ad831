"""The lease trace: what the market allocated, epoch by epoch, in a form two runs can compare.

The market controller writes it while it runs against real clusters; `simulated_trace` produces
it from the simulator alone for the same scenario, seed and policy. Both go through
`epoch_events`, so sim-to-real parity is a comparison of two lists, and a difference names the
epoch and the job where the runs parted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gpuparley.envs.market.core import Market
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.messages import Lease
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario


@dataclass(frozen=True)
class LeaseEvent:
    """A lease signed, renewed or ended during `epoch` (at its clearing, or at an agreement)."""

    epoch: int
    event: str  # "signed" | "renewed" | "released"
    lease_id: str
    job: str
    holder: str
    price: float
    placement: tuple[tuple[int, str, tuple[int, ...], int | None], ...]  # (pod, node, gpus, mig)
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _placement(lease: Lease) -> tuple[tuple[int, str, tuple[int, ...], int | None], ...]:
    return tuple((r.pod, r.node, tuple(r.gpus), r.mig_start) for r in lease.resources)


def _event(epoch: int, kind: str, lease: Lease, reason: str = "") -> LeaseEvent:
    return LeaseEvent(
        epoch,
        kind,
        lease.lease_id,
        lease.job,
        lease.holder,
        round(lease.price, 9),
        _placement(lease),
        reason,
    )


def epoch_events(
    market: Market, before: dict[str, Lease], releases_seen: int, epoch: int
) -> list[LeaseEvent]:
    """What changed between `before` (the leases when the step began) and now;
    `releases_seen` is how many of `market.releases` were already reported. A lease signed and
    ended within the step (an environment step plays out rounds nobody decides in) is reported
    as both."""
    events = []
    for lease, release in market.releases[releases_seen:]:
        if lease.lease_id not in before:
            events.append(_event(epoch, "signed", lease))
        events.append(_event(epoch, "released", lease, release.reason))
    for lease_id, lease in market.leases.items():
        old = before.get(lease_id)
        if old is None:
            events.append(_event(epoch, "signed", lease))
        elif old is not lease and old != lease:  # the same object: unchanged, and cheap to tell
            events.append(_event(epoch, "renewed", lease))
    return events


class LeaseRecorder:
    """Records a market's lease events sub-step by sub-step (an environment step may close many
    sub-steps): the simulated trace, and the market controller's (which runs the same
    environment), so both have one granularity and one epoch label per event."""

    def __init__(self) -> None:
        self.events: list[LeaseEvent] = []
        self.before: tuple[dict[str, Lease], int] = ({}, 0)
        self.market: Market | None = None

    def __call__(self, env: GPUMarketEnv) -> None:
        """`play_episode`'s watcher: follow the episode's market from its reset on."""
        if env.market is not None:
            self.follow(env.market)

    def follow(self, market: Market) -> None:
        """Record `market`'s events from now on (once per market)."""
        if market is not self.market:
            self.market = market
            self.before = (dict(market.leases), len(market.releases))
            market.substep_watchers.append(self.substep_closed)

    def substep_closed(self, market: Market, epoch: int) -> None:
        leases, releases_seen = self.before
        self.events.extend(epoch_events(market, leases, releases_seen, epoch))
        self.before = (dict(market.leases), len(market.releases))


def simulated_trace(
    scenario: Scenario,
    seed: int,
    negotiator: Negotiator,
    mechanism: str | None = None,
    max_epochs: int | None = None,
) -> list[LeaseEvent]:
    """The lease trace of a simulated market run, every seat played by `negotiator`."""
    env = GPUMarketEnv(scenario=scenario, mechanism=mechanism, max_epochs=max_epochs)
    recorder = LeaseRecorder()
    play_episode(env, negotiator, seed, recorder)
    return recorder.events
