"""The market's leases on the host: `GPULease` objects that say what the market holds.

Each closed sub-step's changes (the environment may close many in one step) are collected in
order and published after the sub-step is committed (`apply_changes`): the ends of older leases,
then its new and renewed leases. A lease ends in two phases (`_end`, the protocol's rule 1):
marked ending (`status.ending`: its holder stops syncing its pods), its pods deleted and gone
(`LeasePods.reclaim`), and only then released (`status.release`), so no pod runs under a
released lease and a lease signed on the GPUs it gave up is written after its release. The market
does not wait for a new lease to be bound before it goes on negotiating (the holder syncs the
pods and the market admits them meanwhile); it waits only before it ends a lease whose pods were
never bound -- so a job the model starts and finishes between two clearings still runs on the
cluster -- and before it exits (`settle`). Writes are made only where an object differs from the
market's record (`publish` compares everything, so it is also the reconcile after a restart:
nothing missing, nothing doubled, nothing left active or half-ended that the market ended; the
journal's replay says which leases ended, the objects how far their end got), each batch is
fenced (`MarketState.confirm`: a replica deposed meanwhile writes nothing, e.g. no older spec
over a renewal the new leader wrote), and a batch's writes go out together (`Kube.each`).
Released leases their holders have applied are deleted in time (`market_collection.py`); the
market remembers them as collected, so it never writes them again. A GPULease object of a
collected lease that shows up again on the market's watch of them (`watch`) is deleted
again at the next publish (`_remove_strays`): only a write the market did not make -- a deposed
replica's create that passed its fence and then stalled past the takeover (which the
apiserver's `gpuparley-market-fence` now refuses too, but for its cache lag: `market_fence.py`)
or an admin's -- can bring one back, and nothing else would remove it. The lease
trace (`trace.py`) is written alongside.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.informer import Informer, Key, Wakeup, key_of
from gpuparley.deploy.kube import Kube, NotFound
from gpuparley.deploy.market_collection import LeaseCollector
from gpuparley.deploy.market_pods import LeasePods, lease_key
from gpuparley.deploy.objects import ACTIVE, ENDING, RELEASED
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.deploy.trace import LeaseRecorder
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.demand import job_name
from gpuparley.envs.market.messages import MARKET, Lease, Release
from gpuparley.envs.simulator import JobState

log = logging.getLogger("gpuparley.market")
COLLECTED = "collected"  # released, applied by its holder and deleted (`market_collection.py`)
GONE = (RELEASED, COLLECTED)  # ends with nothing left to do


class LeasePublisher:
    """Collects lease changes sub-step by sub-step and writes them to the host."""

    def __init__(
        self,
        kube: Kube,
        market: Market,
        pods: LeasePods,
        telemetry: Telemetry,
        wakeup: Wakeup,
        placement_timeout: float,
        trace_path: Path | None,
        applied: Callable[[str], set[str]],
        keep_released: int | None,
    ) -> None:
        self.kube = kube
        self.market = market
        self.pods = pods
        self.telemetry = telemetry
        self.wakeup = wakeup
        self.placement_timeout = placement_timeout
        self.placement_timeouts = 0
        self.trace_path = trace_path
        self.recorder = LeaseRecorder()
        self.recorder.follow(market)
        market.substep_watchers.append(self.collect)  # after the recorder's
        self._collected, self._ended, self._traced = 0, len(market.releases), 0
        self.changes: list[tuple[list[Lease], list[tuple[Lease, Release]]]] = []
        self.unplaced: dict[str, Lease] = {}  # published, not seen bound yet
        self._deadline = 0.0
        self._written: dict[tuple[str, str], tuple[Lease, str]] = {}  # as on the host: phase
        # How many of the market's ends, and of the quota grants' ends, are released on the host
        # from the first on: `publish` looks at the rest only, so a clearing's cost does not
        # grow with every lease the market ever ended.
        self._released_upto = [0, 0]
        self.fence = pods.fence  # before every batch of GPULease writes, as of pod writes
        self.collector = LeaseCollector(
            kube, market, pods.quota_releases, applied, keep_released, self.fence
        )
        # The GPULeases on the host (started by the controller with its other watches), and
        # the objects it showed since the last publish: the only ones `_remove_strays` looks
        # at, so a publish costs what changed, not every lease ever written.
        self.watch = Informer(kube, "gpuleases", on_object=self._shown_by_watch)
        self._shown: set[Key] = set()
        self._shown_lock = threading.Lock()  # the watch adds from its own thread
        # Collected lease -> the uid its object had when it was deleted (None: not seen), so a
        # watch that has not caught up with the delete is not taken for a lease written again.
        self._deleted_uids: dict[Key, str | None] = {}
        self._unlabelled: dict[Key, dict[str, str]] = {}  # adopted objects -> labels they lack

    def adopt(self, existing: list[dict[str, Any]]) -> None:
        """Take the GPULease objects found on the host as written (after a restart). One not yet
        released that lacks a label the market sets at create (written by an older market,
        before the shard label) is kept for `publish` to label: without its shard it is no
        lease-fit parameter, so its pods would be admitted unchecked."""
        for obj in existing:
            try:
                lease = Lease.model_validate(obj.get("spec") or {})
            except ValueError:
                continue
            phase = objects.lease_phase(obj)
            self._written[lease_key(lease)] = (lease, phase)
            labels = obj["metadata"].get("labels") or {}
            wanted = objects.gpulease_labels(lease)
            if phase != RELEASED and any(labels.get(k) != v for k, v in wanted.items()):
                self._unlabelled[lease_key(lease)] = wanted

    def collect(self, market: Market, _epoch: int) -> None:
        """A sub-step closed (the environment may close many in one `advance`): keep what it
        changed, in order, for `apply_changes`."""
        events = self.recorder.events[self._collected :]
        self._collected = len(self.recorder.events)
        ended = {lease.lease_id: (lease, rel) for lease, rel in market.releases[self._ended :]}
        self._ended = len(market.releases)
        signed = []
        for event in events:
            if event.event != "released":
                lease = market.leases.get(event.lease_id) or ended[event.lease_id][0]
                signed.append(lease)
        quota_signed, quota_ended = self._quota_changes(market)
        if events or quota_signed or quota_ended:
            self.changes.append(([*signed, *quota_signed], [*ended.values(), *quota_ended]))

    def _quota_changes(self, market: Market) -> tuple[list[Lease], list[tuple[Lease, Release]]]:
        """Bargaining admits a job within its owner's own quota without a market lease (nothing
        is traded); on a cluster its pods still need a grant to run. So each such running job
        gets a quota grant: a `GPULease` from the market to the owner (lender = holder, price
        0, id `quota-<job>-<clearing>`), ended (`finished`, or `returned` if the job stopped or
        moved under a traded lease) when the job no longer runs on its own quota. Derived from
        the market's state, so a replay gives the same grants."""
        if market.mechanism.name != "bargain":
            return [], []
        own = self.pods.quota_leases
        running = {
            job_id
            for job_id, record in market.sim.records.items()
            if record.state is JobState.RUNNING and job_id not in market.lease_by_job
        }
        signed = []
        for job_id in sorted(running - set(own)):
            job = market.sim.records[job_id].job
            name = job_name(job)
            own[job_id] = lease = Lease.model_validate(
                {
                    "id": f"{MARKET}.{market.epoch}.quota.{name}.{market.clearings}",
                    "sender": MARKET,
                    "receiver": job.owner,
                    "epoch": market.epoch,
                    "lease_id": f"quota-{name}-{market.clearings}",
                    "holder": job.owner,
                    "lender": job.owner,
                    "job": name,
                    "resources": market.resources_of(job),
                    "quota_milli": job.milli_gpu,
                    "start_epoch": market.epoch,
                    "expires_epoch": market.epoch + market.term_epochs,
                    "price": 0.0,
                }
            )
            signed.append(lease)
        ended = []
        for job_id in sorted(set(own) - running):
            lease = own.pop(job_id)
            done = market.sim.records[job_id].state is JobState.DONE
            release = Release(
                id=f"{MARKET}.{market.epoch}.end.{lease.lease_id}",
                sender=MARKET,
                receiver=lease.holder,
                epoch=market.epoch,
                lease_id=lease.lease_id,
                reason="finished" if done else "returned",
            )
            self.pods.quota_releases.append((lease, release))
            ended.append((lease, release))
        return signed, ended

    def apply_changes(self) -> None:
        """Publish what the closed sub-steps changed, in their order. Per sub-step: the ends of
        older leases first (the capacity they free is what a job admitted at the end of the
        sub-step runs on), then the new and renewed leases, then the ends of leases that
        sub-step both signed and ended."""
        self._deadline = time.monotonic() + self.placement_timeout
        for signed, ended in self.changes:
            fleeting = {lease.lease_id for lease in signed}
            self._end([(lease, rel) for lease, rel in ended if lease.lease_id not in fleeting])
            self._sync([(lease, None, ACTIVE) for lease in signed])
            self.unplaced.update((lease.lease_id, lease) for lease in signed)
            self._end([(lease, rel) for lease, rel in ended if lease.lease_id in fleeting])
        self.changes = []
        self.publish()

    def _end(self, ended: list[tuple[Lease, Release]]) -> None:
        """End leases in two phases: each marked ending (once its pods were bound, or the
        placement timeout), then all their pods deleted and gone, then each released. Leases
        already released are skipped; one found ending (a restart between the phases) goes on
        from its pods."""
        ending = [(le, rel) for le, rel in ended if self._phase(le) not in GONE]
        if not ending:
            return
        unplaced = [le for le, _rel in ending if self.unplaced.pop(le.lease_id, None) is not None]
        if unplaced:
            self._await(unplaced)
        self._sync([(lease, release, ENDING) for lease, release in ending])
        deadline = time.monotonic() + self.placement_timeout
        self.pods.reclaim([lease for lease, _rel in ending], deadline, self.wakeup)
        self._sync([(lease, release, RELEASED) for lease, release in ending])

    def _phase(self, lease: Lease) -> str | None:
        """How far the lease's object on the host is, as last written or found (None: absent)."""
        return self._phase_of_key(lease_key(lease))

    def settle(self) -> None:
        """Wait until every lease published but not seen bound yet is (before the market exits:
        nobody would bind their pods after it)."""
        self._deadline = time.monotonic() + self.placement_timeout
        active = {lease.lease_id for lease in self.pods.active()}
        waiting = [lease for lease_id, lease in self.unplaced.items() if lease_id in active]
        self.unplaced.clear()
        if waiting:
            self._await(waiting)

    def _await(self, leases: list[Lease]) -> None:
        if not self.pods.await_placements(leases, self._deadline, self.wakeup):
            self.placement_timeouts += 1
            self.telemetry.rejections.labels("placement-timeout").inc()
            self._deadline = time.monotonic()  # late already: publish the rest at once

    def _sync(self, changes: list[tuple[Lease, Release | None, str]]) -> None:
        """Bring each lease's object to (lease, phase) where it differs: one fence, then all
        the writes at once (they touch different objects; the fence's window is one round trip
        of wall time, as for a single write). A lease listed twice is written as last listed."""
        stale = {}
        for lease, release, phase in changes:
            key = lease_key(lease)
            if self._written.get(key) != (lease, phase):
                stale[key] = (lease, release, phase)
            else:
                stale.pop(key, None)
        if stale:
            self.fence()
            self.kube.each(self._sync_one, list(stale.values()))

    def _sync_one(self, change: tuple[Lease, Release | None, str]) -> None:
        lease, release, phase = change
        key = lease_key(lease)
        written = self._written.get(key)
        self._write_lease(lease, release, phase, written is None or written[0] != lease)
        self._written[key] = (lease, phase)

    def publish(self) -> None:
        """Make the GPULease objects say what the market holds: every lease signed (spec and
        grant as of its last renewal), every ended one ended (`_end`); only differences are
        written, so this is also the reconcile after a restart. Ends first: a lease signed on
        GPUs another one gave up must not be active beside it. Around them, collection: first
        the released leases the stored state says are collected, last the next decision."""
        for lease in self.collector.collect(self._phase):
            key = lease_key(lease)
            if self._phase(lease) not in (RELEASED, None):  # found so at a restart, deleted
                self._report_stray(*key)
            self._written[key] = (lease, COLLECTED)
            self._deleted_uids[key] = _uid(self.watch.get(*key))
        self._remove_strays()
        self._label_adopted()
        self._end(self._open_ends())
        self._sync([(lease, None, ACTIVE) for lease in self.pods.active()])
        self.collector.decide(self._phase)
        self.telemetry.leases.set(len(self.market.leases))

    def _label_adopted(self) -> None:
        """Give the adopted leases that lack them the labels the market sets at create, behind
        one fence (a merge patch of the labels alone: the rest of the object is the market's
        record, reconciled by `_sync` and `_end`)."""
        if not self._unlabelled:
            return
        self.fence()

        def label(item: tuple[Key, dict[str, str]]) -> None:
            (namespace, name), labels = item
            with contextlib.suppress(NotFound):  # deleted meanwhile: nothing left to label
                self.kube.merge_patch(
                    "gpuleases", namespace, name, {"metadata": {"labels": labels}}
                )

        self.kube.each(label, list(self._unlabelled.items()))
        self._unlabelled = {}

    def _shown_by_watch(self, obj: dict[str, Any]) -> None:
        with self._shown_lock:
            self._shown.add(key_of(obj))

    def _remove_strays(self) -> None:
        """Delete again each GPULease object of a collected lease other than the one collected
        (another uid) that the watch showed since the last publish: a write of a deposed
        replica's, which its holder could otherwise act on for ever (an expired lease's job
        syncs pods the market deletes as they come). The delete names the uid, so it takes
        only the object judged."""
        with self._shown_lock:
            shown, self._shown = self._shown, set()
        strays = []
        for key in sorted(shown):
            obj = self.watch.get(*key) if self._phase_of_key(key) == COLLECTED else None
            if obj is not None and _uid(obj) != self._deleted_uids.get(key):
                strays.append(obj)
        try:
            self._delete_strays(strays)
        except BaseException:
            with self._shown_lock:  # looked at again when the effects pass is retried
                self._shown |= shown
            raise

    def _delete_strays(self, strays: list[dict[str, Any]]) -> None:
        """Behind one fence, all at once; each delete that took an object is logged."""
        if not strays:
            return
        self.fence()

        def delete(obj: dict[str, Any]) -> None:
            namespace, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
            if self.kube.delete("gpuleases", namespace, name, obj["metadata"].get("uid")):
                self._report_stray(namespace, name)

        self.kube.each(delete, strays)
        for obj in strays:  # gone; a watch that still shows it is not a new write
            self._deleted_uids[key_of(obj)] = _uid(obj)

    def _report_stray(self, namespace: str, name: str) -> None:
        where = {"lease": name, "namespace": namespace}
        log.warning("a collected lease was written again: deleted", extra=where)
        self.telemetry.rejections.labels("stray-lease").inc()

    def _phase_of_key(self, key: Key) -> str | None:
        """`_phase` by (namespace, object name)."""
        written = self._written.get(key)
        return None if written is None else written[1]

    def _open_ends(self) -> list[tuple[Lease, Release]]:
        """The ends not known to be released (or collected) on the host: those after the
        longest run of such ends each list of ends starts with (both lists only grow)."""
        open_ends: list[tuple[Lease, Release]] = []
        for which, ends in enumerate((self.market.releases, self.pods.quota_releases)):
            upto = self._released_upto[which]
            while upto < len(ends) and self._phase(ends[upto][0]) in GONE:
                upto += 1
            self._released_upto[which] = upto
            open_ends += ends[upto:]
        return open_ends

    def _write_lease(
        self, lease: Lease, release: Release | None, phase: str, spec_changed: bool
    ) -> None:
        """Create the object or rewrite its spec and grant (if they changed), then set the
        status field of its phase (`status.ending`, then `status.release`, after the label that
        takes a released lease out of the lease-fit policy's parameters)."""
        obj = objects.gpulease_object(lease, self.pods.grant(lease))
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if spec_changed and self.kube.create("gpuleases", namespace, obj) is None:
            self.kube.merge_patch(
                "gpuleases", namespace, name, {"spec": obj["spec"], "grant": obj["grant"]}
            )
        elif spec_changed:
            self.telemetry.agreements.inc()
        if release is not None and phase != ACTIVE:
            if phase == RELEASED:  # first: a lease whose status says released carries it too
                released = {"metadata": {"labels": {objects.RELEASED_LABEL: "true"}}}
                self.kube.merge_patch("gpuleases", namespace, name, released)
            field = "ending" if phase == ENDING else "release"
            status = {"status": {field: release.model_dump(mode="json")}}
            self.kube.merge_patch("gpuleases/status", namespace, name, status)

    def rewrite_trace(self) -> None:
        """Write the whole trace afresh (after a restart's replay)."""
        if self.trace_path is not None:
            self.trace_path.parent.mkdir(parents=True, exist_ok=True)
            self.trace_path.write_text("")
        self._traced = 0
        self.write_trace()

    def write_trace(self) -> list[Any]:
        """Append the lease events not yet written to the trace file; those events."""
        events = self.recorder.events[self._traced :]
        if events and self.trace_path is not None:
            with self.trace_path.open("a") as out:
                for event in events:
                    out.write(json.dumps(event.to_json()) + "\n")
        self._traced = len(self.recorder.events)
        return events


def _uid(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else obj["metadata"].get("uid")
