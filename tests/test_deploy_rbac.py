"""The RBAC of the rendered bundles, evaluated as the apiserver's RBAC authorizer would (no
cluster): who may do what where -- agents, their ServiceAccounts and the market -- and what no
one may (wildcards, impersonation beyond the market's own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from test_deploy_render import BUNDLES

from gpuparley.deploy import objects, rbac
from gpuparley.deploy.render import render_objects


@dataclass(frozen=True)
class Who:
    user: str
    groups: tuple[str, ...] = ()


ALPHA = Who("agent-alpha", (rbac.AGENTS_GROUP,))
ALPHA_SA = Who("system:serviceaccount:agent-alpha:negotiator")
MARKET = Who(rbac.MARKET_USER)
MARKET_SA = Who("system:serviceaccount:gpuparley-system:market")
CLUSTER = None  # cluster-scoped request (nodes)


def _bound(subject: dict[str, Any], who: Who) -> bool:
    if subject["kind"] == "User":
        return subject["name"] == who.user
    if subject["kind"] == "Group":
        return subject["name"] in who.groups
    return who.user == f"system:serviceaccount:{subject['namespace']}:{subject['name']}"


def _allowed(
    docs: list[dict[str, Any]],
    who: Who,
    verb: str,
    resource: str,
    namespace: str | None,
    name: str = "",
) -> bool:
    """RBAC's decision on the rendered objects alone (no rig Role, no admission)."""
    group, _, plural = resource.rpartition(".")
    plural = plural.replace(":", "/")  # "pods:status" -> pods/status
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    for binding in docs:
        if binding["kind"] == "RoleBinding":
            if binding["metadata"]["namespace"] != namespace:
                continue
        elif binding["kind"] != "ClusterRoleBinding":
            continue
        if not any(_bound(s, who) for s in binding["subjects"]):
            continue
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            if (
                group in rule["apiGroups"]
                and plural in rule["resources"]
                and verb in rule["verbs"]
                and (not rule.get("resourceNames") or name in rule["resourceNames"])
            ):
                return True
    return False


G = "gpuparley.io."
HOME, BETA_HOME = "agent-alpha", "agent-beta"
INBOX, BETA_INBOX = "agent-alpha-inbox", "agent-beta-inbox"
# (identities, verb, resource, namespace, allowed); a resource is "[group.]plural[:sub]".
MATRIX = [
    # Bids wait in the sender's home (its outbox): only it writes there; the market consumes.
    ((ALPHA, ALPHA_SA), "create", G + "offers", HOME, True),
    ((ALPHA, ALPHA_SA), "create", G + "offers", BETA_HOME, False),
    ((ALPHA, ALPHA_SA), "list", G + "offers", BETA_HOME, False),
    ((MARKET, MARKET_SA), "list", G + "offers", CLUSTER, True),
    ((MARKET, MARKET_SA), "delete", G + "offers", BETA_HOME, True),
    ((ALPHA, ALPHA_SA), "update", "resourcequotas", HOME, False),
    ((ALPHA, ALPHA_SA), "delete", "resourcequotas", HOME, False),
    # Agent inboxes: peers create only (alpha's SA is beta's peer? no: only beta's bundle says).
    ((ALPHA,), "create", G + "offers", BETA_INBOX, True),
    ((ALPHA_SA,), "create", G + "offers", BETA_INBOX, False),
    ((ALPHA, ALPHA_SA), "list", G + "offers", BETA_INBOX, False),
    ((ALPHA, ALPHA_SA), "list", G + "offers", INBOX, True),
    ((ALPHA, ALPHA_SA), "delete", G + "offers", INBOX, True),
    ((ALPHA, ALPHA_SA), "update", G + "offers", INBOX, False),
    # Home: leases read-only, status of its Negotiator, pods, the view read-only.
    ((ALPHA, ALPHA_SA), "get", G + "gpuleases", HOME, True),
    ((ALPHA, ALPHA_SA), "update", G + "gpuleases:status", HOME, False),
    ((ALPHA, ALPHA_SA), "patch", G + "negotiators:status", HOME, True),
    ((ALPHA, ALPHA_SA), "patch", G + "negotiators", HOME, False),
    ((ALPHA, ALPHA_SA), "get", "configmaps", HOME, True),
    ((ALPHA, ALPHA_SA), "create", "configmaps", HOME, False),
    ((ALPHA, ALPHA_SA), "patch", "configmaps", HOME, False),
    ((ALPHA, ALPHA_SA), "create", "pods", HOME, True),
    ((ALPHA, ALPHA_SA), "delete", "pods", HOME, True),
    ((ALPHA, ALPHA_SA), "get", "pods:status", HOME, True),
    ((ALPHA, ALPHA_SA), "update", "pods:status", HOME, False),
    ((ALPHA, ALPHA_SA), "create", "pods:binding", HOME, False),  # only the market binds
    ((ALPHA, ALPHA_SA), "create", "coordination.k8s.io.leases", HOME, True),
    ((ALPHA, ALPHA_SA), "delete", "coordination.k8s.io.leases", HOME, False),
    ((ALPHA, ALPHA_SA), "create", "events", HOME, True),
    ((ALPHA, ALPHA_SA), "create", "secrets", HOME, False),
    ((ALPHA, ALPHA_SA), "get", "secrets", HOME, False),
    # Nothing in beta's home; nodes read-only.
    ((ALPHA, ALPHA_SA), "list", "pods", BETA_HOME, False),
    ((ALPHA, ALPHA_SA), "create", "pods", BETA_HOME, False),
    ((ALPHA, ALPHA_SA), "patch", G + "negotiators:status", BETA_HOME, False),
    ((ALPHA, ALPHA_SA), "get", "configmaps", BETA_HOME, False),
    ((ALPHA, ALPHA_SA), "list", "nodes", CLUSTER, True),
    ((ALPHA, ALPHA_SA), "patch", "nodes", CLUSTER, False),
    # The market: leases, views, evictions, statuses, nodes.
    ((MARKET, MARKET_SA), "create", G + "gpuleases", HOME, True),
    ((MARKET, MARKET_SA), "update", G + "gpuleases:status", BETA_HOME, True),
    ((MARKET, MARKET_SA), "list", G + "negotiators", CLUSTER, True),
    ((MARKET, MARKET_SA), "get", G + "negotiators:status", HOME, True),
    ((MARKET, MARKET_SA), "patch", G + "negotiators:status", HOME, False),
    ((MARKET, MARKET_SA), "create", "configmaps", HOME, True),
    ((MARKET, MARKET_SA), "create", "configmaps", "default", False),
    ((MARKET, MARKET_SA), "delete", "configmaps", HOME, False),
    ((MARKET, MARKET_SA), "list", "pods", BETA_HOME, True),
    ((MARKET, MARKET_SA), "list", "pods", CLUSTER, True),  # by lease label, all namespaces
    ((MARKET, MARKET_SA), "delete", "pods", BETA_HOME, True),
    ((MARKET, MARKET_SA), "create", "pods:binding", BETA_HOME, True),  # binds leased pods
    ((MARKET, MARKET_SA), "create", "pods:binding", "kube-system", False),
    ((MARKET, MARKET_SA), "patch", "pods", BETA_HOME, False),
    ((MARKET, MARKET_SA), "create", "pods", BETA_HOME, False),
    ((MARKET, MARKET_SA), "delete", "pods", "kube-system", False),
    ((MARKET, MARKET_SA), "patch", "pods", "kube-system", False),
    ((MARKET, MARKET_SA), "patch", "configmaps", objects.MARKET_NAMESPACE, True),  # its status
    ((MARKET, MARKET_SA), "delete", "configmaps", objects.MARKET_NAMESPACE, False),
    ((ALPHA, ALPHA_SA), "get", "configmaps", objects.MARKET_NAMESPACE, False),
    ((MARKET, MARKET_SA), "create", "events", HOME, True),
    ((MARKET, MARKET_SA), "list", "nodes", CLUSTER, True),
    ((MARKET, MARKET_SA), "get", "secrets", HOME, False),
]


