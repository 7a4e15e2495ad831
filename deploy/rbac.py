"""Host-cluster RBAC for the market, as Python data (rendered to YAML by `deploy/render.py`).

RBAC cannot filter by label, so "read only what is addressed to you" is made a *namespace*
property: each agent `a` owns namespace `agent-a` (its negotiator, config, market view, leases and
pods, and its bids to the market, which wait there until the market consumes them) and an inbox
namespace `agent-a-inbox`; the market owns `gpuparley-system`. In any inbox, agents may only
`create` offers (no get/list/watch, update or delete: a sender cannot read, change or withdraw
what others sent); the inbox owner may read and delete (consume) them. The market reads and
deletes offers everywhere. Bids live in their sender's namespace rather than in one shared market
inbox so that each agent's Offer quota (`quotas.py`) bounds its own bids: a flood fills only the
flooder's namespace. `GPULease` objects live in the holder's
namespace; only the market identity may write them (and their status), the holder may only read
them. That the sender named in an offer is the identity creating it is enforced by admission
(`deploy/admission.py`), not RBAC.

Identities: on a real cluster the negotiator runs as ServiceAccount `negotiator` in `agent-a`; on
the local rig (`deploy/cluster/host_plane.py`) the agent is the static-token user `agent-a` in group
`gpuparley:agents`. Both are bound. The market is user `gpuparley:market` or ServiceAccount
`market` in `gpuparley-system`.

Objects come in two sorts: *shared* ones (ClusterRoles, the market's bindings and namespaces,
identical in every agent's bundle, so applying several bundles is safe) and *per-agent* ones
(names or namespaces carry the agent, so bundles never overwrite each other's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpuparley.deploy.crds import GROUP
from gpuparley.deploy.objects import (
    AGENT_LABEL,
    MARKET_NAMESPACE,
    VIEW_CONFIGMAP,
    agent_name,
    agent_namespace,
    inbox_namespace,
)
from gpuparley.envs.market import messages

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_API = f"{RBAC_GROUP}/v1"
COORDINATION_GROUP = "coordination.k8s.io"
EVENTS_GROUP = "events.k8s.io"
AGENTS_GROUP = "gpuparley:agents"
MARKET_USER = "gpuparley:market"
MARKET_SERVICE_ACCOUNT = "market"
# A user extra field naming the requesting market replica: each elected replica impersonates
# its own identity with it, so the fence policy can refuse a deposed one (`market_fence.py`).
MARKET_REPLICA_EXTRA = "gpuparley-replica"
NEGOTIATOR_SERVICE_ACCOUNT = "negotiator"
ROLE_LABEL = "gpuparley.io/role"

SENDER_ROLE = "gpuparley-offer-sender"
INBOX_OWNER_ROLE = "gpuparley-inbox-owner"
NEGOTIATOR_ROLE = "gpuparley-negotiator"
NODE_READER_ROLE = "gpuparley-node-reader"
MARKET_ROLE = "gpuparley-market"  # cluster-wide: leases, offers; read negotiators, nodes, pods
MARKET_AGENT_ROLE = "gpuparley-market-agent"  # in each agent home: view ConfigMap, pods, events
MARKET_HOME_ROLE = "gpuparley-market-home"  # in gpuparley-system: its status ConfigMap, events
READ = ["get", "list", "watch"]
WRITE = ["create", "update", "patch", "delete"]


def _rule(
    resources: list[str],
    verbs: list[str],
    group: str = GROUP,
    names: list[str] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"apiGroups": [group], "resources": resources, "verbs": verbs}
    if names:
        rule["resourceNames"] = names
    return rule


def _events_create() -> list[dict[str, Any]]:
    # One kind of object served by two API groups: core/v1 (the Python client's
    # `create_namespaced_event`) and events.k8s.io/v1 (client-go's current recorder).
    return [_rule(["events"], ["create"], group=""), _rule(["events"], ["create"], EVENTS_GROUP)]


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def cluster_roles() -> list[dict[str, Any]]:
    """The shared roles (cluster-scoped, identical in every agent's bundle, so applying them again
    is a no-op). They grant nothing until bound."""
    return [
        _cluster_role(SENDER_ROLE, [_rule(["offers"], ["create"])]),
        _cluster_role(INBOX_OWNER_ROLE, [_rule(["offers"], [*READ, "delete", "deletecollection"])]),
        _cluster_role(
            NEGOTIATOR_ROLE,
            [
                # Its own outbox: its bids wait here for the market (which consumes them), and
                # a record of what it sent to peers (the copy in a peer's inbox is create-only
                # for it).
                _rule(["offers"], [*READ, *WRITE]),
                _rule(["gpuleases", "negotiators"], READ),
                # Which market sub-step it has answered.
                _rule(["negotiators/status"], ["get", "update", "patch"]),
                # Its config and the market's private view of it: read only.
                _rule(["configmaps"], READ, group=""),
                # Leased pods: copies of its workload pinned to the lease's node.
                _rule(["pods"], [*READ, *WRITE], group=""),
                _rule(["pods/status"], ["get"], group=""),
                # Leader election among replicas (no delete: an expired lease is taken over).
                _rule(["leases"], [*READ, "create", "update", "patch"], group=COORDINATION_GROUP),
                *_events_create(),
            ],
        ),
        _cluster_role(NODE_READER_ROLE, [_rule(["nodes"], READ, group="")]),
        _cluster_role(
            MARKET_ROLE,
            [
                _rule(["gpuleases", "gpuleases/status"], [*READ, *WRITE]),
                _rule(["offers"], [*READ, "create", "delete"]),
                _rule(["negotiators", "negotiators/status"], READ),
                _rule(["nodes"], READ, group=""),
                # Which pods run under which lease, on which node (a label-selected list across
                # agent namespaces); writing pods is granted in agent namespaces only.
                _rule(["pods"], READ, group=""),
                # Name itself as a replica: impersonate its own user with the replica extra.
                _rule(["users"], ["impersonate"], group="", names=[MARKET_USER]),
                _rule(
                    [f"userextras/{MARKET_REPLICA_EXTRA}"],
                    ["impersonate"],
                    group="authentication.k8s.io",
                ),
            ],
        ),
        _cluster_role(
            MARKET_AGENT_ROLE,
            [
                # The view ConfigMap. RBAC cannot restrict create/list/watch by name; it can
                # restrict update/patch, so the market cannot rewrite the agent's own config.
                _rule(["configmaps"], [*READ, "create"], group=""),
                _rule(["configmaps"], ["update", "patch"], group="", names=[VIEW_CONFIGMAP]),
                # Evict pods not covered by a lease; bind the pods of a lease that is active
                # (agents' pods name the market as their scheduler).
                _rule(["pods"], [*READ, "delete"], group=""),
                _rule(["pods/binding"], ["create"], group=""),
                *_events_create(),
            ],
        ),
        _cluster_role(
            MARKET_HOME_ROLE,
            [
                # The market's public status ConfigMap.
                _rule(["configmaps"], [*READ, "create", "update", "patch"], group=""),
                # Leader election among market replicas (the Lease gpuparley-market).
                _rule(["leases"], [*READ, "create", "update", "patch"], group=COORDINATION_GROUP),
                # Its ServiceAccount impersonates itself with the replica extra (as the user).
                _rule(
                    ["serviceaccounts"], ["impersonate"], group="", names=[MARKET_SERVICE_ACCOUNT]
                ),
                *_events_create(),
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


def market_subjects() -> list[dict[str, Any]]:
    """Who *is* the market (rig user and in-cluster ServiceAccount)."""
    return [_subject_user(MARKET_USER), _subject_sa(MARKET_SERVICE_ACCOUNT, MARKET_NAMESPACE)]


def _cluster_role_binding(name: str, role: str, subjects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects,
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


def market_binding() -> dict[str, Any]:
    """The market identity may manage leases, read/post/consume offers, and read negotiators
    and nodes, in every namespace."""
    return _cluster_role_binding(MARKET_ROLE, MARKET_ROLE, market_subjects())


def cluster_bindings() -> list[dict[str, Any]]:
    """Shared cluster-wide bindings: the market's, and node read access for every rig agent
    (each agent's ServiceAccount gets its own binding in `agent_rbac`)."""
    return [
        market_binding(),
        _cluster_role_binding(NODE_READER_ROLE, NODE_READER_ROLE, [_subject_group(AGENTS_GROUP)]),
    ]


def namespace(name: str, role: str, agent: str | None = None) -> dict[str, Any]:
    labels = {AGENT_LABEL: agent_namespace(agent)} if agent else {}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {**labels, ROLE_LABEL: role}},
    }


