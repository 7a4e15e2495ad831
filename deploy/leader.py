"""Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's leaderelection does.

Several replicas of one agent's negotiator may run (a rolling update, a standby); only the leader
may send messages or sync pods, otherwise two replicas could both act for the agent. Every write
carries the Lease's `resourceVersion`, so of two replicas racing for an expired lease exactly one
wins (the apiserver answers the other with 409 Conflict). A leader that cannot renew within the
lease duration stops acting before anyone else may take over (it checks `is_leader` before every
action, and renews well inside the duration).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from gpuparley.deploy.kube import ApiError, Conflict, Kube


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(stamp: str | None) -> float:
    if not stamp:
        return 0.0
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class LeaderElector:
    """Acquire and keep a Lease named `name` in `namespace` for `identity`."""

    def __init__(
        self, kube: Kube, namespace: str, name: str, identity: str, duration: float = 15.0
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self._valid_until = 0.0  # monotonic deadline of our own leadership

    @property
    def is_leader(self) -> bool:
        return time.monotonic() < self._valid_until

    def try_acquire_or_renew(self) -> bool:
        """One election round; True while we lead. Network errors count as not leading."""
        started = time.monotonic()
        try:
            won = self._round()
        except ApiError:  # Unavailable included: an unreachable apiserver is no leadership
            won = False
        if won:
            # Leadership is trusted for 2/3 of the duration from the moment we asked, so it lapses
            # here before the Lease can be seen as expired by anyone else.
            self._valid_until = started + self.duration * 2 / 3
        else:
            self._valid_until = 0.0
        return won

    def _spec(self, transitions: int, acquired: str | None = None) -> dict[str, object]:
        now = _now()
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    def _round(self) -> bool:
        lease = self.kube.get("leases", self.namespace, self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name},
                "spec": self._spec(0),
            }
            return self.kube.create("leases", self.namespace, body) is not None
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.identity:
            lease["spec"] = self._spec(transitions, spec.get("acquireTime"))
        else:
            expires = _parse(spec.get("renewTime")) + float(spec.get("leaseDurationSeconds") or 0)
            if holder and time.time() < expires:
                return False
            lease["spec"] = self._spec(transitions + 1)
        try:
            self.kube.replace("leases", self.namespace, lease)  # carries resourceVersion
        except Conflict:
            return False
        return True

    def release(self) -> None:
        """Give up leadership at shutdown so a standby takes over at once."""
        if not self.is_leader:
            return
        self._valid_until = 0.0
        try:
            lease = self.kube.get("leases", self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                self.kube.replace("leases", self.namespace, lease)
        except ApiError:
            pass
