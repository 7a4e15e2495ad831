"""The market replicas' fence in the apiserver: a deposed replica's writes are refused.

With two market replicas under leader election (`market run --leader-elect`), the market's own
check before a write (`MarketState.confirm`, a read of the state's head) leaves a window: a
replica that passed it and then stalled (a paused process) while the standby took over could
still write when it wakes -- a GPULease, a binding, a pod deleted (`deploy/protocol/README.md`,
"Gaps"). A resourceVersion precondition cannot close it: the write and the state it depends on
are different objects. Admission can:

* every request of an elected replica names the replica, as a user extra field
  (`gpuparley-replica`: the replica impersonates its own user with that extra, which RBAC
  lets the market identity do and no agent);
* the `ValidatingAdmissionPolicy` `gpuparley-market-fence` takes the election Lease
  (`gpuparley-system/gpuparley-market`) as its parameter and refuses every write of the
  market's kinds (GPULeases and their status, bindings, pod and Offer deletes, ConfigMaps:
  the state, the views) whose replica is not the Lease's holder.

So the check is made by the apiserver at the write itself, against its cache of the Lease: what
is left of the window is that cache's lag behind the Lease (milliseconds), not a stall of the
replica's. A replica that has just won the election waits until the policy admits it
(`await_fence`: a dry-run probe) before it writes, so the lag costs it a short wait, not a
refused write. A market run without `--leader-elect` names no replica, and the policy leaves its
requests alone (as it does everyone else's): there is no other replica to fence it from.
"""

from __future__ import annotations

import time
from typing import Any

from gpuparley.deploy.admission_cel import ADMISSION_API, binding, resource_rule
from gpuparley.deploy.crds import GROUP
from gpuparley.deploy.kube import Forbidden, Kube
from gpuparley.deploy.objects import MARKET_NAMESPACE
from gpuparley.deploy.rbac import MARKET_REPLICA_EXTRA as REPLICA_EXTRA

ELECTION_LEASE = "gpuparley-market"  # the market replicas' election Lease, in MARKET_NAMESPACE
FENCE_POLICY = "gpuparley-market-fence"
_WRITES = ["CREATE", "UPDATE", "DELETE"]
# What the market writes, by (API group, resource, operations).
FENCED: list[tuple[str, str, list[str]]] = [
    (GROUP, "gpuleases", _WRITES),
    (GROUP, "gpuleases/status", _WRITES),
    (GROUP, "offers", ["DELETE"]),
    ("", "pods", ["DELETE"]),
    ("", "pods/binding", ["CREATE"]),
    ("", "configmaps", _WRITES),
]
_REPLICA = f"request.userInfo.extra['{REPLICA_EXTRA}']"


def fence_policy() -> dict[str, Any]:
    """The policy: a request naming a replica is admitted only if that replica holds the
    election Lease."""
    rules = [resource_rule(group, resource, operations) for group, resource, operations in FENCED]
    return {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": FENCE_POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"},
            "matchConstraints": {"resourceRules": rules},
            "matchConditions": [
                {
                    "name": "names-a-market-replica",
                    "expression": "has(request.userInfo.extra)"
                    f" && '{REPLICA_EXTRA}' in request.userInfo.extra",
                }
            ],
            "validations": [
                {
                    "expression": "has(params.spec.holderIdentity)"
                    f" && params.spec.holderIdentity in {_REPLICA}",
                    "messageExpression": (
                        f"'market replica ' + {_REPLICA}.join(',') + ' does not hold the Lease "
                        f"{MARKET_NAMESPACE}/{ELECTION_LEASE}: a deposed replica writes nothing'"
                    ),
                    "reason": "Forbidden",
                }
            ],
        },
    }


def fence_binding() -> dict[str, Any]:
    """Its binding: the election Lease as the parameter. Allow when the Lease does not exist
    (the apiserver resolves the parameter before the match conditions, so Deny would refuse
    everyone's ConfigMap writes while no market is elected); a replica names itself only once
    it runs for the election, which creates the Lease."""
    return binding(
        FENCE_POLICY,
        {
            "name": ELECTION_LEASE,
            "namespace": MARKET_NAMESPACE,
            "parameterNotFoundAction": "Allow",
        },
    )


def act_as_replica(kube: Kube, identity: str) -> None:
    """Make every request of `kube` name the replica `identity` (its election identity): the
    market impersonates its own user with the replica extra field."""
    kube.impersonate(kube.whoami(), {REPLICA_EXTRA: identity})


def _fenced(exc: Forbidden) -> bool:
    """The refusal is the fence's: the replica is not the Lease's holder (as the apiserver's
    cache of the Lease has it)."""
    return FENCE_POLICY in exc.message


def await_fence(kube: Kube, seconds: float = 10.0) -> bool:
    """Wait until the fence admits this replica's writes (the apiserver's cache of the Lease
    shows it as the holder), probing with a dry-run ConfigMap create; at once for a client that
    names no replica. False if it does not within `seconds` (another replica holds the Lease)."""
    if REPLICA_EXTRA not in kube.extra:
        return True
    probe = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gpuparley-fence-probe"}}
    deadline = time.monotonic() + seconds
    while True:
        try:
            kube.create("configmaps", MARKET_NAMESPACE, probe, dry_run=True)
            return True
        except Forbidden as exc:
            if not _fenced(exc):
                raise
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
