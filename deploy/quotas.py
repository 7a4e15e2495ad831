"""Per-agent ResourceQuotas: what one agent can store on the host is bounded, by namespace.

Why: every object an agent posts lives in the etcd that all planes share, on tmpfs (RAM). Schema
limits (`crds.py`) bound each Offer's size; these bound how many. An agent's home namespace holds
its proposals to the market (its outbox; auction bids travel in its Negotiator status) and its
pods; its inbox holds what peers sent it. A quota per namespace therefore bounds each agent
separately: a flood fills the flooder's own namespace (its next message is refused with 403
until the market consumes the queue) and no one else's.

ResourceQuota is enforced by the apiserver's admission (a create over the limit is a **403**
`exceeded quota`), with usage kept by kube-controller-manager's resourcequota controller, which
the local host plane runs for this reason (`deploy/cluster/host_plane.py`). Until that controller
has computed a new quota's usage, creates in its namespace are refused (fail closed).
"""

from __future__ import annotations

from typing import Any

from gpuparley.deploy.crds import GROUP
from gpuparley.deploy.objects import AGENT_LABEL, agent_namespace

QUOTA_NAME = "gpuparley-agent"
OFFERS = f"count/offers.{GROUP}"
DEFAULT_OFFERS = 16  # a negotiator keeps at most one unconsumed message per sub-step
DEFAULT_PODS = 256  # host copies of leased pods (a job's gang at most) plus waiting ones


def quota(namespace: str, agent: str, hard: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace,
            "labels": {AGENT_LABEL: agent_namespace(agent)},
        },
        "spec": {"hard": hard},
    }


def agent_quotas(
    agent: str,
    home: str,
    inbox: str,
    offers: int = DEFAULT_OFFERS,
    pods: int = DEFAULT_PODS,
) -> list[dict[str, Any]]:
    """The quota of an agent's home namespace (its bids, pods, leader-election leases) and of
    its inbox (what peers may queue for it)."""
    return [
        quota(
            home,
            agent,
            {
                OFFERS: str(offers),
                "pods": str(pods),
                "count/leases.coordination.k8s.io": "8",
                # One kind of object served by two API groups, counted per group.
                "count/events": "256",
                "count/events.events.k8s.io": "256",
            },
        ),
        quota(inbox, agent, {OFFERS: str(offers)}),
    ]
