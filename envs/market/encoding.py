"""The one definition of what a negotiator sees and can do (observation and action encoding).

The PettingZoo environment, the scripted negotiators, training, the ONNX export and the
in-cluster negotiator all import this module, so a policy acts the same in simulation and in a
cluster. Any change to the layout below must bump `SPEC_VERSION`; `spec_hash()` fingerprints the
layout so that a checkpoint trained on another layout is refused when loaded.

Inputs are an `AgentView`: plain numbers about one agent's situation, built either from the
simulator (`envs.market.views`) or from real cluster state (`deploy`).

Actions (one `Discrete` space shared by every agent, so one policy can be shared)::

    0                         pass (no more bids/proposals this round)
    1 + j*L + l               bid for / propose job slot j at price level l
    1 + J*L                   accept the offer at the head of the inbox
    2 + J*L                   reject it
    3 + J*L + l               counter it at price level l

Prices are rents per epoch. A price level l scales an anchor: for a bid or proposal, what one
epoch of running is worth to the job's owner (truthful = level 1.0); for a counter by a lender,
the list-price rent of the demand; for a counter by the proposer, again its job's epoch worth.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from gpuparley.envs.market.frozen import quick_constructor

SPEC_VERSION = "gpu_market_v1/1"
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
    standing_bid: float = 0.0  # the rent its standing bid offers (0: none); shown when outbid


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
    committed: float  # credits promised by outstanding bids/offers
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
    epoch_fraction: float  # sub-step within the round / max sub-steps
    mechanism: Literal["auction", "bargain"]
    slots: tuple[JobSlot, ...] = ()
    inbox: InboxItem | None = None
    passed: bool = False
    since_decision_hours: float = 0.0  # simulated time since this agent last had a decision
    extras: dict[str, float] = field(default_factory=dict, compare=False)


# what the simulator's views are built with, one view per agent per sub-step (see `frozen`)
new_job_slot = quick_constructor(JobSlot)
new_inbox_item = quick_constructor(InboxItem)
new_agent_view = quick_constructor(AgentView)


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
    "tanh(since_decision_hours)",
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
    "standing_bid/epoch_value",
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


def _bounded(ratio: float) -> float:
    """min(ratio, 10.0): a ratio feature capped at the bound (without the call, NaN too)."""
    return 10.0 if ratio > 10.0 else ratio


def _log(x: float) -> float:
    value = math.log1p(x)
    return OBSERVATION_BOUND if value > OBSERVATION_BOUND else value  # min(), without the call


_LOG_COUNTS = {count: _log(count) for count in range(256)}
"""`_log` of the small counts of a view (jobs, leases), which recur at every step."""


def _log_count(count: int) -> float:
    """`_log(count)`, looked up for a small count (a dict look-up costs a fraction of a cache's,
    or of the logarithm)."""
    logged = _LOG_COUNTS.get(count)
    return _log(count) if logged is None else logged


def encode(view: AgentView) -> tuple[np.ndarray, np.ndarray]:
    """Observation vector (float32) and legal-action mask (int8) of one agent."""
    observations, masks = encode_many((view,))
    return observations[0], masks[0]


def encode_many(views: Sequence[AgentView]) -> tuple[np.ndarray, np.ndarray]:
    """`encode` of several agents at once: (agents, features) and (agents, actions) arrays.

    Row i equals `encode(views[i])` bit for bit. The environment encodes every agent at every
    sub-step, a few microseconds each, so each row is assembled as bytes (cached per job slot)
    and the whole batch becomes two arrays, instead of converting Python floats one by one.
    """
    observations = []
    masks = []
    for view in views:
        observation, mask = _encode_bytes(view)
        observations.append(observation)
        masks.append(mask)
    count = len(views)
    return (
        np.ndarray((count, OBSERVATION_SIZE), _FLOAT32, bytearray(b"".join(observations))),
        np.ndarray((count, ACTION_COUNT), _INT8, bytearray(b"".join(masks))),
    )


def action_mask(view: AgentView) -> np.ndarray:
    """Which actions are legal: answer the inbox first; never offer (bargaining) beyond the free
    balance. Auction bids at every level are legal: the auction checks payments, not bids."""
    budget = max(view.budget_per_epoch, 1e-9)
    return np.ndarray(
        (ACTION_COUNT,), _INT8, bytearray(_mask_bytes(view, _slot_codes(view, budget)))
    )


def _encode_bytes(view: AgentView) -> tuple[bytes, bytes]:
    """One observation as float32 bytes (global, slot and inbox features in layout order) and
    its action mask as one byte per action."""
    budget = view.budget_per_epoch
    if budget < 1e-9:  # max(budget, 1e-9) without the call (a NaN stays, as with max)
        budget = 1e-9
    codes = _slot_codes(view, budget)
    reference = view.reference_price
    cluster = view.cluster_gpus
    effective = view.effective_quota_gpus
    balance = view.balance / budget
    committed = view.committed / budget
    price = view.last_price / reference if reference > 0 else 0.0
    used = view.used_gpus / effective if effective > 0 else 0.0
    # `10.0 if x > 10.0 else x` is min(x, 10.0) without a call (NaN too): this runs for every
    # agent at every step. Every feature is bounded by construction: ratios capped at 10,
    # log1p(x <= e^10), tanh.
    parts = [
        _pack(
            _GLOBAL_LAYOUT,
            10.0 if balance > 10.0 else balance,
            10.0 if committed > 10.0 else committed,
            10.0 if price > 10.0 else price,
            view.quota_gpus / cluster if cluster > 0 else 0.0,
            effective / cluster if cluster > 0 else 0.0,
            10.0 if used > 10.0 else used,
            view.free_whole_fraction,
            view.free_mig_fraction,
            view.free_share_fraction,
            _log_count(view.pending_jobs),
            _log_count(view.running_jobs),
            _log_count(view.leases_held),
            _log_count(view.leases_lent),
            view.epoch_fraction,
            float(view.mechanism == "bargain"),
            math.tanh(view.since_decision_hours),
        )
    ]
    parts += [code.features for code in codes]
    parts.append(_EMPTY_SLOT * (JOB_SLOTS - len(codes)))
    item = view.inbox
    if item is None:
        parts.append(_EMPTY_INBOX)
    else:
        parts.append(
            _pack(
                _INBOX_LAYOUT,
                1.0,
                float(item.as_lender),
                min(_ratio(item.price, item.anchor), 10.0),
                min(item.anchor / budget, 10.0),
                _log(item.gpus),
                _ratio(item.round, item.max_rounds),
            )
        )
    return b"".join(parts), _mask_bytes(view, codes)


def _mask_bytes(view: AgentView, codes: list[_SlotCode]) -> bytes:
    """`action_mask` as one byte (0 or 1) per action."""
    free = view.balance - view.committed + 1e-9
    inbox = view.inbox
    if inbox is not None:
        if inbox.round >= inbox.max_rounds:
            counters = _NONE_AFFORDABLE
        elif inbox.as_lender:
            counters = _ALL_AFFORDABLE
        else:
            counters = _affordable(inbox.anchor, free)
        # a proposer may accept a counter only if it can pay for it
        accept = b"\0" if not inbox.as_lender and inbox.price > free else b"\1"
        return b"".join((_NO_BIDS, accept, b"\1", counters))
    if view.passed:
        return _PASS_ONLY
    if view.mechanism == "auction":  # a bid is a value; the budget binds only what is paid
        free = math.inf
    return b"".join(
        (
            b"\1",
            *[code.affordable(free) for code in codes],
            _NONE_AFFORDABLE * (JOB_SLOTS - len(codes)),
            _NO_ANSWERS,
        )
    )


def _affordable(anchor: float, free: float) -> bytes:
    """One byte per price level: 1 if the free balance covers `level x anchor`."""
    return bytes([level * anchor <= free for level in PRICE_LEVELS])


def _pack(layout: struct.Struct, *values: float) -> bytes:
    """`values` as float32 bytes, rounded as numpy rounds them."""
    try:
        return layout.pack(*values)
    except OverflowError:  # beyond float32's range: numpy makes it infinite, and so do we
        return np.array(values, dtype=np.float32).tobytes()


class _SlotCode:
    """A job slot's encoded features, and what a bid costs at each price level.

    The market rebuilds a slot only when the clock, the cluster or the leases change, so the same
    slot objects recur at every sub-step; their codes are memoised by identity (`_slot_codes`),
    because hashing a slot costs more than encoding it.
    """

    __slots__ = ("budget", "costs", "features", "slot")

    def __init__(self, slot: JobSlot, budget: float) -> None:
        self.slot = slot  # held, so that its id cannot be reused while the code is cached
        self.budget = budget
        # The slots of a job are rebuilt every epoch (their waiting time changes), but the
        # features fixed by its shape recur, so those are packed once per shape. Each float is
        # packed on its own, so the bytes are those of packing all the features at once.
        self.features = _shape_bytes(slot.gpus, slot.gpu_kind, slot.pods) + _pack(
            _SLOT_STATE_LAYOUT, *_state_features(slot, budget)
        )
        # The cost of a bid at each level ascends with the level when the anchor is >= 0 (NaN
        # is not), so the levels a free balance covers are then a prefix, found by bisection.
        anchor = slot.epoch_value
        self.costs = tuple([level * anchor for level in PRICE_LEVELS]) if anchor >= 0 else None

    def affordable(self, free: float) -> bytes:
        """`_affordable(epoch_value, free)`: the slot's bid levels the free balance covers."""
        if self.costs is None:
            return _affordable(self.slot.epoch_value, free)
        return _LEVEL_PREFIXES[bisect.bisect_right(self.costs, free)]


