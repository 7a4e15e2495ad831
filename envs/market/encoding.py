"""The one definition of what a negotiator sees and can do (observation and action encoding).

The PettingZoo environment, the scripted negotiators, training, the ONNX export and the
in-cluster negotiator all import this module, so a policy acts the same in simulation and in a
cluster. Any change to the layout below must bump `SPEC_VERSION`; `spec_hash()` fingerprints the
layout so that a checkpoint trained on another layout is refused when loaded.

Inputs are an `AgentView`: plain numbers about one agent's situation, built either from the
simulator (`envs.market.views`) or from real cluster state (`deploy`).

Actions (one `Discrete` space shared by every agent, so one policy can be shared)::

    0                         pass (no more bids/proposals this epoch)
    1 + j*L + l               bid for / propose job slot j at price level l
    1 + J*L                   accept the offer at the head of the inbox
    2 + J*L                   reject it
    3 + J*L + l               counter it at price level l

Prices are rents per epoch. A price level l scales an anchor: for a bid or proposal, what one
epoch of running is worth to the job's owner (truthful = level 1.0); for a counter by a lender,
the list-price rent of the demand; for a counter by the proposer, again its job's epoch worth.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SPEC_VERSION = "gpu_market_v0/1"
JOB_SLOTS = 4
PRICE_LEVELS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)
TRUTHFUL_LEVEL = PRICE_LEVELS.index(1.0)

PASS = 0
BID_BASE = 1
ACCEPT = 1 + JOB_SLOTS * len(PRICE_LEVELS)
REJECT = ACCEPT + 1
COUNTER_BASE = REJECT + 1
ACTION_COUNT = COUNTER_BASE + len(PRICE_LEVELS)

GPU_KINDS = ("none", "whole", "mig", "share")


@dataclass(frozen=True, slots=True)
class JobSlot:
    """One job the agent can act on now (pending, or running with a lease due for renewal)."""

    job: str
    gpus: float  # GPU-equivalents of the whole job
    gpu_kind: str
    pods: int
    epoch_value: float  # what one epoch of running is worth to the owner (credits)
    value_density: float  # value per GPU-hour / reference price per GPU-hour
    waited_hours: float
    slack_hours: float  # time left before the deadline (capped)
    renewal: bool
    fits_now: bool
    within_quota: bool


@dataclass(frozen=True, slots=True)
class InboxItem:
    """The offer or counter-offer awaiting this agent's answer."""

    message_id: str
    as_lender: bool  # True: someone proposes to borrow my quota; False: a counter to my offer
    price: float
    anchor: float  # list-price cost (lender) or my job's term value (proposer)
    gpus: float
    round: int
    max_rounds: int


@dataclass(frozen=True, slots=True)
class AgentView:
    """Everything one agent's policy may condition on, in plain units."""

    balance: float
    budget_per_epoch: float
    committed: float  # credits promised by this epoch's outstanding bids/offers
    reference_price: float  # list price per GPU-hour, cluster average
    last_price: float  # last clearing/agreement price per GPU-hour (0 if none yet)
    quota_gpus: float
    effective_quota_gpus: float
    used_gpus: float
    cluster_gpus: float
    free_whole_fraction: float
    free_mig_fraction: float
    free_share_fraction: float
    pending_jobs: int
    running_jobs: int
    leases_held: int
    leases_lent: int
    epoch_fraction: float  # sub-step within the epoch / max sub-steps
    mechanism: Literal["auction", "bargain"]
    slots: tuple[JobSlot, ...] = ()
    inbox: InboxItem | None = None
    passed: bool = False
    extras: dict[str, float] = field(default_factory=dict, compare=False)


GLOBAL_FEATURES = (
    "balance/budget",
    "committed/budget",
    "last_price/reference",
    "quota/cluster",
    "effective_quota/cluster",
    "used/effective_quota",
    "free_whole_fraction",
    "free_mig_fraction",
    "free_share_fraction",
    "log1p(pending)",
    "log1p(running)",
    "log1p(leases_held)",
    "log1p(leases_lent)",
    "epoch_fraction",
    "mechanism_is_bargain",
)
SLOT_FEATURES = (
    "present",
    "log1p(gpus)",
    *(f"kind_{k}" for k in GPU_KINDS),
    "log1p(pods)",
    "epoch_value/budget",
    "log1p(value_density)",
    "tanh(waited_hours)",
    "tanh(slack_hours)",
    "renewal",
    "fits_now",
    "within_quota",
)
INBOX_FEATURES = (
    "present",
    "as_lender",
    "price/anchor",
    "anchor/budget",
    "log1p(gpus)",
    "round/max_rounds",
)
OBSERVATION_BOUND = 10.0
"""Every feature lies in [-bound, bound], so the observation space is a bounded Box."""
OBSERVATION_SIZE = len(GLOBAL_FEATURES) + JOB_SLOTS * len(SLOT_FEATURES) + len(INBOX_FEATURES)


def spec() -> dict[str, object]:
    """The layout, as data: what `spec_hash` fingerprints and checkpoints record."""
    return {
        "version": SPEC_VERSION,
        "global": GLOBAL_FEATURES,
        "slot": SLOT_FEATURES,
        "slots": JOB_SLOTS,
        "inbox": INBOX_FEATURES,
        "levels": PRICE_LEVELS,
        "bound": OBSERVATION_BOUND,
        "actions": ACTION_COUNT,
    }


