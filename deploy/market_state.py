"""The market's state in the host apiserver, so a market controller killed at any point resumes
the same market.

The market is deterministic given its scenario, seed and the inputs of every sub-step it closed:
which bids it accepted (in order) and which agents passed. So what is stored is that **journal**
(event sourcing), not a dump of the simulator: a restarted controller builds the market from the
scenario and replays the journal through `Market.receive` and the environment's `advance` --
the very code that produced it -- and gets the same ledger, leases, lease-id counter, clock and
jobs' progress. Every replayed bid is validated again as it was the first time.

Where: the ConfigMap `gpuparley-market-state` in `gpuparley-system` (readable by the market and
cluster admins only) holds the run's identity, the journal's tail and a summary of the state
after its last record (epoch, simulated time, active leases, balances and the controller's
counters), which a replay must reproduce exactly or the controller refuses to start, and the
token of the controller that wrote it (see below). Every 64 records the tail moves into an
immutable chunk ConfigMap named after its content's hash (`gpuparley-market-journal-<n>-<hash>`),
listed in the head, so a write stays small. No snapshot is kept: a restart replays every
record, at about twice what simulating those sub-steps took (`benchmarks/market_resume_cost.py`),
and a run's journal is bounded by its scenario's episode.

**Commit point and fencing.** A sub-step's record is written (a PUT carrying the head's
resourceVersion) before any of its effects leave the controller (GPULease writes, consumed bids
deleted, pods evicted or admitted). A controller killed before the write redoes the sub-step from
the same inputs (bids are deleted only after it, and negotiators' answers are in their status);
one killed after it replays the record and then reconciles the effects, which are idempotent.
Sub-steps nobody was asked in (every answer given ahead) are written together with the next
record or before the next effects (`MarketController._journal`): their answers stay in the
negotiators' statuses until a new view is published, so they too are redone from the same inputs.
A replica that lost its leadership and still tries to write meets a newer resourceVersion
(409) and stops: two markets never both advance the journal. A 409 can also answer a write of
this replica's own that landed while its response was lost (the apiserver killed mid-request,
then the write retried), so before it stops the replica reads the head: each head names its
writer (a token drawn per controller), and one holding exactly what was being written is this
replica's commit, which stands. The market's writes to pods and
GPULeases, which are not in the journal (pods bound, pods deleted, leases written, marked
ending or released), are fenced the same way: just before them `confirm` reads the head and
stops the replica if its resourceVersion moved, so a deposed replica does not act on a state
the new leader has changed. What is left between that read and the write (a replica paused
there past the takeover) the apiserver closes for elected replicas: `market_fence.py`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from gpuparley.deploy.kube import Conflict, Kube
from gpuparley.deploy.objects import MARKET_NAMESPACE

STATE_CONFIGMAP = "gpuparley-market-state"
CHUNK_PREFIX = "gpuparley-market-journal"
CHUNK_RECORDS = 64


class StateError(RuntimeError):
    """The stored state belongs to another run, does not replay, or another replica wrote it."""


@dataclass
class Record:
    """The inputs of one closed sub-step: the messages handed to the market, in order (entries
    of `MessageIntake.take`: the object's message id, what the market received, whether it
    accepted it), with their senders, and the agents that passed (or did not answer)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "passed": self.passed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        return cls(list(data.get("messages") or []), list(data.get("passed") or []))


