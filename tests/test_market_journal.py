"""The market's journal without a cluster: several sub-steps in one write, chunking, and the
controller holding the sub-steps answered wholly ahead until something else must be written."""

from __future__ import annotations

from test_deploy_hardening_units import FakeKube, _controller

from gpuparley.deploy.market_state import CHUNK_RECORDS, STATE_CONFIGMAP, MarketState, Record
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
