"""The market's journal without a cluster: several sub-steps in one write, chunking, the
controller holding the sub-steps answered wholly ahead until something else must be written, and
a commit whose response was lost telling its own retry from another replica's write."""

from __future__ import annotations

from typing import Any

import pytest
from fake_host import FakeKube, _controller

from gpuparley.deploy.kube import ApiError
from gpuparley.deploy.market_state import (
    CHUNK_RECORDS,
    STATE_CONFIGMAP,
    MarketState,
    Record,
    StateError,
)
from gpuparley.deploy.objects import MARKET_NAMESPACE


def _record(i: int) -> Record:
    return Record([{"source": f"alpha.{i}", "accepted": True}], [f"beta-{i}"])


def _journal_writes(kube: FakeKube) -> list[tuple[str, str, str]]:
    return [w for w in kube.writes if w[1] == "configmaps" and w[2] == STATE_CONFIGMAP]


def test_records_written_together_read_back_in_order_across_chunks() -> None:
    kube = FakeKube()
    run = {"scenario": "x", "seed": 0}
    state = MarketState(kube, run)  # type: ignore[arg-type]
    first = [_record(i) for i in range(CHUNK_RECORDS - 4)]
    second = [_record(i) for i in range(CHUNK_RECORDS - 4, 3 * CHUNK_RECORDS + 10)]
    state.commit(first, {"epoch": 1})
    state.commit(second, {"epoch": 2})
    assert len(_journal_writes(kube)) == 2
    assert state.length == 3 * CHUNK_RECORDS + 10
    again = MarketState(kube, run)  # type: ignore[arg-type]
    loaded = again.load()
    assert [r.to_json() for r in loaded] == [r.to_json() for r in first + second]
    assert len(again.chunks) == 3 and len(again.tail) == 10
    assert again.summary == {"epoch": 2}


def test_sub_steps_answered_ahead_wait_for_the_next_commit_or_the_effects() -> None:
    controller, kube = _controller()
    controller._journal(_record(0), asked=True)
    assert len(_journal_writes(kube)) == 1
    summary = controller._summary()
    controller._journal(_record(1), asked=False)
    controller._journal(_record(2), asked=False)
    assert len(_journal_writes(kube)) == 1  # held: nothing of theirs has left the controller
    controller._journal(_record(3), asked=True)  # written together with the next one asked
    assert len(_journal_writes(kube)) == 2
    assert [r.passed for r in MarketState(kube, controller.state.run).load()] == [
        ["beta-0"],
        ["beta-1"],
        ["beta-2"],
        ["beta-3"],
    ]
    controller._journal(_record(4), asked=False)
    controller._unsettled = True
    controller._effects()  # the effects go out only after the held sub-steps are written
    state = MarketState(kube, controller.state.run)
    assert len(state.load()) == 5 and len(_journal_writes(kube)) == 3
    assert state.summary == summary  # the state the last record (4) was applied to
    assert kube.get("configmaps", MARKET_NAMESPACE, STATE_CONFIGMAP) is not None


class _LostResponse(FakeKube):
    """The apiserver dies after it stored a write of the state but before it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_next = False

    def _lost(self, written: object) -> object:
        if self.lose_next:
            self.lose_next = False
            raise ApiError(0, "MaxRetryError", "Remote end closed connection without response")
        return written

    def create(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        return self._lost(super().create(resource, namespace, obj))

    def replace(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> Any:
        return self._lost(super().replace(resource, namespace, obj))


def _retried(state: MarketState, records: list[Record], summary: dict[str, Any]) -> None:
    """Commit as `MarketController._flush` does: again, unchanged, after a transport error."""
    try:
        state.commit(records, summary)
    except ApiError as exc:
        assert exc.status == 0
        state.commit(records, summary)


def test_a_commit_whose_response_was_lost_stands_when_retried() -> None:
    kube = _LostResponse()
    run = {"scenario": "x", "seed": 0}
    state = MarketState(kube, run)  # type: ignore[arg-type]
    kube.lose_next = True
    _retried(state, [_record(0)], {"epoch": 0})  # the create landed: its retry meets it
    kube.lose_next = True
    _retried(state, [_record(1)], {"epoch": 1})  # the PUT landed: its retry meets a 409
    state.commit([_record(2)], {"epoch": 2})  # and the replica goes on writing
    assert [r.passed for r in MarketState(kube, run).load()] == [["beta-0"], ["beta-1"], ["beta-2"]]


def test_another_replicas_write_still_deposes_this_one() -> None:
    kube = FakeKube()
    run = {"scenario": "x", "seed": 0}
    first, second = MarketState(kube, run), MarketState(kube, run)  # type: ignore[arg-type]
    first.commit([_record(0)], {"epoch": 0})
    second.load()
    second.commit([_record(1)], {"epoch": 1})  # the new leader
    with pytest.raises(StateError, match="no longer the leader"):
        first.commit([_record(1)], {"epoch": 1})  # the same records: still not its write
    fresh = MarketState(kube, run)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="no longer the leader"):
        fresh.commit([_record(0)], {"epoch": 0})  # a first create meeting another's head
