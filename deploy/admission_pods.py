"""Admission policies on pods in agent namespaces: a pod runs only inside a lease.

RBAC lets a negotiator create, patch and delete its pods on the host; it cannot say *which* pods.
Two `ValidatingAdmissionPolicy` objects (CEL in the apiserver, no webhook) do, for every request
except those of cluster admins (`system:masters`), the market and Kubernetes' controllers (the
negotiator's own Deployment, whose template the operator wrote):

* `gpuparley-lease-scheduler`: every pod is created unbound and names the market as its
  scheduler (`schedulerName: gpuparley-market`, which kube-scheduler leaves alone) -- GPU or
  CPU-only alike (a CPU-only pod squatting on a GPU node starves the leases placed there; the
  market leases GPUs only, so such a pod never runs) -- and only the market binds it (RBAC:
  `pods/binding` is the market's; neither field can change after creation). No finalizers may
  be added (a finalizer keeps an evicted pod, and its node resources, alive). Every pod names
  its `GPULease` (label `gpuparley.io/lease`) and the lease's shard (label
  `gpuparley.io/lease-shard`, the last character of the lease's name), which routes it to the
  fit binding that holds its lease (below).
* `gpuparley-lease-fit`: a pod names its pod slot (annotation `gpuparley.io/pod-index`) and
  stays inside its lease's `grant`
  (`lease_grant.py`): pinned to the slot's node, no GPU resource the lease does not grant, and
  per resource, summed over its containers, no more than the grant (every container limits CPU
  and memory; each init container fits alone; no pod-level resources or overhead). The leases
  are the policy's *parameters* (`paramKind: GPULease`): a binding that selects several
  parameters ANDs their verdicts, so each lease checks only the pods that name it. There is one
  binding per lease shard (`lease_fit_binding`), for the pods of that shard, with the shard's
  leases of the pod's namespace that are not released as parameters. A lease that is ending
  (`status.ending`) admits no pod; a
  released one is no parameter any more (the market labels it `gpuparley.io/released` as it
  releases it), so a pod naming it is a pod whose lease the policy cannot see (below). The
  apiserver evaluates the policy once per parameter for every pod write, so with every lease an
  agent ever held as a parameter its pod writes grew about a hundredfold over 1,000 released
  leases; the released ones are now only scanned for the selector, which grows far more slowly,
  and the market keeps only each agent's latest released leases (`market_collection.py`). The
  shards do the same for the leases an agent holds: a pod write meets about 1/16 of them
  (`benchmarks/lease_history_cost.py`, figures in the README).

What admission cannot do, the market does before it binds a pod (`market_pods.py`): count a
lease's pods (one per slot), and check a pod whose lease the policy cannot see -- a lease the
apiserver's parameter cache has not caught up with, one released, one that does not exist, or a
namespace with no lease held (no parameter: the policy does not apply). Such a pod is admitted
unbound and stays so; the market's check, against the leases it holds itself, is the
authoritative one, and its end-of-epoch sweep evicts it.
"""

from __future__ import annotations

from typing import Any

from gpuparley.deploy.admission_cel import (
    IDENTITY_VARIABLES,
    NO_NEW_FINALIZERS,
    TRUSTED_REQUEST,
    binding,
    policy,
    resource_rule,
)
from gpuparley.deploy.crds import API_VERSION
from gpuparley.deploy.gpu_resources import NVIDIA_PREFIX
from gpuparley.deploy.lease_grant import GRANT_FIELD
from gpuparley.deploy.objects import (
    LEASE_LABEL,
    LEASE_SHARD_LABEL,
    LEASE_SHARDS,
    MARKET_SCHEDULER,
    RELEASED_LABEL,
)
from gpuparley.deploy.rbac import ROLE_LABEL
from gpuparley.deploy.workload import HOSTNAME_LABEL, INDEX_ANNOTATION

LEASE_SCHEDULER_POLICY = "gpuparley-lease-scheduler"
LEASE_FIT_POLICY = "gpuparley-lease-fit"
AGENT_NAMESPACES = {"matchLabels": {ROLE_LABEL: "agent"}}
_TRUSTED = "variables.admin || variables.market || variables.controller"
POD_OPERATIONS = ("CREATE", "UPDATE")  # what both pod policies judge


def _label_variable(name: str, label: str) -> dict[str, str]:
    """A CEL variable holding the pod's label `label` ('' if it has none)."""
    return {
        "name": name,
        "expression": (
            f"has(object.metadata.labels) && '{label}' in object.metadata.labels"
            f" ? object.metadata.labels['{label}'] : ''"
        ),
    }


