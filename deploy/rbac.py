"""Host-cluster RBAC for the market, as Python data (rendered to YAML by `deploy/render.py`).

RBAC cannot filter by label, so "read only what is addressed to you" is made a *namespace*
property: each agent `a` owns namespace `agent-a` (its negotiator, config and leases) and an inbox
namespace `agent-a-inbox`. In any inbox, agents may only `create` offers (no get/list/watch,
update or delete: a sender cannot read, change or withdraw what others sent); the inbox owner may
read and delete (consume) them. `GPULease` objects live in the holder's namespace; only the market
identity may write them (and their status), the holder may only read them.

Identities: on a real cluster the negotiator runs as ServiceAccount `negotiator` in `agent-a`; on
the local rig (`deploy/cluster/planes.py`) the agent is the static-token user `agent-a` in group
`gpuparley:agents`. Both are bound. The market is user `gpuparley:market` or ServiceAccount
`market` in `gpuparley-system`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpuparley.deploy.crds import GROUP
from gpuparley.deploy.objects import AGENT_LABEL, agent_name, agent_namespace, inbox_namespace

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API = f"{RBAC_GROUP}/v1"
AGENTS_GROUP = "gpuparley:agents"
MARKET_USER = "gpuparley:market"
MARKET_NAMESPACE = "gpuparley-system"
MARKET_SERVICE_ACCOUNT = "market"
NEGOTIATOR_SERVICE_ACCOUNT = "negotiator"

SENDER_ROLE = "gpuparley-offer-sender"
INBOX_OWNER_ROLE = "gpuparley-inbox-owner"
NEGOTIATOR_ROLE = "gpuparley-negotiator"
MARKET_ROLE = "gpuparley-market"
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]


def _rule(resources: list[str], verbs: list[str], group: str = GROUP) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def cluster_roles() -> list[dict[str, Any]]:
    """The shared roles (cluster-scoped, identical in every agent's bundle, so applying them again
    is a no-op). They grant nothing until bound in a namespace."""
    return [
        _cluster_role(SENDER_ROLE, [_rule(["offers"], ["create"])]),
        _cluster_role(INBOX_OWNER_ROLE, [_rule(["offers"], [*READ, "delete", "deletecollection"])]),
        _cluster_role(
            NEGOTIATOR_ROLE,
            [
                # Its own outbox: a record of what it sent (the copy in the receiver's inbox is
                # create-only for it).
                _rule(["offers"], [*READ, *WRITE]),
                _rule(["gpuleases", "negotiators"], READ),
                _rule(["negotiators/status"], ["get", "update", "patch"]),
                _rule(["configmaps"], READ, group=""),
            ],
        ),
        _cluster_role(
            MARKET_ROLE,
            [
                _rule(["gpuleases", "gpuleases/status"], [*READ, *WRITE]),
                _rule(["offers"], [*READ, "create", "delete"]),
                _rule(["negotiators"], READ),
            ],
        ),
    ]


def _subject_user(name: str) -> dict[str, Any]:
    return {"apiGroup": RBAC_GROUP, "kind": "User", "name": name}


def _subject_group(name: str) -> dict[str, Any]:
    return {"apiGroup": RBAC_GROUP, "kind": "Group", "name": name}


def _subject_sa(name: str, namespace: str) -> dict[str, Any]:
    return {"kind": "ServiceAccount", "name": name, "namespace": namespace}


def agent_subjects(agent: str, home: str | None = None) -> list[dict[str, Any]]:
    """Who *is* agent `agent` on the host cluster (rig user and in-cluster ServiceAccount)."""
    user = agent_namespace(agent)
    return [_subject_user(user), _subject_sa(NEGOTIATOR_SERVICE_ACCOUNT, home or user)]


def market_binding() -> dict[str, Any]:
    """The market identity may manage leases and read/post offers everywhere."""
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": MARKET_ROLE},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": MARKET_ROLE},
        "subjects": [
            _subject_user(MARKET_USER),
            _subject_sa(MARKET_SERVICE_ACCOUNT, MARKET_NAMESPACE),
        ],
    }


def _role_binding(
    name: str, namespace: str, role: str, subjects: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    }


def namespace(name: str, agent: str, role: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {AGENT_LABEL: agent_namespace(agent), "gpuparley.io/role": role},
        },
    }


def agent_rbac(
    agent: str, peers: Sequence[str] = (), home: str | None = None
) -> list[dict[str, Any]]:
    """Namespaces, ServiceAccount and RoleBindings of one agent.

    Senders into the inbox are group `gpuparley:agents` (every rig agent) plus the `negotiator`
    ServiceAccount of each of `peers` (ServiceAccounts cannot join a custom group, so on a real
    cluster the peers must be listed). `home` overrides the namespace `agent-<agent>`; the inbox
    is then `<home>-inbox` (senders must be told: `objects.offer_object(..., namespace=...)`)."""
    ns = home or agent_namespace(agent)
    inbox = f"{ns}-inbox" if home else inbox_namespace(agent)
    me = agent_subjects(agent, ns)
    senders = [_subject_group(AGENTS_GROUP)] + [
        _subject_sa(NEGOTIATOR_SERVICE_ACCOUNT, agent_namespace(p))
        for p in sorted({agent_name(p) for p in peers})
    ]
    return [
        namespace(ns, agent, "agent"),
        namespace(inbox, agent, "inbox"),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NEGOTIATOR_SERVICE_ACCOUNT, "namespace": ns},
        },
        _role_binding(NEGOTIATOR_ROLE, ns, NEGOTIATOR_ROLE, me),
        _role_binding(INBOX_OWNER_ROLE, inbox, INBOX_OWNER_ROLE, me),
        _role_binding(SENDER_ROLE, inbox, SENDER_ROLE, senders),
    ]
