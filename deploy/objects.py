"""Messages <-> custom-resource objects, and the one naming rule for namespaces.

The negotiator and the market both build their objects here, so labels, names and namespaces
agree with the RBAC in `deploy/rbac.py` (which is what makes an inbox an inbox).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from gpuparley.deploy.crds import API_VERSION
from gpuparley.envs.market import messages

LABEL_PREFIX = "gpuparley.io"
SENDER_LABEL = f"{LABEL_PREFIX}/sender"
RECEIVER_LABEL = f"{LABEL_PREFIX}/receiver"
KIND_LABEL = f"{LABEL_PREFIX}/message"
AGENT_LABEL = f"{LABEL_PREFIX}/agent"
JOB_LABEL = f"{LABEL_PREFIX}/job"  # pod-group: every pod of one job (a gang) carries it
LEASE_LABEL = f"{LABEL_PREFIX}/lease"  # on a synced host pod: the GPULease it runs under
# On a released GPULease: out of the lease-fit policy's parameters (`admission_pods.py`), which
# are evaluated for every pod write in the namespace, so that cost follows the leases an agent
# holds, not every lease it ever held.
RELEASED_LABEL = f"{LABEL_PREFIX}/released"
# On a GPULease and on every host pod that names it: the lease's shard, the last character of
# its name (a hex digit of a hash, `object_name`). The lease-fit policy has one binding per
# shard, each taking only its shard's leases as parameters, so a pod write is checked against
# about 1/16 of its agent's live leases, not all of them (`admission_pods.py`).
LEASE_SHARD_LABEL = f"{LABEL_PREFIX}/lease-shard"
LEASE_SHARDS = "0123456789abcdef"
# Who binds a pod (its `spec.schedulerName`; kube-scheduler leaves pods naming another alone):
# in an agent's own plane its negotiator, once the job's lease is placed; on the host the market,
# once every pod of the lease exists and fits it. A pod naming either waits unbound until then.
AGENT_SCHEDULER = "gpuparley"
MARKET_SCHEDULER = "gpuparley-market"

# A name an agent may give a namespace or an object: a DNS label short enough that its inbox,
# `<name>-inbox`, is one too (63 characters at most).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,55}[a-z0-9])?")
DNS_LABEL_RULE = "a-z, 0-9 and '-', at most 57 characters"  # `DNS_LABEL` in words, for errors

MARKET_NAMESPACE = "gpuparley-system"
VIEW_CONFIGMAP = "gpuparley-market-view"  # in each agent's home namespace, written by the market
VIEW_KEY = "view.json"  # its data key: {"epoch", "substep", "term_epochs", "view"}


def agent_name(agent: str) -> str:
    """The bare agent name (`alpha`), whatever form it was given in (`agent-alpha`)."""
    return agent.removeprefix("agent-")


def agent_namespace(agent: str) -> str:
    """Home namespace of an agent; also its user on the local host plane and the name of its
    own local plane (`deploy/cluster/`)."""
    return f"agent-{agent_name(agent)}"


def inbox_namespace(agent: str) -> str:
    """Where other agents drop messages for `agent` (create-only for them)."""
    if agent == messages.MARKET:
        raise ValueError("the market has no inbox: bids wait in their sender's home namespace")
    return f"{agent_namespace(agent)}-inbox"


def outbox_namespace(
    message: messages.Bid
    | messages.Offer
    | messages.CounterOffer
    | messages.Accept
    | messages.Reject,
) -> str:
    """Where a message waits for its receiver: a bid to the market in its sender's own home
    namespace (so the sender's Offer quota bounds what it can post, and one agent's flood cannot
    fill a namespace other agents need), anything else in the receiver's inbox."""
    if message.receiver == messages.MARKET:
        return agent_namespace(message.sender)
    return inbox_namespace(message.receiver)


def object_name(message_id: str, kind: str) -> str:
    """A DNS-1123 object name for a message id (ids are free text up to 128 chars)."""
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:20]
    return f"{kind.lower()}-{digest}"


def lease_shard(lease_object: str) -> str:
    """The shard of a GPULease (its `LEASE_SHARD_LABEL`): the last character of its name."""
    return lease_object[-1:]


def offer_object(
    message: messages.Bid
    | messages.Offer
    | messages.CounterOffer
    | messages.Accept
    | messages.Reject,
    namespace: str | None = None,
) -> dict[str, Any]:
    """An `Offer` custom resource carrying `message`, where its receiver reads it
    (`outbox_namespace`)."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Offer",
        "metadata": {
            "name": object_name(message.id, message.kind),
            "namespace": namespace or outbox_namespace(message),
            "labels": {
                SENDER_LABEL: message.sender,
                RECEIVER_LABEL: message.receiver,
                KIND_LABEL: message.kind,
            },
        },
        "spec": message.model_dump(mode="json"),
    }


def gpulease_object(lease: messages.Lease, grant: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `GPULease` custom resource in the holder's namespace (written by the market only), with
    the `grant` its pods must stay inside (`lease_grant.py`) beside the message."""
    obj = {
        "apiVersion": API_VERSION,
        "kind": "GPULease",
        "metadata": {
            "name": object_name(lease.lease_id, "lease"),
            "namespace": agent_namespace(lease.holder),
            "labels": gpulease_labels(lease),
        },
        "spec": lease.model_dump(mode="json"),
    }
    if grant is not None:
        obj["grant"] = grant
    return obj


def gpulease_labels(lease: messages.Lease) -> dict[str, str]:
    """The labels a `GPULease` carries from its create on: holder, lender and the shard that
    routes it to one lease-fit binding (`admission_pods.lease_fit_binding`)."""
    return {
        f"{LABEL_PREFIX}/holder": lease.holder,
        f"{LABEL_PREFIX}/lender": lease.lender,
        LEASE_SHARD_LABEL: lease_shard(object_name(lease.lease_id, "lease")),
    }


# The phases of a GPULease on the host. A lease ends in two: `status.ending` (its pods may no
# longer run: the holder stops syncing them, the market deletes them), then, once they are gone,
# `status.release`. Both hold the market's `Release` message.
ACTIVE, ENDING, RELEASED = "active", "ending", "released"


def lease_phase(obj: dict[str, Any]) -> str:
    """ACTIVE, ENDING or RELEASED: what a `GPULease` object's status says."""
    status = obj.get("status") or {}
    return RELEASED if status.get("release") else ENDING if status.get("ending") else ACTIVE


def release_epoch(obj: dict[str, Any]) -> int:
    """The market epoch a `GPULease` object's release was made at (0 while it has none)."""
    return int(((obj.get("status") or {}).get("release") or {}).get("epoch") or 0)


def message_from_object(obj: dict[str, Any]) -> Any:
    """The typed message in an `Offer` or `GPULease` object (MessageError if it does not parse)."""
    return messages.parse_message(obj.get("spec", {}))