def _slot_codes(view: AgentView, budget: float) -> list[_SlotCode]:
    """The codes of the view's job slots (their features divide by the budget)."""
    codes = []
    for slot in view.slots[:JOB_SLOTS]:
        code = _SLOT_CODES.get(id(slot))
        if code is None or code.slot is not slot or code.budget != budget:
            if len(_SLOT_CODES) >= _SLOT_CACHE_SIZE:  # forget the oldest: slots live an epoch
                del _SLOT_CODES[next(iter(_SLOT_CODES))]
            code = _SLOT_CODES[id(slot)] = _SlotCode(slot, budget)
        codes.append(code)
    return codes


def _shape_features(gpus: float, gpu_kind: str, pods: int) -> tuple[float, ...]:
    """The first of a slot's `SLOT_FEATURES`: those fixed by its job's shape."""
    return (1.0, _log(gpus), *_KIND_ONE_HOT[gpu_kind], _log(pods))


@functools.lru_cache(maxsize=1024, typed=True)
def _shape_bytes(gpus: float, gpu_kind: str, pods: int) -> bytes:
    return _pack(_SLOT_SHAPE_LAYOUT, *_shape_features(gpus, gpu_kind, pods))


def _state_features(slot: JobSlot, budget: float) -> tuple[float, ...]:
    """The rest of a slot's `SLOT_FEATURES`, which change with its job's state."""
    return (
        _bounded(slot.epoch_value / budget),
        _log(0.0 if slot.value_density < 0.0 else slot.value_density),  # max(x, 0.0)
        math.tanh(slot.waited_hours),
        math.tanh(slot.slack_hours),
        float(slot.renewal),
        float(slot.fits_now),
        float(slot.within_quota),
        _bounded(_ratio(slot.standing_bid, slot.epoch_value)),
    )