@pytest.mark.parametrize(("whos", "verb", "resource", "namespace", "want"), MATRIX)
def test_permission_matrix(
    whos: tuple[Who, ...], verb: str, resource: str, namespace: str | None, want: bool
) -> None:
    docs = render_objects(BUNDLES[0]) + render_objects(BUNDLES[1])
    for who in whos:
        assert _allowed(docs, who, verb, resource, namespace) is want, who


def test_only_the_market_may_name_itself_a_market_replica() -> None:
    """The fence (`market_fence.py`) trusts the replica extra: only the market's identities may
    impersonate, and only themselves with that extra -- no other user, ServiceAccount or
    group, and no agent at all."""
    docs = render_objects(BUNDLES[0]) + render_objects(BUNDLES[1])
    system = objects.MARKET_NAMESPACE
    extra = f"authentication.k8s.io.userextras:{rbac.MARKET_REPLICA_EXTRA}"
    for who in (MARKET, MARKET_SA):
        assert _allowed(docs, who, "impersonate", extra, system)
        assert not _allowed(docs, who, "impersonate", "authentication.k8s.io.userextras:x", system)
        assert _allowed(docs, who, "impersonate", "users", CLUSTER, rbac.MARKET_USER)
        for user in ("agent-alpha", "admin", "system:kube-controller-manager"):
            assert not _allowed(docs, who, "impersonate", "users", CLUSTER, user)
        assert not _allowed(docs, who, "impersonate", "groups", CLUSTER, "system:masters")
    market_sa = rbac.MARKET_SERVICE_ACCOUNT
    assert _allowed(docs, MARKET_SA, "impersonate", "serviceaccounts", system, market_sa)
    assert not _allowed(docs, MARKET_SA, "impersonate", "serviceaccounts", HOME, market_sa)
    assert not _allowed(docs, MARKET_SA, "impersonate", "serviceaccounts", HOME, "negotiator")
    for who in (ALPHA, ALPHA_SA):
        assert not _allowed(docs, who, "impersonate", extra, HOME)
        assert not _allowed(docs, who, "impersonate", "users", CLUSTER, rbac.MARKET_USER)
        assert not _allowed(docs, who, "impersonate", "serviceaccounts", system, market_sa)


def test_market_updates_only_the_view_configmap() -> None:
    docs = render_objects(BUNDLES[0])
    view, config = objects.VIEW_CONFIGMAP, "gpuparley-negotiator"
    assert _allowed(docs, MARKET, "patch", "configmaps", HOME, view)
    assert not _allowed(docs, MARKET, "patch", "configmaps", HOME, config)
    assert not _allowed(docs, MARKET, "update", "configmaps", HOME, config)


def test_no_wildcards() -> None:
    for role in rbac.cluster_roles():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role
