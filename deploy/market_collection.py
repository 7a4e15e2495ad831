"""Released GPULeases removed from the host once their holders have applied them.

Why: a released lease is the record of how a lease ended, but every one kept costs every pod
write of its namespace (the lease-fit admission policy scans the namespace's leases for its
parameters: `benchmarks/lease_history_cost.py`, figures in the README) and room in the shared
etcd. So the market keeps each holder's latest `keep` released leases (of its market leases
and of its quota grants, each) and deletes older ones -- but only those its holder has applied:
the release says whether the job finished or must wait again, which a negotiator that has not
seen it yet would never learn.
A negotiator lists in its Negotiator status (`status.appliedReleases`, at most 256 names) the
released leases whose end it has applied and which still exist, oldest release first; `keep` is
at most half that bound (`MarketController`), so the list has room for the ends to collect.

Restart safety: what is collected must stay collected, or a restarted market, finding an ended
lease without its object, would write it again (ending, then released) and its holder would
apply that end once more. Each holder's ends are taken in the market's order of ends, and
collected from the oldest on, so what is collected is a count per holder and kind: a cursor. A
cursor is decided after a publish (`decide`), written with the next journal commit (in the
summary's counters: `MarketController._summary`), and only then acted on (`collect`, at the
start of the next publish): the commit point rule of `market_state.py`. A controller killed
after the commit and before the deletes finds the cursor in the state it resumes and makes them
then (deleting is idempotent); one killed before the commit has deleted nothing the stored
state does not say. A holder that never applies its ends holds up only its own cursor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from gpuparley.deploy.kube import Kube
from gpuparley.deploy.market_pods import lease_key
from gpuparley.deploy.objects import RELEASED
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.messages import Lease, Release

KINDS = ("market", "quota")  # which list of ends: the market's leases, the quota grants


class LeaseCollector:
    """Per holder and kind of end, how many of the oldest ends are collected (decided,
    committed, and made on the host by this process)."""

    def __init__(
        self,
        kube: Kube,
        market: Market,
        quota_ends: list[tuple[Lease, Release]],
        applied: Callable[[str], set[str]],
        keep: int | None,
        fence: Callable[[], None],
    ) -> None:
        self.kube = kube
        self.market = market
        self.quota_ends = quota_ends
        self.applied = applied  # holder -> the GPULease names it lists as applied
        self.keep = keep  # None: collect nothing
        self.fence = fence
        self._ends: dict[str, list[Lease]] = defaultdict(list)  # "kind/holder" -> its ends
        self._indexed = [0, 0]
        self.decided: dict[str, int] = {}  # cursors to commit
        self.committed: dict[str, int] = {}  # cursors in the stored state
        self._made: dict[str, int] = {}  # how far this process made the committed cursors

    def restore(self, cursors: dict[str, int]) -> None:
        """The cursors of the state a restarted market resumes: committed, not all made."""
        self.decided = dict(cursors)
        self.committed = dict(cursors)

    def collect(self, phase: Callable[[Lease], str | None]) -> list[Lease]:
        """Make the committed cursors: delete the GPULeases they pass that are still on the
        host; the leases now collected. A cursor passes released ends only, so one found in
        another phase (after a restart, which takes the objects as found) was written after
        its collection -- a deposed replica's late create, `LeasePublisher._remove_strays` --
        and goes too, rather than being ended and released again by the reconcile."""
        self._index()
        passed: list[Lease] = []
        for key, upto in self.committed.items():
            passed += self._ends[key][self._made.get(key, 0) : upto]
        present = [lease for lease in passed if phase(lease) is not None]
        if present:
            self.fence()
            self.kube.each(self._delete, present)
        self._made.update(self.committed)  # only once made: a failed pass is made again
        return passed

    def _delete(self, lease: Lease) -> None:
        namespace, name = lease_key(lease)
        self.kube.delete("gpuleases", namespace, name)

    def decide(self, phase: Callable[[Lease], str | None]) -> None:
        """Move each cursor over the oldest ends that are released, applied by their holder
        and not among its `keep` latest."""
        if self.keep is None:
            return
        self._index()
        for key, ends in self._ends.items():
            at, limit = self.decided.get(key, 0), len(ends) - self.keep
            if at >= limit:
                continue
            applied = self.applied(key.split("/", 1)[1])
            moved = at
            while (
                moved < limit
                and phase(ends[moved]) == RELEASED
                and lease_key(ends[moved])[1] in applied
            ):
                moved += 1
            if moved > at:
                self.decided[key] = moved

    def _index(self) -> None:
        """File the ends made since the last call under their holder, in the market's order."""
        for which, ends in enumerate((self.market.releases, self.quota_ends)):
            for lease, _release in ends[self._indexed[which] :]:
                self._ends[f"{KINDS[which]}/{lease.holder}"].append(lease)
            self._indexed[which] = len(ends)