_FLOAT32 = np.dtype(np.float32)
_INT8 = np.dtype(np.int8)
_GLOBAL_LAYOUT = struct.Struct(f"={len(GLOBAL_FEATURES)}f")  # native order, like np.float32
_SLOT_LAYOUT = struct.Struct(f"={len(SLOT_FEATURES)}f")
_SHAPE_FEATURES = SLOT_FEATURES.index("epoch_value/budget")  # how many `_shape_features` gives
_SLOT_SHAPE_LAYOUT = struct.Struct(f"={_SHAPE_FEATURES}f")
_SLOT_STATE_LAYOUT = struct.Struct(f"={len(SLOT_FEATURES) - _SHAPE_FEATURES}f")
_INBOX_LAYOUT = struct.Struct(f"={len(INBOX_FEATURES)}f")
_KIND_ONE_HOT = {kind: tuple(float(k == kind) for k in GPU_KINDS) for kind in GPU_KINDS}
_EMPTY_SLOT = bytes(_SLOT_LAYOUT.size)
_EMPTY_INBOX = bytes(_INBOX_LAYOUT.size)
_NONE_AFFORDABLE = bytes(len(PRICE_LEVELS))
_ALL_AFFORDABLE = b"\1" * len(PRICE_LEVELS)
_LEVEL_PREFIXES = tuple(  # [k]: the first k price levels affordable
    _ALL_AFFORDABLE[:k] + _NONE_AFFORDABLE[k:] for k in range(len(PRICE_LEVELS) + 1)
)
_NO_BIDS = bytes(ACCEPT)  # pass and every bid: illegal while an answer is due
_NO_ANSWERS = bytes(ACTION_COUNT - ACCEPT)
_PASS_ONLY = b"\1" + bytes(ACTION_COUNT - 1)
_SLOT_CACHE_SIZE = 256  # codes kept: a few times the slots of all live environments
_SLOT_CODES: dict[int, _SlotCode] = {}


@dataclass(frozen=True, slots=True)
class Decision:
    """A decoded action: what to do, about which job or message, at what price."""

    kind: Literal["pass", "bid", "accept", "reject", "counter"]
    job: str | None = None
    message_id: str | None = None
    price: float = 0.0


_PASS = Decision("pass")  # decisions are immutable, and passing is the commonest
_new_decision = quick_constructor(Decision)


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
        return _new_decision("reject", message_id=view.inbox.message_id) if view.inbox else _PASS
    if action == PASS:
        return _PASS
    if action < ACCEPT:
        slot_index, level_index = divmod(action - BID_BASE, len(PRICE_LEVELS))
        slot = view.slots[slot_index]
        # positional (kind, job, message_id, price): the commonest decision after passing
        return _new_decision("bid", slot.job, None, PRICE_LEVELS[level_index] * slot.epoch_value)
    assert view.inbox is not None
    if action == ACCEPT:
        return _new_decision("accept", message_id=view.inbox.message_id, price=view.inbox.price)
    if action == REJECT:
        return _new_decision("reject", message_id=view.inbox.message_id)
    level = PRICE_LEVELS[action - COUNTER_BASE]
    return _new_decision(
        "counter", message_id=view.inbox.message_id, price=level * view.inbox.anchor
    )


def bid_action(slot_index: int, level_index: int) -> int:
    """Action index of a bid/proposal on a job slot at a price level."""
    return BID_BASE + slot_index * len(PRICE_LEVELS) + level_index


def counter_action(level_index: int) -> int:
    return COUNTER_BASE + level_index