def market_rbac() -> list[dict[str, Any]]:
    """The market's namespace, ServiceAccount and its binding there (shared: identical in every
    agent's bundle)."""
    return [
        namespace(MARKET_NAMESPACE, "market"),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": MARKET_SERVICE_ACCOUNT, "namespace": MARKET_NAMESPACE},
        },
        _role_binding(MARKET_ROLE, MARKET_NAMESPACE, MARKET_HOME_ROLE, market_subjects()),
    ]


def agent_namespaces(agent: str, home: str | None = None) -> tuple[str, str]:
    """An agent's (home, inbox) namespaces: `agent-<a>` and `agent-<a>-inbox`, or `<home>` and
    `<home>-inbox` when the home namespace is given. The name `market` is reserved."""
    if agent_name(agent) == messages.MARKET:
        raise ValueError(f"agent name {messages.MARKET!r} is reserved for the market")
    ns = home or agent_namespace(agent)
    return ns, (f"{ns}-inbox" if home else inbox_namespace(agent_name(agent)))


def agent_rbac(
    agent: str, peers: Sequence[str] = (), home: str | None = None
) -> list[dict[str, Any]]:
    """Namespaces, ServiceAccount and bindings of one agent (all per-agent: no two bundles write
    the same object).

    Senders into the inbox are group `gpuparley:agents` (every rig agent) plus the `negotiator`
    ServiceAccount of each of `peers` (ServiceAccounts cannot join a custom group, so on a real
    cluster the peers must be listed). `home` overrides the namespace `agent-<agent>`; the inbox
    is then `<home>-inbox` (senders must be told: `objects.offer_object(..., namespace=...)`).
    The name `market` is reserved: it is the receiver of bids."""
    name = agent_name(agent)
    if name == messages.MARKET:
        raise ValueError(f"agent name {name!r} is reserved for the market")
    ns, inbox = agent_namespaces(agent, home)
    me = agent_subjects(agent, ns)
    my_sa = _subject_sa(NEGOTIATOR_SERVICE_ACCOUNT, ns)
    senders = [_subject_group(AGENTS_GROUP)] + [
        _subject_sa(NEGOTIATOR_SERVICE_ACCOUNT, agent_namespace(p))
        for p in sorted({agent_name(p) for p in peers})
    ]
    return [
        namespace(ns, "agent", agent),
        namespace(inbox, "inbox", agent),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NEGOTIATOR_SERVICE_ACCOUNT, "namespace": ns},
        },
        _role_binding(NEGOTIATOR_ROLE, ns, NEGOTIATOR_ROLE, me),
        _role_binding(MARKET_ROLE, ns, MARKET_AGENT_ROLE, market_subjects()),
        _role_binding(INBOX_OWNER_ROLE, inbox, INBOX_OWNER_ROLE, me),
        _role_binding(SENDER_ROLE, inbox, SENDER_ROLE, senders),
        _cluster_role_binding(f"{NODE_READER_ROLE}-{name}", NODE_READER_ROLE, [my_sa]),
    ]