def spec_hash() -> str:
    return hashlib.sha256(json.dumps(spec(), sort_keys=True).encode()).hexdigest()[:16]


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def encode(view: AgentView) -> tuple[np.ndarray, np.ndarray]:
    """Observation vector (float32) and legal-action mask (int8) of one agent."""
    budget = max(view.budget_per_epoch, 1e-9)
    values = [
        min(view.balance / budget, 10.0),
        min(view.committed / budget, 10.0),
        min(_ratio(view.last_price, view.reference_price), 10.0),
        _ratio(view.quota_gpus, view.cluster_gpus),
        _ratio(view.effective_quota_gpus, view.cluster_gpus),
        min(_ratio(view.used_gpus, view.effective_quota_gpus), 10.0),
        view.free_whole_fraction,
        view.free_mig_fraction,
        view.free_share_fraction,
        _log(view.pending_jobs),
        _log(view.running_jobs),
        _log(view.leases_held),
        _log(view.leases_lent),
        view.epoch_fraction,
        float(view.mechanism == "bargain"),
    ]
    slots = view.slots[:JOB_SLOTS]
    for slot in slots:
        values += _slot_features(slot, budget)
    values += _EMPTY_SLOT * (JOB_SLOTS - len(slots))
    item = view.inbox
    if item is None:
        values += _EMPTY_INBOX
    else:
        values += (
            1.0,
            float(item.as_lender),
            min(_ratio(item.price, item.anchor), 10.0),
            min(item.anchor / budget, 10.0),
            _log(item.gpus),
            _ratio(item.round, item.max_rounds),
        )
    # every feature is bounded by construction: ratios capped at 10, log1p(x <= e^10), tanh
    return np.array(values, dtype=np.float32), action_mask(view)


@functools.lru_cache(maxsize=8192)
def _slot_features(slot: JobSlot, budget: float) -> tuple[float, ...]:
    """A slot's features; slots repeat across sub-steps, so they are computed once."""
    return (
        1.0,
        _log(slot.gpus),
        *_KIND_ONE_HOT[slot.gpu_kind],
        _log(slot.pods),
        min(slot.epoch_value / budget, 10.0),
        _log(max(slot.value_density, 0.0)),
        math.tanh(slot.waited_hours),
        math.tanh(slot.slack_hours),
        float(slot.renewal),
        float(slot.fits_now),
        float(slot.within_quota),
    )


def _log(x: float) -> float:
    return min(math.log1p(x), OBSERVATION_BOUND)


_KIND_ONE_HOT = {kind: tuple(float(k == kind) for k in GPU_KINDS) for kind in GPU_KINDS}
_EMPTY_SLOT = [0.0] * len(SLOT_FEATURES)
_EMPTY_INBOX = [0.0] * len(INBOX_FEATURES)


def action_mask(view: AgentView) -> np.ndarray:
    """Which actions are legal: answer the inbox first; never bid beyond the free balance."""
    mask = [0] * ACTION_COUNT
    free = view.balance - view.committed + 1e-9
    inbox = view.inbox
    if inbox is not None:
        mask[ACCEPT] = mask[REJECT] = 1
        if inbox.round < inbox.max_rounds:
            for level_index, level in enumerate(PRICE_LEVELS):
                if inbox.as_lender or level * inbox.anchor <= free:
                    mask[COUNTER_BASE + level_index] = 1
        if not inbox.as_lender and inbox.price > free:
            mask[ACCEPT] = 0  # a proposer may accept a counter only if it can pay for it
        return np.array(mask, dtype=np.int8)
    mask[PASS] = 1
    if not view.passed:
        for slot_index, slot in enumerate(view.slots[:JOB_SLOTS]):
            base = BID_BASE + slot_index * len(PRICE_LEVELS)
            for level_index, level in enumerate(PRICE_LEVELS):
                if level * slot.epoch_value <= free:
                    mask[base + level_index] = 1
    return np.array(mask, dtype=np.int8)


@dataclass(frozen=True, slots=True)
class Decision:
    """A decoded action: what to do, about which job or message, at what price."""

    kind: Literal["pass", "bid", "accept", "reject", "counter"]
    job: str | None = None
    message_id: str | None = None
    price: float = 0.0


def decode(action: int, view: AgentView, mask: np.ndarray | None = None) -> Decision:
    """Turn an action index into a decision about the jobs and offers in `view`.

    An illegal action (masked out) decodes to `pass`, or to `reject` when an answer is due, so
    a misbehaving policy can never break the market. `mask` may be passed when the caller
    already has `action_mask(view)`.
    """
    action = int(action)
    if mask is None:
        mask = action_mask(view)
    if not 0 <= action < ACTION_COUNT or not mask[action]:
        return (
            Decision("reject", message_id=view.inbox.message_id) if view.inbox else Decision("pass")
        )
    if action == PASS:
        return Decision("pass")
    if action < ACCEPT:
        slot_index, level_index = divmod(action - BID_BASE, len(PRICE_LEVELS))
        slot = view.slots[slot_index]
        return Decision("bid", job=slot.job, price=PRICE_LEVELS[level_index] * slot.epoch_value)
    assert view.inbox is not None
    if action == ACCEPT:
        return Decision("accept", message_id=view.inbox.message_id, price=view.inbox.price)
    if action == REJECT:
        return Decision("reject", message_id=view.inbox.message_id)
    level = PRICE_LEVELS[action - COUNTER_BASE]
    return Decision("counter", message_id=view.inbox.message_id, price=level * view.inbox.anchor)


def bid_action(slot_index: int, level_index: int) -> int:
    """Action index of a bid/proposal on a job slot at a price level."""
    return BID_BASE + slot_index * len(PRICE_LEVELS) + level_index


def counter_action(level_index: int) -> int:
    return COUNTER_BASE + level_index
