"""Released GPULeases are collected (`deploy/market_collection.py`), without a cluster: the market
deletes a released lease only once its holder has listed it as applied, beyond the holder's
latest `keep`, and only after the journal commit that stores the decision; a market restarted
after that commit deletes what is left and never writes a collected lease again; the negotiator
lists the releases it applied.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from fake_host import JOBS, SCENARIO, FakeKube, _host_pods
from test_lease_end import RecordingKube, _market

from gpuparley.deploy import negotiator_leases, objects
from gpuparley.deploy.kube import Unavailable
from gpuparley.deploy.market_controller import MarketController, MarketSetupError
from gpuparley.deploy.market_state import STATE_CONFIGMAP, Record
from gpuparley.deploy.negotiator import NegotiatorProcess
from gpuparley.deploy.negotiator_config import NegotiatorConfig
from gpuparley.deploy.workload import group_pods, pods_for_job
from gpuparley.envs.market.messages import Release
from gpuparley.envs.scenario import load_scenario

HOLDER = "agent-alpha"
_VERSIONS = itertools.count(1)


def _release(lease_id: str, reason: str = "finished") -> Release:
    return Release(
        id=f"market.3.end.{lease_id}", sender="market", receiver="alpha", epoch=3,
        lease_id=lease_id, reason=reason,
    )  # fmt: skip


def _released_leases(kube: FakeKube, controller: MarketController, count: int) -> list[str]:
    """`count` ends of alpha's the host shows released, in the market's order; their names."""
    lease, _grant, _pods = _host_pods("whole")
    names = []
    for index in range(count):
        ended = lease.model_copy(update={"lease_id": f"old-{index}"})
        release = _release(ended.lease_id)
        obj = objects.gpulease_object(ended, controller.pods.grant(ended))
        obj["metadata"]["namespace"] = HOLDER
        obj["status"] = {"ending": release.model_dump(), "release": release.model_dump()}
        kube.add("gpuleases", obj)
        controller.market.releases.append((ended, release))
        names.append(obj["metadata"]["name"])
    controller.leases.adopt(kube.list("gpuleases"))
    return names


def _applied(controller: MarketController, names: list[str]) -> None:
    """alpha's negotiator lists `names` as applied (its status, as the market's watch shows)."""
    controller.negotiators.observe(
        {
            "metadata": {
                "name": "alpha",
                "namespace": HOLDER,
                "uid": "n",
                "resourceVersion": str(next(_VERSIONS)),
            },
            "spec": {"agent": "alpha"},
            "status": {"appliedReleases": names},
        }
    )


def _commit(controller: MarketController) -> dict[str, Any]:
    """A sub-step's journal commit; the stored summary's collection cursors."""
    controller._journal(Record([], []), asked=True)
    head = controller.kube.get("configmaps", objects.MARKET_NAMESPACE, STATE_CONFIGMAP)
    return json.loads(head["data"]["summary"])["counters"]["collected"]


def _present(kube: FakeKube, names: list[str]) -> list[str]:
    return [name for name in names if kube.get("gpuleases", HOLDER, name) is not None]


def test_a_release_is_collected_once_applied_and_only_after_the_commit_that_decides_it() -> None:
    kube = RecordingKube()
    controller = _market(kube)
    controller.leases.collector.keep = 0
    names = _released_leases(kube, controller, 2)
    _applied(controller, names[1:])  # the newer one only: the older is not yet applied
    controller.leases.publish()
    assert controller.leases.collector.decided == {}  # the oldest first: held up by the first
    _applied(controller, names)
    controller.leases.publish()
    assert controller.leases.collector.decided == {"market/alpha": 2}
    controller.leases.publish()  # another effects pass before the next commit
    assert _present(kube, names) == names  # decided, not yet committed: nothing deleted
    assert _commit(controller) == {"market/alpha": 2}
    controller.leases.publish()
    assert _present(kube, names) == []
    kube.events.clear()
    controller.leases.publish()  # collected: nothing written for them again
    assert kube.events == [] and _present(kube, names) == []


def _committed(kube: RecordingKube, keep: int, count: int) -> tuple[MarketController, list[str]]:
    """A market keeping `keep` released leases per holder, with `count` of alpha's released and
    applied, whose collection a publish decided and a journal commit stored; their names."""
    controller = _market(kube)
    controller.leases.collector.keep = keep
    names = _released_leases(kube, controller, count)
    _applied(controller, names)
    controller.leases.publish()
    _commit(controller)
    return controller, names


def test_the_holders_latest_releases_are_kept() -> None:
    kube = RecordingKube()
    controller, names = _committed(kube, keep=2, count=3)
    controller.leases.publish()
    assert _present(kube, names) == names[1:]


def test_no_collection_without_keep() -> None:
    kube = RecordingKube()
    controller = _market(kube)  # the controller's default: keep every released lease
    names = _released_leases(kube, controller, 2)
    _applied(controller, names)
    controller.leases.publish()
    assert _commit(controller) == {}
    controller.leases.publish()
    assert _present(kube, names) == names


class _FailingOnce(RecordingKube):
    """The fake host, whose first GPULease delete fails (the apiserver went away)."""

    failed = False

    def delete(
        self, resource: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        if resource == "gpuleases" and not self.failed:
            self.failed = True
            raise Unavailable(503, "Unavailable", "the apiserver is restarting")
        return super().delete(resource, namespace, name, uid)


def test_deletes_that_failed_are_made_at_the_next_pass() -> None:
    kube = _FailingOnce()
    controller, names = _committed(kube, keep=0, count=2)
    with pytest.raises(Unavailable):
        controller.leases.publish()
    controller.leases.publish()  # the effects pass, retried
    assert _present(kube, names) == []


def _restarted(kube: RecordingKube, first: MarketController) -> MarketController:
    """A second controller over the same host, resuming the first one's stored state: the
    ends the journal's replay gives, the stored counters, the objects found."""
    second = _market(kube)
    second.leases.collector.keep = 0
    second.market.releases.extend(first.market.releases)
    head = kube.get("configmaps", objects.MARKET_NAMESPACE, STATE_CONFIGMAP)
    second._restore_counters(json.loads(head["data"]["summary"])["counters"])
    second.state.load()
    second.leases.adopt(kube.list("gpuleases"))
    return second


