"""The market survives its own crashes, a leader failover and an apiserver restart.

Two runs on fresh real planes (`market_runs.market_run`), the default ONNX policy:

* **crashes**: the market controller is SIGKILLed at three points (a seeded random moment after
  three different epochs) and started again each time; later the host kube-apiserver itself is
  SIGKILLed and restarted under every watch (market and negotiators). The market keeps no
  released GPULease (`--keep-released 0`): each is deleted once its holder applied it, across
  the crashes, and none is ever written again (`market_collection.py`). The test creates a
  collected lease again, as a deposed replica's late create would, twice: while the market
  resumed after the second kill runs, which deletes it at a publish, and while the market is
  down after the third kill, which the resumed market deletes;
* **failover**: two market replicas elect a leader; the leader is SIGKILLed mid-run and the
  standby takes over when its Lease expires;
* **paused leader**: two replicas again, but the leader is paused (SIGSTOP) instead, so it is
  deposed while its memory says it leads; once the standby has taken over and gone on, the old
  leader is let go (SIGCONT) mid-whatever it was doing. It must write nothing on the strength of
  its stale state (the fences: `MarketState.confirm` and the apiserver's `market_fence`) and
  exit, and the market goes on as if it had not woken.

In both, the market resumes from its journal in the host apiserver (`deploy/market_state.py`):
every job finishes once, no pod under a valid lease is evicted, no lease is leaked or doubled,
credits balance, and the whole lease trace equals the simulator's -- the run with crashes is,
lease for lease, the run without them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuparley.deploy import objects
from gpuparley.deploy.cluster.control_plane import readyz
from gpuparley.deploy.cluster.processes import ClusterError, Supervisor, is_alive, wait_ready
from gpuparley.deploy.informer import Informer, Key
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.market_fence import ELECTION_LEASE
from gpuparley.deploy.market_state import CHUNK_RECORDS, STATE_CONFIGMAP
from gpuparley.envs.scenario import load_scenario

from .helpers import wait_for
from .market_runs import (
    SCENARIO,
    SEED,
    Run,
    assert_one_lease_at_a_time,
    market_run,
    simulated,
)

pytestmark = pytest.mark.cluster

# The run closes about 22 sub-steps (the market's journal length) in a few seconds; the three
# crash points are a seeded random moment (0-150 ms: inside a sub-step's views, answers, commit
# or lease writes) after the journal reaches each of these lengths.
KILL_AT_SUBSTEPS = (4, 9, 14)
APISERVER_RESTART_AT = 17


def journal_length(admin: Kube) -> int:
    """How many sub-steps the market has committed (its state ConfigMap; 0 before the first)."""
    head = admin.get("configmaps", objects.MARKET_NAMESPACE, STATE_CONFIGMAP)
    if head is None:
        return 0
    data = head["data"]
    return len(json.loads(data["chunks"])) * CHUNK_RECORDS + len(json.loads(data["tail"]))


def wait_for_substeps(run: Run, count: int) -> None:
    admin = Kube(run.rig.state.host.kubeconfig)
    try:
        wait_for(f"{count} sub-steps", lambda: journal_length(admin) >= count, 120, 0.01)
    finally:
        admin.close()


def _write_a_collected_lease_again(
    admin: Kube, finished: dict[Key, dict[str, Any]], used: list[Key]
) -> Key:
    """Create again, as a deposed replica's late create would (active, the spec it had), the
    first GPULease released `finished` that is gone from the host (collected) and not in
    `used`, once there is one; its key."""

    def collected() -> list[Key]:
        return [
            k for k in sorted(list(finished)) if k not in used and not admin.get("gpuleases", *k)
        ]

    key = wait_for("a lease released `finished` to be collected", collected, 60, 0.05)[0]
    old = finished[key]
    labels = {k: v for k, v in old["metadata"]["labels"].items() if k != objects.RELEASED_LABEL}
    late = {"apiVersion": old["apiVersion"], "kind": old["kind"], "spec": old["spec"],
            "grant": old["grant"], "metadata": {"name": key[1], "labels": labels}}  # fmt: skip
    assert admin.create("gpuleases", key[0], late) is not None
    return key


def _kill_market_three_times(run: Run) -> None:
    """Kill the market at three points of its journal, each time the one started after the last
    kill once it has resumed and gone past the last point: the journal can grow by several
    sub-steps in one write (a round answered ahead), so its length alone may pass the next
    point before that market is up. A collected lease is written again (a deposed replica's
    late create: deploy/protocol/README.md, gaps) twice: while the market resumed after the
    second kill runs (it must delete it at a publish), and while the third kill's market is
    down (its restart must)."""
    rng = random.Random(18)
    log = run.rig.log_dir / "market.log"
    admin = Kube(run.rig.state.host.kubeconfig)
    finished: dict[Key, dict[str, Any]] = {}

    def released(obj: dict[str, Any]) -> None:
        if ((obj.get("status") or {}).get("release") or {}).get("reason") == "finished":
            finished[obj["metadata"]["namespace"], obj["metadata"]["name"]] = obj

    leases = Informer(admin, "gpuleases", on_object=released).start()
    killed_at = 0
    written: list[Key] = run.faults.setdefault("written-again", [])
    try:
        for kills, count in enumerate(KILL_AT_SUBSTEPS, start=1):
            wait_for_substeps(run, max(count, killed_at + 1))
            time.sleep(rng.uniform(0.0, 0.15))
            run.rig.kill("market")
            killed_at = journal_length(admin)
            run.faults.setdefault("killed-at", []).append(killed_at)
            if kills == len(KILL_AT_SUBSTEPS):  # the market down: its restart deletes it
                written.append(_write_a_collected_lease_again(admin, finished, written))
            run.rig.start_market()  # (a resumed market runs fast: only the journal is polled)
            wait_for(
                f"the market to resume after kill {kills}",
                lambda kills=kills: log.read_text().count('"market resumed"') >= kills,
                120,
                0.02,
            )
            if kills == 2:  # the market running: a publish of its deletes it
                key = _write_a_collected_lease_again(admin, finished, written)
                written.append(key)
                wait_for(
                    "the running market to delete the lease written again",
                    lambda key=key: admin.get("gpuleases", *key) is None,
                    60,
                    0.01,
                )
    finally:
        leases.stop()
        admin.close()
    wait_for_substeps(run, APISERVER_RESTART_AT)
    restart_host_apiserver(run)


def restart_host_apiserver(run: Run) -> None:
    """SIGKILL the host kube-apiserver and start it again with the same command (same etcd,
    port and certificates): every watch on it breaks at once."""
    state = run.rig.state
    old = next(p for p in reversed(state.processes) if p.name == "host-kube-apiserver")
    os.killpg(old.pid, signal.SIGKILL)
    wait_for("the old apiserver to die", lambda: not is_alive(old), timeout=10)
    supervisor = Supervisor(state, die_with_parent=True)
    for attempt in range(5):
        try:
            new = supervisor.start(old.name, old.cmd, old.plane, old.health_url)
            wait_ready("host kube-apiserver", lambda: readyz(state.host), new, 60)
            break
        except ClusterError as exc:
            # while it is down, its port is free: an outgoing connection of any process on the
            # machine may get it as its ephemeral port for a moment (seen once); wait, retry
            if "address already in use" not in str(exc) or attempt == 4:
                raise
            time.sleep(1.0)
    run.faults["apiserver-restarts"] = run.faults.get("apiserver-restarts", 0) + 1


def _leader(run: Run) -> str:
    admin = Kube(run.rig.state.host.kubeconfig)
    try:
        lease = admin.get("leases", objects.MARKET_NAMESPACE, ELECTION_LEASE) or {}
    finally:
        admin.close()
    leader = (lease.get("spec") or {}).get("holderIdentity")
    assert leader in run.markets, lease
    return str(leader)


def _kill_the_leader(run: Run) -> None:
    wait_for_substeps(run, 6)
    leader = _leader(run)
    run.rig.kill(leader)
    run.faults["killed-leader"] = run.markets.index(leader)


def _pause_the_leader(run: Run) -> None:
    """SIGSTOP the leader after 6 sub-steps; SIGCONT it once the standby has resumed the market
    and committed 4 more; then wait for the woken replica to exit."""
    wait_for_substeps(run, 6)
    leader = _leader(run)
    standby = next(name for name in run.markets if name != leader)
    paused = run.rig.procs[leader]
    paused.send_signal(signal.SIGSTOP)
    log = run.rig.log_dir / f"{standby}.log"
    wait_for("the standby to resume", lambda: '"market resumed"' in log.read_text(), 90, 0.05)
    wait_for_substeps(run, 10)
    paused.send_signal(signal.SIGCONT)
    wait_for("the woken replica to exit", lambda: paused.poll() is not None, 60)
    run.rig.procs.pop(leader)
    run.faults["paused-leader"] = run.markets.index(leader)
    run.faults["paused-exit"] = paused.returncode


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with market_run(
        tmp_path_factory.mktemp("market-crashes"),
        _kill_market_three_times,
        market_args=("--keep-released", "0"),
    ) as run:
        run.leases_left = _gpulease_objects(run)
        yield run


def _two_replicas(state_dir: Path, fault: Callable[[Run], None]) -> Iterator[Run]:
    """A run with two leader-electing market replicas and `fault` made during it."""
    with market_run(state_dir, fault, market_replicas=2) as run:
        run.leases_left = _gpulease_objects(run)
        yield run


@pytest.fixture(scope="module")
def failover(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _two_replicas(tmp_path_factory.mktemp("market-failover"), _kill_the_leader)


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    yield from _two_replicas(tmp_path_factory.mktemp("market-paused"), _pause_the_leader)


def _gpulease_objects(run: Run) -> list[dict[str, Any]]:
    admin = Kube(run.rig.state.host.kubeconfig)
    try:
        return admin.list("gpuleases")
    finally:
        admin.close()


def _assert_the_same_market_went_on(
    run: Run, collected: bool, written_again: tuple[Key, ...] = ()
) -> None:
    status = run.status
    assert status["finished"], status
    assert status["resumed_at"] > 0, "the market that finished must have resumed a journal"
    # A negotiator the market timed out passed where the simulator's agent acted.
    assert status["timeouts"] == {}, "an agent did not answer in time"
    # Lease for lease the uninterrupted (simulated) run: nothing lost, doubled or re-decided.
    assert run.trace == simulated(SCENARIO)
    assert_one_lease_at_a_time(run.trace)
    finished = Counter(e["job"] for e in run.trace if e.get("reason") == "finished")
    jobs = {j.name for j in load_scenario(SCENARIO).build_jobs(SEED)}
    assert set(finished) == jobs and set(finished.values()) == {1}, "every job finishes once"
    # No GPULease leaked: every object the market wrote is a lease of the trace, and ended;
    # collected ones (deleted once their holder applied them) are never written again by the
    # market, and one written again by someone else is deleted again.
    signed = {e["lease_id"] for e in run.trace if e["event"] == "signed"}
    left = {o["spec"]["lease_id"] for o in run.leases_left}
    assert left < signed if collected else left == signed
    assert all((o.get("status") or {}).get("release") for o in run.leases_left)
    assert run.seen is not None
    rewritten = [key for key, uids in run.seen.lease_uids.items() if len(uids) > 1]
    assert sorted(rewritten) == sorted(written_again), "a collected GPULease was written again"
    names_left = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in run.leases_left}
    assert not names_left & set(written_again), "a lease written again after collection stayed"
    assert status["evicted"] == [], "a pod under a valid lease was evicted"
    assert status["ledger_imbalance"] == pytest.approx(0.0, abs=1e-9)
    assert not run.seen.overcommit, run.seen.overcommit[:5]
    assert not run.seen.outside_lease, run.seen.outside_lease[:5]
    assert not run.seen.gang_splits, run.seen.gang_splits[:5]


def test_three_crashes_and_an_apiserver_restart_change_nothing(crashes: Run) -> None:
    written_again = tuple(crashes.faults["written-again"])
    assert len(written_again) == 2
    _assert_the_same_market_went_on(crashes, collected=True, written_again=written_again)
    log = (crashes.rig.log_dir / "market.log").read_text()
    assert log.count("a collected lease was written again: deleted") == 2
    assert crashes.faults["apiserver-restarts"] == 1
    resumes = (crashes.rig.log_dir / "market.log").read_text().count('"market resumed"')
    assert resumes == len(KILL_AT_SUBSTEPS)
    killed_at = crashes.faults["killed-at"]
    assert killed_at == sorted(set(killed_at)), f"three different points: {killed_at}"


def test_the_standby_takes_over_the_same_market(failover: Run) -> None:
    _assert_the_same_market_went_on(failover, collected=False)
    survivor = failover.markets[1 - failover.faults["killed-leader"]]
    assert '"market resumed"' in (failover.rig.log_dir / f"{survivor}.log").read_text()


def test_a_paused_leader_woken_after_the_takeover_writes_nothing_and_exits(paused: Run) -> None:
    _assert_the_same_market_went_on(paused, collected=False)
    assert paused.faults["paused-exit"] == 2
    woken = paused.markets[paused.faults["paused-leader"]]
    log = (paused.rig.log_dir / f"{woken}.log").read_text()
    deposed = ("lost the market's leadership", "no longer the leader", "market fence")
    assert any(reason in log.splitlines()[-1] for reason in deposed), log.splitlines()[-1]
