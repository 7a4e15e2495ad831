"""Admission policies for what RBAC cannot express, as Python data (rendered by `render.py`).

RBAC decides *whether* an identity may create an `Offer` in a namespace, not *what* it says. Three
`ValidatingAdmissionPolicy` objects (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30;
CEL evaluated in the apiserver, no webhook to run) close the gaps:

* `gpuparley-offer-sender`: on CREATE/UPDATE of `offers.gpuparley.io` in any namespace,
  `spec.sender` must be the identity making the request -- user `agent-<sender>` (the local rig)
  or ServiceAccount `agent-<sender>/negotiator` (a real cluster); sender `market` only for the
  market identity (user `gpuparley:market` or ServiceAccount `gpuparley-system/market`). Group
  `system:masters` (cluster admins: tests, tooling) may send as anyone. Denied with **403**
  (`reason: Forbidden`). The `gpuparley.io/sender` label must equal `spec.sender` (receivers
  select by label): denied with **422** (`reason: Invalid`). Admins are exempt from both, so tests
  can still inject malformed messages that the market must refuse on its own.
* `gpuparley-market-view`: only the market (or `system:masters`) may create, update or delete a
  ConfigMap named `gpuparley-market-view` (an agent's private market view). RBAC already denies
  agents configmap writes in the bundle's roles; this also holds where something else grants them
  (the local rig's per-agent Role grants `configmaps: *`), and RBAC cannot name the object of a
  `create`.

* `gpuparley-lease-gate`: in agent home namespaces (label `gpuparley.io/role: agent`), a pod
  requesting an `nvidia.com/*` resource must be created behind the scheduling gate
  `gpuparley.io/lease`, and only the market (or `system:masters`) may remove that gate. So a GPU
  pod is only ever scheduled under a lease the market issued (`market_controller._admit_pods`);
  RBAC cannot say this, since the negotiator must create, patch and delete its own pods.

All are cluster-scoped and identical in every agent's bundle. Limitation: with `deploy
--namespace NS` the negotiator ServiceAccount is `NS/negotiator`, which the sender policy does not
map to an agent, so it cannot send offers (the rig user `agent-<a>` still can).
"""

from __future__ import annotations

from typing import Any

from gpuparley.deploy.crds import GROUP
from gpuparley.deploy.gpu_resources import NVIDIA_PREFIX
from gpuparley.deploy.objects import LEASE_GATE, MARKET_NAMESPACE, SENDER_LABEL, VIEW_CONFIGMAP
from gpuparley.deploy.rbac import (
    MARKET_SERVICE_ACCOUNT,
    MARKET_USER,
    NEGOTIATOR_SERVICE_ACCOUNT,
    ROLE_LABEL,
)
from gpuparley.envs.market import messages

ADMISSION_API = "admissionregistration.k8s.io/v1"
ADMIN_GROUP = "system:masters"
OFFER_SENDER_POLICY = "gpuparley-offer-sender"
MARKET_VIEW_POLICY = "gpuparley-market-view"
LEASE_GATE_POLICY = "gpuparley-lease-gate"

_MARKET_IDENTITIES = (
    f"['{MARKET_USER}', 'system:serviceaccount:{MARKET_NAMESPACE}:{MARKET_SERVICE_ACCOUNT}']"
)
# Shared by both policies.
_IDENTITY_VARIABLES = [
    {"name": "user", "expression": "request.userInfo.username"},
    {
        "name": "admin",
        "expression": f"has(request.userInfo.groups) && '{ADMIN_GROUP}' in request.userInfo.groups",
    },
    {"name": "market", "expression": f"request.userInfo.username in {_MARKET_IDENTITIES}"},
]


