"""The market controller under leader election (`market run --leader-elect`, the host chart's two
replicas): a standby never steps the market, the leader does, and a leader that loses its Lease
stops at once instead of running a second market beside the new leader's.

The Lease protocol itself (`deploy/leader.py`) is checked against a real apiserver in
`tests/cluster/test_leader_election.py`; here the elector is a stand-in that says who leads.
"""

from __future__ import annotations

import pytest
from fake_host import FakeKube

from gpuparley.deploy import market_controller
from gpuparley.deploy.market_controller import MarketController, MarketSetupError
from gpuparley.envs.scenario import load_scenario


class Elector:
    """Leads from the `leads_from`-th attempt on, until `loses_at` (attempt numbers, 1-based)."""

    duration = 0.0  # renew before every step

    def __init__(self, leads_from: int, loses_at: int | None = None) -> None:
        self.leads_from, self.loses_at = leads_from, loses_at
        self.attempts = 0
        self.is_leader = False

    def try_acquire_or_renew(self) -> bool:
        self.attempts += 1
        self.is_leader = self.attempts >= self.leads_from and (
            self.loses_at is None or self.attempts < self.loses_at
        )
        return self.is_leader


def _controller(monkeypatch: pytest.MonkeyPatch) -> tuple[MarketController, list[int]]:
    monkeypatch.setattr(market_controller, "check_host_nodes", lambda kube, scenario: None)
    controller = MarketController(FakeKube(), load_scenario("cluster-e2e"), 0)  # type: ignore[arg-type]
    steps: list[int] = []
    monkeypatch.setattr(controller, "resume", lambda: None)  # no stored state to replay
    controller.informers = []  # nothing to watch on the fake host
    monkeypatch.setattr(controller, "substep", lambda: steps.append(controller.market.epoch))
    monkeypatch.setattr(controller, "publish_status", lambda: {"steps": len(steps)})
    return controller, steps


def test_a_standby_waits_and_only_the_leader_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, steps = _controller(monkeypatch)
    elector = Elector(leads_from=3)

    def should_stop() -> bool:
        return len(steps) >= 2

    controller.run(should_stop, elector)  # type: ignore[arg-type]
    assert elector.attempts >= 3  # it waited as a standby until the Lease was its own
    assert len(steps) == 2
    assert controller.telemetry.ready


def test_a_leader_that_loses_its_lease_stops_stepping(monkeypatch: pytest.MonkeyPatch) -> None:
    controller, steps = _controller(monkeypatch)
    elector = Elector(leads_from=1, loses_at=2)
    with pytest.raises(MarketSetupError, match="lost the market's leadership"):
        controller.run(lambda: len(steps) >= 100, elector)  # type: ignore[arg-type]
    assert len(steps) < 100
