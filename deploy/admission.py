"""Admission policies for what RBAC cannot express, as Python data (rendered by `render.py`).

RBAC decides *whether* an identity may create an `Offer` in a namespace, not *what* it says.
`ValidatingAdmissionPolicy` objects (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30;
CEL evaluated in the apiserver, no webhook to run) close the gaps:

* `gpuparley-offer-sender`: on CREATE/UPDATE of `offers.gpuparley.io` in any namespace,
  `spec.sender` must be the identity making the request -- user `agent-<sender>` (the local rig)
  or ServiceAccount `agent-<sender>/negotiator` (a real cluster); sender `market` only for the
  market identity (user `gpuparley:market` or ServiceAccount `gpuparley-system/market`). Group
  `system:masters` (cluster admins: tests, tooling) may send as anyone. Denied with **403**
  (`reason: Forbidden`). The `gpuparley.io/sender` label must equal `spec.sender` (receivers
  select by label): **422** (`reason: Invalid`). In an agent's home namespace (its outbox, where
  its bids to the market wait) the sender must be that agent: **403**. Agents may add no
  finalizers (an undeletable Offer is storage nobody can reclaim): **403**. Admins are exempt
  from all of these, so tests can still inject messages the market must refuse on its own.
* `gpuparley-market-view`: only the market (or `system:masters`) may create, update or delete a
  ConfigMap named `gpuparley-market-view` (an agent's private market view). RBAC already denies
  agents configmap writes in the bundle's roles; this also holds where something else grants them
  (the local rig's per-agent Role grants `configmaps: *`), and RBAC cannot name the object of a
  `create`.
* the pod policies `gpuparley-lease-scheduler` and `gpuparley-lease-fit` (`admission_pods.py`):
  a pod in an agent namespace runs only under, and inside, a lease.
* `gpuparley-market-fence` (`market_fence.py`): a market replica's writes are admitted only
  while it holds the market's election Lease.

All are cluster-scoped and identical in every agent's bundle. Limitation: with `deploy
--namespace NS` the negotiator ServiceAccount is `NS/negotiator`, which the sender policy does not
map to an agent, so it cannot send offers (the rig user `agent-<a>` still can).
"""

from __future__ import annotations

from typing import Any

from gpuparley.deploy.admission_cel import (
    ADMIN_GROUP,
    ADMISSION_API,
    IDENTITY_VARIABLES,
    NO_NEW_FINALIZERS,
    binding,
    policy,
)
from gpuparley.deploy.admission_pods import (
    LEASE_FIT_POLICY,
    LEASE_SCHEDULER_POLICY,
    pod_admission_objects,
)
from gpuparley.deploy.crds import GROUP
from gpuparley.deploy.market_fence import fence_binding, fence_policy
from gpuparley.deploy.objects import AGENT_LABEL, SENDER_LABEL, VIEW_CONFIGMAP
from gpuparley.deploy.rbac import NEGOTIATOR_SERVICE_ACCOUNT, ROLE_LABEL
from gpuparley.envs.market import messages

__all__ = [
    "ADMIN_GROUP",
    "ADMISSION_API",
    "LEASE_FIT_POLICY",
    "LEASE_SCHEDULER_POLICY",
    "MARKET_VIEW_POLICY",
    "OFFER_SENDER_POLICY",
    "admission_objects",
    "market_view_policy",
    "offer_sender_policy",
]

OFFER_SENDER_POLICY = "gpuparley-offer-sender"
# The CRD bounds an Offer's spec (`schema_bounds.py`); its metadata is bounded here, or an agent
# could still store 256 KiB of annotations per object.
_SMALL_METADATA = (
    "(!has(object.metadata.labels) || size(object.metadata.labels) <= 16)"
    " && (!has(object.metadata.annotations) || (size(object.metadata.annotations) <= 8"
    " && object.metadata.annotations.all(k, size(object.metadata.annotations[k]) <= 1024)))"
)
MARKET_VIEW_POLICY = "gpuparley-market-view"


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
    # The agent whose home namespace this is ('' for inboxes and everything else).
    labels = "namespaceObject.metadata.labels"
    home_of = (
        f"namespaceObject != null && has({labels}) && '{ROLE_LABEL}' in {labels}"
        f" && {labels}['{ROLE_LABEL}'] == 'agent' && '{AGENT_LABEL}' in {labels}"
        f" ? {labels}['{AGENT_LABEL}'] : ''"
    )
    return policy(
        OFFER_SENDER_POLICY,
        GROUP,
        "offers",
        ["CREATE", "UPDATE"],
        {
            "variables": [
                {"name": "sender", "expression": sender},
                {"name": "label", "expression": label},
                {"name": "home_of", "expression": home_of},
                *IDENTITY_VARIABLES,
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
                {
                    "expression": (
                        "variables.admin || variables.home_of == ''"
                        " || variables.home_of == 'agent-' + variables.sender"
                    ),
                    "message": "an agent's home namespace holds only its own offers",
                    "messageExpression": (
                        "'namespace ' + request.namespace + ' is the outbox of '"
                        " + variables.home_of + ': it holds no Offer from ' + variables.sender"
                    ),
                    "reason": "Forbidden",
                },
                {
                    "expression": f"variables.admin || ({_SMALL_METADATA})",
                    "message": "an Offer carries at most 16 labels and 8 annotations of 1 KiB",
                    "messageExpression": (
                        "'an Offer carries at most 16 labels and 8 annotations of at most 1024"
                        " characters (from ' + variables.user + ')'"
                    ),
                    "reason": "Invalid",
                },
                {
                    "expression": f"variables.admin || variables.market || {NO_NEW_FINALIZERS}",
                    "message": "agents may not add finalizers to Offers",
                    "messageExpression": (
                        "'an Offer takes no finalizers from ' + variables.user"
                        " + ' (the receiver must be able to delete what it consumed)'"
                    ),
                    "reason": "Forbidden",
                },
            ],
        },
    )


def market_view_policy() -> dict[str, Any]:
    """Only the market writes an agent's market view ConfigMap."""
    return policy(
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
            "variables": list(IDENTITY_VARIABLES),
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


def admission_objects() -> list[dict[str, Any]]:
    """Policies and their bindings, in apply order (a binding names its policy)."""
    return [
        offer_sender_policy(),
        binding(OFFER_SENDER_POLICY),
        market_view_policy(),
        binding(MARKET_VIEW_POLICY),
        *pod_admission_objects(),
        fence_policy(),
        fence_binding(),
    ]