def test_a_restarted_market_never_writes_a_collected_lease_again() -> None:
    kube = RecordingKube()
    first, names = _committed(kube, keep=0, count=2)
    first.leases.publish()
    assert _present(kube, names) == []
    kube.events.clear()
    writes = len(kube.writes)
    second = _restarted(kube, first)
    second.leases.publish()  # the reconcile of a restart
    assert kube.events == [] and kube.writes[writes:] == []
    assert _present(kube, names) == []


def test_a_market_killed_between_the_commit_and_the_deletes_makes_them_when_restarted() -> None:
    kube = RecordingKube()
    first, names = _committed(kube, keep=0, count=2)  # and killed before its next publish
    assert _present(kube, names) == names
    second = _restarted(kube, first)
    kube.events.clear()
    second.leases.publish()  # the deletes, and nothing else
    assert _present(kube, names) == []
    assert kube.events == [("delete lease", name) for name in names]


def _watch_shows(controller: MarketController, obj: dict[str, Any]) -> None:
    """What the market's GPULease watch does with an object it lists or is sent."""
    controller.leases.watch.observe(obj)
    assert controller.leases.watch.on_object is not None
    controller.leases.watch.on_object(obj)


def _written_again(kube: FakeKube, collected: dict[str, Any]) -> Any:
    """A deposed replica's late create of a collected lease's object (active: a create sets no
    status); the object created."""
    late = json.loads(json.dumps(collected))
    late.pop("status")
    late["metadata"] = {k: v for k, v in late["metadata"].items() if k in ("name", "labels")}
    return kube.create("gpuleases", HOLDER, late)


def test_a_collected_lease_written_again_is_deleted_again_behind_the_fence() -> None:
    """A GPULease of a collected lease that the market's watch shows under another uid -- a
    deposed replica's create that passed its fence and stalled past the takeover
    (deploy/protocol/README.md, gaps) -- is deleted at the next publish, after a fence, and
    only that object; a watch still showing the object collected is no such write."""
    kube = RecordingKube()
    controller, names = _committed(kube, keep=0, count=2)
    controller.leases.fence = lambda: kube.events.append(("fence", ""))
    seen = {name: kube.get("gpuleases", HOLDER, name) for name in names}
    for obj in seen.values():  # the market's watch shows them until their deletes reach it
        _watch_shows(controller, obj)
    controller.leases.publish()  # collects both, and nothing more
    assert kube.events == [("delete lease", name) for name in names]
    assert _present(kube, names) == []
    kube.events.clear()
    for obj in seen.values():  # a late event of an object collected: not a new write
        _watch_shows(controller, obj)
    controller.leases.publish()
    assert kube.events == []
    late = _written_again(kube, seen[names[0]])
    _watch_shows(controller, late)
    controller.leases.publish()
    assert kube.events == [("fence", ""), ("delete lease", names[0])]
    assert _present(kube, names) == []
    stray = {"reason": "stray-lease"}
    registry = controller.telemetry.registry
    assert registry.get_sample_value("gpuparley_messages_rejected_total", stray) == 1.0
    kube.events.clear()
    _watch_shows(controller, late)  # a late event of the one deleted: nothing again
    controller.leases.publish()
    assert kube.events == []


def test_a_lease_written_again_whose_delete_failed_is_deleted_when_the_pass_is_retried() -> None:
    """The watch showed it once; a failed pass does not forget it."""
    kube = _FailingOnce()
    kube.failed = True  # the collection's deletes go through
    controller, names = _committed(kube, keep=0, count=1)
    collected = kube.get("gpuleases", HOLDER, names[0])
    controller.leases.publish()
    _watch_shows(controller, _written_again(kube, collected))
    kube.failed = False  # the next GPULease delete fails: the apiserver went away
    with pytest.raises(Unavailable):
        controller.leases.publish()
    assert _present(kube, names) == names
    controller.leases.publish()  # the effects pass, retried
    assert _present(kube, names) == []