def _policy(
    name: str,
    group: str,
    resource: str,
    operations: list[str],
    spec: dict[str, Any],
    namespace_selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ValidatingAdmissionPolicy on one resource that fails closed."""
    rule = {
        "apiGroups": [group],
        "apiVersions": ["*"] if group else ["v1"],
        "operations": operations,
        "resources": [resource],
    }
    constraints: dict[str, Any] = {"resourceRules": [rule]}
    if namespace_selector:
        constraints["namespaceSelector"] = namespace_selector
    return {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": constraints, **spec},
    }


def offer_sender_policy() -> dict[str, Any]:
    """`spec.sender` of an Offer is whoever creates (or updates) it; its sender label agrees."""
    sender = "has(object.spec) && has(object.spec.sender) ? string(object.spec.sender) : ''"
    label = (
        f"has(object.metadata.labels) && '{SENDER_LABEL}' in object.metadata.labels"
        f" ? object.metadata.labels['{SENDER_LABEL}'] : ''"
    )
    is_sender = (
        f"variables.sender == '{messages.MARKET}' ? variables.market"
        " : (variables.user == 'agent-' + variables.sender"
        " || variables.user == 'system:serviceaccount:agent-' + variables.sender"
        f" + ':{NEGOTIATOR_SERVICE_ACCOUNT}')"
    )
    return _policy(
        OFFER_SENDER_POLICY,
        GROUP,
        "offers",
        ["CREATE", "UPDATE"],
        {
            "variables": [
                {"name": "sender", "expression": sender},
                {"name": "label", "expression": label},
                *_IDENTITY_VARIABLES,
            ],
            "validations": [
                {
                    "expression": f"variables.admin || ({is_sender})",
                    "message": "spec.sender must be the identity creating the Offer",
                    "messageExpression": (
                        "'an Offer with spec.sender ' + variables.sender + ' cannot be sent by '"
                        " + variables.user + ' (the sender must be user agent-<sender> or"
                        " ServiceAccount agent-<sender>/negotiator; sender market: the market)'"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": "variables.admin || variables.label == variables.sender",
                    "message": f"label {SENDER_LABEL} must equal spec.sender",
                    "messageExpression": (
                        f"'label {SENDER_LABEL}=' + variables.label"
                        " + ' does not match spec.sender ' + variables.sender"
                    ),
                    "reason": "Invalid",
                },
            ],
        },
    )


def market_view_policy() -> dict[str, Any]:
    """Only the market writes an agent's market view ConfigMap."""
    return _policy(
        MARKET_VIEW_POLICY,
        "",
        "configmaps",
        ["CREATE", "UPDATE", "DELETE"],
        {
            # Not `resourceNames`: a deletecollection reaches admission once per object, but
            # with the collection's (empty) name, so a name rule would let it through.
            "matchConditions": [
                {
                    "name": "is-market-view",
                    "expression": (
                        "request.operation == 'DELETE'"
                        f" ? oldObject != null && oldObject.metadata.name == '{VIEW_CONFIGMAP}'"
                        f" : object.metadata.name == '{VIEW_CONFIGMAP}'"
                    ),
                }
            ],
            "variables": list(_IDENTITY_VARIABLES),
            "validations": [
                {
                    "expression": "variables.admin || variables.market",
                    "message": f"ConfigMap {VIEW_CONFIGMAP} is written by the market only",
                    "messageExpression": (
                        f"'ConfigMap {VIEW_CONFIGMAP} is written by the market only, not by '"
                        " + variables.user"
                    ),
                    "reason": "Forbidden",
                }
            ],
        },
    )


def _gated(pod: str) -> str:
    return (
        f"has({pod}.spec.schedulingGates)"
        f" && {pod}.spec.schedulingGates.exists(g, g.name == '{LEASE_GATE}')"
    )


def lease_gate_policy() -> dict[str, Any]:
    """GPU pods in agent namespaces start behind the lease gate; only the market lifts it."""
    wants_gpu = (
        "c, has(c.resources) && ("
        + " || ".join(
            f"(has(c.resources.{kind}) && c.resources.{kind}.exists(k,"
            f" k.startsWith('{NVIDIA_PREFIX}')))"
            for kind in ("limits", "requests")
        )
        + ")"
    )
    gpu = (
        f"object.spec.containers.exists({wants_gpu}) || (has(object.spec.initContainers)"
        f" && object.spec.initContainers.exists({wants_gpu}))"
    )
    # The pod itself: not pods/status (kubelet, KWOK) nor pods/binding (scheduler).
    return _policy(
        LEASE_GATE_POLICY,
        "",
        "pods",
        ["CREATE", "UPDATE"],
        {
            "variables": [
                *_IDENTITY_VARIABLES,
                {"name": "gpu", "expression": gpu},
                {"name": "gated", "expression": _gated("object")},
                {"name": "was_gated", "expression": f"oldObject != null && {_gated('oldObject')}"},
            ],
            "validations": [
                {
                    "expression": (
                        "variables.admin || variables.market || request.operation != 'CREATE'"
                        " || !variables.gpu || variables.gated"
                    ),
                    "message": f"GPU pods must be created behind the scheduling gate {LEASE_GATE}",
                    "messageExpression": (
                        "'pod ' + object.metadata.name + ' requests GPUs: it must be created"
                        f" behind the scheduling gate {LEASE_GATE} (the market lifts it under"
                        " a lease), not by ' + variables.user"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        "variables.admin || variables.market || !variables.was_gated"
                        " || variables.gated"
                    ),
                    "message": f"only the market lifts the scheduling gate {LEASE_GATE}",
                    "messageExpression": (
                        f"'only the market lifts the scheduling gate {LEASE_GATE} (pod '"
                        " + object.metadata.name + '), not ' + variables.user"
                    ),
                    "reason": "Forbidden",
                },
            ],
        },
        namespace_selector={"matchLabels": {ROLE_LABEL: "agent"}},
    )


def _binding(policy: str) -> dict[str, Any]:
    return {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]},
    }


def admission_objects() -> list[dict[str, Any]]:
    """Policies and their bindings, in apply order (a binding names its policy)."""
    return [
        offer_sender_policy(),
        _binding(OFFER_SENDER_POLICY),
        market_view_policy(),
        _binding(MARKET_VIEW_POLICY),
        lease_gate_policy(),
        _binding(LEASE_GATE_POLICY),
    ]