def lease_scheduler_policy() -> dict[str, Any]:
    """Agents' pods are created for the market to bind (unbound), with no new finalizers, each
    naming its lease and the lease's shard."""
    # The pod itself: not pods/status (kubelet, KWOK) nor pods/binding (the market's alone, by
    # RBAC). Neither `schedulerName` nor `nodeName` can change after creation, so only a create
    # is checked for them.
    return policy(
        LEASE_SCHEDULER_POLICY,
        "",
        "pods",
        list(POD_OPERATIONS),
        {
            "variables": [
                *IDENTITY_VARIABLES,
                _label_variable("lease", LEASE_LABEL),
                _label_variable("shard", LEASE_SHARD_LABEL),
                {
                    "name": "for_market",
                    "expression": (
                        "has(object.spec.schedulerName)"
                        f" && object.spec.schedulerName == '{MARKET_SCHEDULER}'"
                        " && (!has(object.spec.nodeName) || object.spec.nodeName == '')"
                    ),
                },
            ],
            "validations": [
                {
                    # Also what routes the pod to its lease's fit binding (one per shard): a pod
                    # with no shard, or another lease's, would meet no binding holding its lease.
                    "expression": (
                        f"{_TRUSTED} || (variables.lease != '' && size(variables.shard) == 1"
                        " && variables.lease.endsWith(variables.shard))"
                    ),
                    "message": (
                        f"a pod in an agent namespace names its GPULease ({LEASE_LABEL}) and the"
                        f" lease's shard ({LEASE_SHARD_LABEL}: the name's last character)"
                    ),
                    "messageExpression": (
                        "'pod ' + object.metadata.name + ' must name the GPULease it runs under"
                        f" (label {LEASE_LABEL}) and its shard (label {LEASE_SHARD_LABEL}: the"
                        " last character of that name)'"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        f"{_TRUSTED} || request.operation != 'CREATE' || variables.for_market"
                    ),
                    "message": f"pods must be created unbound, for {MARKET_SCHEDULER} to bind",
                    "messageExpression": (
                        "'pod ' + object.metadata.name + ' must be created unbound with"
                        f" schedulerName {MARKET_SCHEDULER} (the market binds it under a lease),"
                        " not otherwise by ' + variables.user"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": f"{_TRUSTED} || {NO_NEW_FINALIZERS}",
                    "message": "agents may not add finalizers to pods",
                    "messageExpression": (
                        "'pod ' + object.metadata.name + ': agents may not add finalizers (an"
                        " evicted pod must go), not ' + variables.user"
                    ),
                    "reason": "Forbidden",
                },
            ],
        },
        namespace_selector=AGENT_NAMESPACES,
    )


def _limit(container: str, resource: str) -> str:
    """CEL: a container's limit of `resource` as a float (0 without one)."""
    return (
        f"(has({container}.resources) && has({container}.resources.limits)"
        f" && {resource} in {container}.resources.limits"
        f" ? quantity({container}.resources.limits[{resource}]).asApproximateFloat() : 0.0)"
    )


def _bounded(container: str) -> str:
    """CEL: the container limits CPU and memory, and asks for no GPU outside the grant."""
    granted = f"params.{GRANT_FIELD}.limits"
    only_granted = f"(!k.startsWith('{NVIDIA_PREFIX}') || k in {granted})"
    return (
        f"has({container}.resources) && has({container}.resources.limits)"
        f" && 'cpu' in {container}.resources.limits && 'memory' in {container}.resources.limits"
        f" && {container}.resources.limits.all(k, {only_granted})"
        f" && (!has({container}.resources.requests)"
        f" || {container}.resources.requests.all(k, {only_granted}))"
    )


def lease_fit_policy() -> dict[str, Any]:
    """Each pod is inside the grant of the lease it names (see the module docstring)."""
    grant = f"params.{GRANT_FIELD}"
    annotation = f"object.metadata.annotations['{INDEX_ANNOTATION}']"
    pod = "'pod ' + object.metadata.name + ' (lease ' + variables.lease + ')'"
    sums = (
        f"{grant}.limits.all(r, object.spec.containers.map(c, {_limit('c', 'r')}).sum()"
        f" <= quantity({grant}.limits[r]).asApproximateFloat())"
    )
    inits = (
        "!has(object.spec.initContainers) || object.spec.initContainers.all(c,"
        f" {_bounded('c')} && {grant}.limits.all(r, {_limit('c', 'r')}"
        f" <= quantity({grant}.limits[r]).asApproximateFloat()))"
    )

    def check(expression: str, message: str, detail: str) -> dict[str, str]:
        return {
            "expression": f"!variables.mine || ({expression})",
            "message": message,
            "messageExpression": f"{pod} + ': {detail}'",
            "reason": "Forbidden",
        }

    return policy(
        LEASE_FIT_POLICY,
        "",
        "pods",
        list(POD_OPERATIONS),
        {
            "paramKind": {"apiVersion": API_VERSION, "kind": "GPULease"},
            # Trusted requests are not checked at all (and need no lease to exist).
            "matchConditions": [{"name": "untrusted", "expression": f"!({TRUSTED_REQUEST})"}],
            "variables": [
                _label_variable("lease", LEASE_LABEL),
                {"name": "mine", "expression": "params.metadata.name == variables.lease"},
                {
                    "name": "index",
                    "expression": (
                        f"has(object.metadata.annotations)"
                        f" && '{INDEX_ANNOTATION}' in object.metadata.annotations"
                        f" && {annotation}.matches('^[0-9]{{1,4}}$') ? int({annotation}) : -1"
                    ),
                },
                {
                    "name": "node",
                    "expression": (
                        "has(object.spec.nodeSelector)"
                        f" && '{HOSTNAME_LABEL}' in object.spec.nodeSelector"
                        f" ? object.spec.nodeSelector['{HOSTNAME_LABEL}'] : ''"
                    ),
                },
            ],
            "validations": [
                check(
                    f"has({grant}) && !(has(params.status)"
                    " && (has(params.status.ending) || has(params.status.release)))",
                    "the lease has ended",
                    "the lease is ending, has ended or grants nothing",
                ),
                check(
                    f"variables.index >= 0 && variables.index < size({grant}.nodes)"
                    f" && variables.node == {grant}.nodes[variables.index]",
                    "pod not pinned to its lease slot's node",
                    f"pod slot ({INDEX_ANNOTATION}) and node ({HOSTNAME_LABEL}) must be a slot of"
                    " the lease and its node",
                ),
                check(
                    "!has(object.spec.resources) && !has(object.spec.overhead)"
                    f" && object.spec.containers.all(c, {_bounded('c')})",
                    "every container limits cpu and memory and asks no ungranted GPU",
                    "every container must limit cpu and memory, ask for no GPU resource the lease"
                    " does not grant, and the pod may set no pod-level resources or overhead",
                ),
                check(
                    f"{sums} && ({inits})",
                    "the pod asks for more than its lease grants",
                    "its containers ask for more than the lease grants per pod",
                ),
            ],
        },
        namespace_selector=AGENT_NAMESPACES,
    )


def pod_admission_objects() -> list[dict[str, Any]]:
    """The pod policies and their bindings: the fit policy's one per lease shard."""
    return [
        lease_scheduler_policy(),
        binding(LEASE_SCHEDULER_POLICY),
        lease_fit_policy(),
        *(lease_fit_binding(shard) for shard in LEASE_SHARDS),
    ]


def lease_fit_binding(shard: str) -> dict[str, Any]:
    """The fit policy's binding for the pods of one lease shard, whose parameters are that
    shard's leases not released yet.

    The apiserver evaluates a policy once per parameter for each pod write, so a binding over
    every lease of the namespace made each pod write cost in proportion to the leases its agent
    holds (and, before released leases were labelled out, to every lease it ever held). The
    binding matches only pods labelled with its shard (the scheduler policy refuses a pod whose
    shard is not its lease's), so a pod write meets one binding and about 1/16 of the leases.
    Allow when no such lease exists: the apiserver resolves parameters before it evaluates match
    conditions, so "Deny" would refuse admins and controllers there too. Such a pod still waits
    unbound (the scheduler policy), and the market binds pods of its active leases only."""
    obj = binding(
        LEASE_FIT_POLICY,
        {
            "selector": {
                "matchLabels": {LEASE_SHARD_LABEL: shard},
                "matchExpressions": [{"key": RELEASED_LABEL, "operator": "DoesNotExist"}],
            },
            "parameterNotFoundAction": "Allow",
        },
    )
    obj["metadata"]["name"] = f"{LEASE_FIT_POLICY}-{shard}"
    obj["spec"]["matchResources"] = {
        "namespaceSelector": AGENT_NAMESPACES,
        "objectSelector": {"matchLabels": {LEASE_SHARD_LABEL: shard}},
        "resourceRules": [resource_rule("", "pods", list(POD_OPERATIONS))],
    }
    return obj