class MarketState:
    """The journal and summary of one market run, read and written with resourceVersion
    preconditions."""

    def __init__(self, kube: Kube, run: dict[str, Any]) -> None:
        self.kube = kube
        self.run = run
        self.chunks: list[str] = []
        self.tail: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}
        self._version: str | None = None  # the head's resourceVersion (None: not created)
        self._writer = uuid.uuid4().hex  # tells this controller's heads from another replica's

    def load(self) -> list[Record]:
        """The journal so far (empty for a new run); StateError if it is another run's."""
        head = self.kube.get("configmaps", MARKET_NAMESPACE, STATE_CONFIGMAP)
        if head is None:
            return []
        data = head.get("data") or {}
        stored_run = json.loads(data.get("run", "{}"))
        if stored_run != self.run:
            raise StateError(
                f"ConfigMap {MARKET_NAMESPACE}/{STATE_CONFIGMAP} holds another run's market "
                f"({stored_run}, not {self.run}): delete it (and that run's GPULeases) to start "
                "a new market, or run the market with the same scenario, seed and mechanism"
            )
        self._version = head["metadata"]["resourceVersion"]
        self.chunks = json.loads(data.get("chunks", "[]"))
        self.tail = json.loads(data.get("tail", "[]"))
        self.summary = json.loads(data.get("summary", "{}"))
        records: list[dict[str, Any]] = []
        for name in self.chunks:
            chunk = self.kube.get("configmaps", MARKET_NAMESPACE, name)
            if chunk is None:
                raise StateError(f"journal chunk {MARKET_NAMESPACE}/{name} is missing")
            records += json.loads((chunk.get("data") or {}).get("records", "[]"))
        return [Record.from_json(r) for r in [*records, *self.tail]]

    @property
    def length(self) -> int:
        return len(self.chunks) * CHUNK_RECORDS + len(self.tail)

    def commit(self, records: list[Record], summary: dict[str, Any]) -> None:
        """Append `records` (and the summary of the state the last of them is applied to): the
        sub-steps' commit point. StateError if another replica wrote the head since we read or
        wrote it."""
        tail = [*self.tail, *(record.to_json() for record in records)]
        chunks = list(self.chunks)
        while len(tail) >= CHUNK_RECORDS:
            chunks.append(self._write_chunk(len(chunks), tail[:CHUNK_RECORDS]))
            tail = tail[CHUNK_RECORDS:]
        data = {
            "run": json.dumps(self.run, sort_keys=True),
            "chunks": json.dumps(chunks),
            "tail": json.dumps(tail),
            "summary": json.dumps(summary, sort_keys=True),
            "writer": self._writer,
        }
        meta: dict[str, Any] = {"name": STATE_CONFIGMAP}
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
        try:
            if self._version is None:
                written = self.kube.create("configmaps", MARKET_NAMESPACE, obj)  # None: exists
            else:
                meta["resourceVersion"] = self._version
                written = self.kube.replace("configmaps", MARKET_NAMESPACE, obj)
        except Conflict:
            written = None
        written = written or self._landed(data)
        if written is None:
            raise StateError(
                "the market state was written by another replica: this one is no longer the leader"
            )
        self._version = written["metadata"]["resourceVersion"]
        self.chunks, self.tail, self.summary = chunks, tail, summary

    def _landed(self, data: dict[str, str]) -> dict[str, Any] | None:
        """The head, if it is this very write: an earlier try of it landed but its response
        was lost, so its retry met the resourceVersion it had itself made."""
        head = self.kube.get("configmaps", MARKET_NAMESPACE, STATE_CONFIGMAP)
        return head if head is not None and head.get("data") == data else None

    def confirm(self) -> None:
        """Check, with a read from the apiserver, that no other replica wrote the state since
        this one last read or wrote it: the fence before a write that is not in the journal (a
        pod bound, a pod deleted, a GPULease written) is made on the strength of this
        replica's state. StateError
        if one did (this replica is deposed)."""
        head = self.kube.get("configmaps", MARKET_NAMESPACE, STATE_CONFIGMAP)
        version = None if head is None else head["metadata"]["resourceVersion"]
        if version != self._version:
            raise StateError(
                "the market state was written by another replica since this one read it: this "
                "one is no longer the leader"
            )

    def _write_chunk(self, index: int, records: list[dict[str, Any]]) -> str:
        text = json.dumps(records, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        name = f"{CHUNK_PREFIX}-{index}-{digest}"
        chunk = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"records": text},
            "immutable": True,
        }
        self.kube.create("configmaps", MARKET_NAMESPACE, chunk)  # None: written before a crash
        return name