def test_a_restarted_market_deletes_a_collected_lease_written_again_while_it_was_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found at a restart (taken as found, active), the object goes at once, with a warning: it
    is not ended and released again, which would leave it on the host for good (its cursor has
    passed it)."""
    kube = RecordingKube()
    first, names = _committed(kube, keep=0, count=2)
    collected = kube.get("gpuleases", HOLDER, names[0])
    first.leases.publish()
    _written_again(kube, collected)
    second = _restarted(kube, first)
    kube.events.clear()
    with caplog.at_level("WARNING", logger="gpuparley.market"):
        second.leases.publish()
    assert kube.events == [("delete lease", names[0])]
    assert _present(kube, names) == []
    warned = [r for r in caplog.records if r.getMessage().endswith("written again: deleted")]
    assert [r.__dict__["lease"] for r in warned] == [names[0]]
    stray = {"reason": "stray-lease"}
    registry = second.telemetry.registry
    assert registry.get_sample_value("gpuparley_messages_rejected_total", stray) == 1.0


def _holder() -> tuple[NegotiatorProcess, FakeKube, dict[str, Any]]:
    """alpha's negotiator on a fake host, and its job's pods (finished: applying an end of
    theirs writes nothing to its plane)."""
    host = FakeKube()
    config = NegotiatorConfig(agent="alpha", policy="scripted")
    process = NegotiatorProcess(config, host, FakeKube(), None)  # type: ignore[arg-type]
    negotiator = {"metadata": {"name": "alpha", "namespace": HOLDER}, "spec": {"agent": "alpha"}}
    host.add("negotiators", negotiator)
    process.mine.observe(host.get("negotiators", HOLDER, "alpha"))
    lease, _grant, _pods = _host_pods("whole")
    agent_pods = json.loads(json.dumps(pods_for_job(JOBS[lease.job])))
    for pod in agent_pods:
        pod["metadata"]["namespace"] = "default"
        pod["status"] = {"phase": "Succeeded"}
    return process, host, group_pods(agent_pods)


def _released_object(lease_id: str, epoch: int = 3) -> dict[str, Any]:
    """alpha's GPULease `lease_id`, released at `epoch`, as its negotiator's watch shows it."""
    lease, _grant, _pods = _host_pods("whole")
    obj = objects.gpulease_object(lease.model_copy(update={"lease_id": lease_id}))
    release = _release(lease_id).model_copy(update={"epoch": epoch}).model_dump(mode="json")
    obj["metadata"].update(namespace=HOLDER, resourceVersion=f"v-{lease_id}")
    obj["status"] = {"ending": release, "release": release}
    return obj


def _listed(host: FakeKube) -> list[str]:
    status = (host.get("negotiators", HOLDER, "alpha") or {}).get("status") or {}
    return list(status.get("appliedReleases") or [])


def test_the_negotiator_lists_the_releases_it_applied_while_they_exist() -> None:
    process, host, groups = _holder()
    first, second = _released_object("first"), _released_object("second")
    process.lease_sync.sync(groups, [first])
    process.lease_sync.acknowledge([first])
    assert _listed(host) == [first["metadata"]["name"]]
    patches = len(host.writes)
    process.lease_sync.acknowledge([first])  # nothing new: no write
    assert len(host.writes) == patches
    process.lease_sync.sync(groups, [second])  # the first one was collected
    process.lease_sync.acknowledge([second])
    assert _listed(host) == [second["metadata"]["name"]]


def test_a_list_cut_at_its_bound_names_the_oldest_releases(monkeypatch: Any) -> None:
    """The market collects oldest first: a list holding only newer ends would hold it up."""
    monkeypatch.setattr(negotiator_leases, "APPLIED_RELEASES", 2)
    process, host, groups = _holder()
    leases = [_released_object(f"at-{epoch}", epoch) for epoch in (9, 4, 7)]
    process.lease_sync.sync(groups, leases)
    process.lease_sync.acknowledge(leases)
    assert _listed(host) == [leases[1]["metadata"]["name"], leases[2]["metadata"]["name"]]


def test_the_market_keeps_no_more_than_a_negotiator_can_list() -> None:
    with pytest.raises(MarketSetupError, match="--keep-released 129: keep at most 128"):
        MarketController(RecordingKube(), load_scenario(SCENARIO), 0, keep_released=129)  # type: ignore[arg-type]


def test_a_lease_for_a_finished_job_runs_nothing() -> None:
    """A GPULease that says a finished job runs -- a deposed market's create landing after the
    lease was collected (deploy/protocol/README.md, gaps) -- makes its holder create no pod; the
    same lease for a job that has not run is synced."""
    process, host, groups = _holder()
    lease, _grant, _pods = _host_pods("whole")
    obj = objects.gpulease_object(lease)
    obj["metadata"].update(namespace=HOLDER, resourceVersion="v-active")
    process.lease_sync.sync(groups, [obj])
    assert [write for write in host.writes if write[1] == "pods"] == []
    for group in groups.values():
        for pod in group.pods:
            pod["status"] = {"phase": "Pending"}
    process.lease_sync.sync(groups, [obj])
    assert [verb for verb, resource, _name in host.writes if resource == "pods"] == ["create"]
