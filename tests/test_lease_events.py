"""The lease trace's events between two looks at a market (`deploy/trace.epoch_events`): the
one definition both sides of the sim-to-real parity check use, so a mistake in it would be
equal on both sides and never seen by that check."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gpuparley.deploy.trace import LeaseEvent, epoch_events
from gpuparley.envs.market.messages import Lease, Release, ResourceItem


def _lease(lease_id: str, job: str, expires: int = 4, price: float = 1.5) -> Lease:
    return Lease(
        id=f"market.{lease_id}", sender="market", receiver="alpha", epoch=0, lease_id=lease_id,
        holder="alpha", lender="market", job=job, start_epoch=0, expires_epoch=expires,
        price=price, resources=(ResourceItem(pod=0, node="n1", gpu_kind="whole", gpus=(2,)),),
    )  # fmt: skip


def _release(lease: Lease, reason: str = "finished") -> Release:
    return Release(
        id=f"market.end-{lease.lease_id}", sender="market", receiver=lease.holder, epoch=3,
        lease_id=lease.lease_id, reason=reason,
    )  # fmt: skip


def _market(leases: list[Lease], releases: list[tuple[Lease, Release]]) -> Any:
    return SimpleNamespace(leases={lease.lease_id: lease for lease in leases}, releases=releases)


def _kinds(events: list[LeaseEvent]) -> list[tuple[str, str]]:
    return [(event.event, event.lease_id) for event in events]


def test_a_lease_seen_for_the_first_time_is_signed_with_its_terms_and_placement() -> None:
    lease = _lease("lease-1", "job-a")
    (event,) = epoch_events(_market([lease], []), {}, 0, epoch=2)
    assert event == LeaseEvent(
        2, "signed", "lease-1", "job-a", "alpha", 1.5, ((0, "n1", (2,), None),)
    )


def test_an_unchanged_lease_is_no_event_whether_the_same_object_or_an_equal_copy() -> None:
    lease = _lease("lease-1", "job-a")
    assert epoch_events(_market([lease], []), {"lease-1": lease}, 0, epoch=2) == []
    copy = lease.model_copy()
    assert copy is not lease
    assert epoch_events(_market([copy], []), {"lease-1": lease}, 0, epoch=2) == []


def test_a_lease_replaced_by_new_terms_is_renewed() -> None:
    lease = _lease("lease-1", "job-a")
    renewed = lease.model_copy(update={"expires_epoch": 8, "price": 2.0})
    (event,) = epoch_events(_market([renewed], []), {"lease-1": lease}, 0, epoch=4)
    assert (event.event, event.lease_id, event.price) == ("renewed", "lease-1", 2.0)


def test_ends_are_reported_once_and_a_lease_signed_and_ended_within_the_step_is_both() -> None:
    old, brief, live = (
        _lease("lease-1", "job-a"),
        _lease("lease-2", "job-b"),
        _lease("lease-3", "x"),
    )
    releases = [(old, _release(old, "expired")), (brief, _release(brief, "finished"))]
    market = _market([live], releases)
    events = epoch_events(market, {"lease-1": old, "lease-3": live}, 0, epoch=5)
    assert _kinds(events) == [
        ("released", "lease-1"),
        ("signed", "lease-2"),
        ("released", "lease-2"),
    ]
    assert [e.reason for e in events] == ["expired", "", "finished"]
    seen_one = epoch_events(market, {"lease-1": old, "lease-3": live}, 1, epoch=5)
    assert _kinds(seen_one) == [("signed", "lease-2"), ("released", "lease-2")]
