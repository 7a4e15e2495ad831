"""The event-driven simulator: time, arrivals, starts, progress, finishes.

One simulator serves every allocator. A central scheduler is called after each batch of
simultaneous events (and on its own timer if it has one); a market mechanism is driven from the
PettingZoo environment, which calls `advance` between decision epochs and places pods through the
same `bind` / `evict` / `relayout` methods. Those methods are the only way state changes, and
they delegate every physical check to `ClusterState`.

Progress model: a running job progresses at `speed x contention` seconds of its uncontended,
reference-speed `duration` per second, where `speed` is the slowest relative speed among the GPUs
it holds (if `speed_scaling`), and `contention` is the time-slicing factor of the most crowded
time-sliced GPU it shares: k >= 2 active jobs -> (1/k)(1 - overhead), alone -> 1. MIG instances
and exclusive GPUs never slow each other. A job only progresses once all its pods are placed; pods
placed earlier hold their resources idle (the waste a gang-unaware scheduler causes).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, KeysView, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Protocol

import numpy as np

from gpuparley.envs import mig
from gpuparley.envs.catalogue import CATALOGUE
from gpuparley.envs.cluster import Binding, ClusterState, PlacementError
from gpuparley.envs.jobs import Job
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.timeline import Timeline
from gpuparley.envs.topology import ClusterSpec


class JobState(StrEnum):
    PENDING = "pending"  # nothing placed
    PARTIAL = "partial"  # some pods placed and holding resources, job not running
    RUNNING = "running"
    DONE = "done"


class _Event(IntEnum):
    # Order within one instant: finishes free capacity before arrivals look for it.
    FINISH = 0
    RELAYOUT_DONE = 1
    ARRIVAL = 2
    TIMER = 3


class Allocator(Protocol):
    """Anything that places pods: a central scheduler, or a market mechanism's clearing step."""

    name: str

    def schedule(self, sim: Simulator) -> None:
        """Look at the pending jobs and place, evict or re-lay-out through `sim`."""


@dataclass(slots=True)
class JobRecord:
    """Everything that happened to one job."""

    job: Job
    state: JobState = JobState.PENDING
    arrived: bool = False
    first_bound: float | None = None
    first_start: float | None = None
    start: float | None = None
    finish: float | None = None
    remaining: float = 0.0
    rate: float = 0.0
    speed: float = 1.0
    last_update: float = 0.0
    version: int = 0
    evictions: int = 0
    partial_since: float | None = None
    partial_gpu_seconds: float = 0.0
    run_seconds: float = 0.0
    gpu_seconds: float = 0.0
    lost_gpu_seconds: float = 0.0  # GPU-seconds of progress thrown away by evictions
    contended: bool = False
    delivered: float = 0.0  # GPU-equivalents of compute it receives right now
    shared_gpus: tuple[int, ...] = field(default=())


class Simulator:
    """Replays jobs on a cluster under an allocator. Deterministic: no randomness inside."""

    def __init__(
        self,
        cluster: ClusterSpec,
        jobs: Sequence[Job],
        allocator: Allocator | None = None,
        settings: SimulationSettings | None = None,
        timer_seconds: float | None = None,
    ) -> None:
        ids = [job.id for job in jobs]
        if len(set(ids)) != len(ids):
            raise ValueError("job ids must be unique")
        self.settings = settings or SimulationSettings()
        self.state = ClusterState(cluster)
        self.allocator = allocator
        self.timer_seconds = timer_seconds
        self.now = 0.0
        ordered = sorted(jobs, key=lambda j: j.id)  # input order must not change any number
        self.jobs: dict[int, Job] = {job.id: job for job in ordered}
        self.records: dict[int, JobRecord] = {
            job.id: JobRecord(job, remaining=job.duration) for job in ordered
        }
        self._queue: dict[int, None] = {}  # pending or partial jobs, in arrival order
        self._running: set[int] = set()
        self.completed: list[int] = []  # ids of finished jobs, in the order they finished
        self._active_on_gpu = np.zeros(self.state.gpu_count, dtype=np.int64)
        self._events: list[tuple[float, int, int, int, int]] = []
        self._seq = 0
        self._live_events = 0  # events other than timers still queued
        self.relayouts = 0
        self.evictions = 0
        self.lost_gpu_seconds = 0.0
        self.events_processed = 0
        self.timeline = Timeline(self.state, self.settings)
        # each GPU's relative speed (its model's), for `speed_on`
        self._gpu_speed = [CATALOGUE[m].relative_speed for m in self.state.gpu_model_name]
        for job in sorted(jobs, key=lambda j: (j.arrival, j.id)):
            self._push(job.arrival, _Event.ARRIVAL, job.id)
        if timer_seconds:
            self._push(0.0, _Event.TIMER, 0)

    # ----------------------------------------------------------- read access
    def pending(self) -> list[Job]:
        """Arrived jobs not yet running (pending or partially placed), oldest first."""
        return [self.jobs[job_id] for job_id in self._queue]

    def waiting_ids(self) -> KeysView[int]:
        """The ids of `pending()`, as a read-only live view."""
        return self._queue.keys()

    def running(self) -> list[Job]:
        return [self.jobs[job_id] for job_id in sorted(self._running)]

    def record(self, job_id: int) -> JobRecord:
        return self.records[job_id]

    def next_event_time(self) -> float:
        """When the next queued event (arrival, finish, end of a re-layout) falls; inf if none.

        A finish event may be stale (its job was evicted or re-timed): the time is then early,
        never late, which is what an event-driven caller needs.
        """
        return self._events[0][0] if self._events else float("inf")

    @property
    def finished(self) -> bool:
        """No event left: every job has arrived and nothing is running."""
        return self._live_events == 0

    # ----------------------------------------------------------- placement
    def bind(self, job: Job, bindings: Sequence[Binding]) -> None:
        """Place pods of a pending job (atomically); the job starts once all pods are placed."""
        record = self.records[job.id]
        if record.state not in (JobState.PENDING, JobState.PARTIAL) or not record.arrived:
            raise PlacementError(f"job {job.id} is {record.state.value}, not waiting to be placed")
        self.state.bind(job, bindings)
        if record.first_bound is None:
            record.first_bound = self.now
        held = len(self.state.holdings.get(job.id, ()))
        if held == job.pods:
            self._close_partial(record)
            self._start(record)
        elif record.state is JobState.PENDING:
            record.state = JobState.PARTIAL
            record.partial_since = self.now

    def evict(self, job: Job, keep_progress: bool | None = None) -> None:
        """Stop a job and free what it holds; it waits again.

        Its progress is kept (a checkpoint) if `keep_progress`, by default if the scenario's
        `preemption_keeps_progress` says so; progress thrown away is counted, in GPU-seconds of
        uncontended reference-speed work, in `lost_gpu_seconds`.
        """
        record = self.records[job.id]
        if keep_progress is None:
            keep_progress = self.settings.preemption_keeps_progress
        if record.state is JobState.RUNNING:
            self._settle(record)
            self._running.discard(job.id)
            touched = self._deactivate(record)
            record.version += 1
            if not keep_progress:
                lost = (job.duration - record.remaining) * job.gpus
                record.lost_gpu_seconds += lost
                self.lost_gpu_seconds += lost
                record.remaining = job.duration
            self.state.release(job)
            self._refresh_rates(touched)
        elif record.state is JobState.PARTIAL:
            self._close_partial(record)
            self.state.release(job)
        else:
            raise PlacementError(f"job {job.id} is {record.state.value}; nothing to evict")
        record.state = JobState.PENDING
        record.evictions += 1
        self.evictions += 1
        self._queue[job.id] = None
        self._queue = dict.fromkeys(sorted(self._queue, key=lambda i: (self.jobs[i].arrival, i)))

    def relayout(self, gpu: int, layout: Sequence[mig.Instance]) -> None:
        """Re-partition an empty MIG GPU; it is down for the configured downtime."""
        downtime = self.settings.relayout_downtime
        self.state.relayout(gpu, layout, self.now + downtime if downtime else 0.0)
        self.relayouts += 1
        if downtime:
            self._push(self.now + downtime, _Event.RELAYOUT_DONE, gpu)

    # ----------------------------------------------------------- the clock
    def advance(self, until: float, on_event: Callable[[], None] | None = None) -> None:
        """Process every event up to and including `until`, then set the clock to `until`.

        What a caller placed or evicted since the last event (a market's clearing) is sampled
        first, at the instant it happened: otherwise the timeline would hold the state before
        the change until the next event, and under-count the caller's allocation.
        """
        self.timeline.sample(self.now, len(self._queue), len(self._running))
        horizon = self.settings.horizon
        limit = horizon if horizon is not None and horizon < until else until  # min(), no call
        while self._events and self._events[0][0] <= limit:
            self._step()
            if on_event is not None:
                on_event()
        self._set_clock(limit if limit > self.now else self.now)  # max(), without the call

    def run(self, on_event: Callable[[], None] | None = None) -> None:
        """Run to the end of the workload, or to the horizon if one is set and a job is still
        unfinished there: jobs an allocator leaves waiting forever wait until the horizon, the
        same window a run that is cut by it observes."""
        horizon = self.settings.horizon
        while self._events and (horizon is None or self._events[0][0] <= horizon):
            if self.finished:
                break
            self._step()
            if on_event is not None:
                on_event()
        if horizon is not None and self.now < horizon and len(self.completed) < len(self.records):
            self._set_clock(horizon)
        self.timeline.sample(self.now, len(self._queue), len(self._running))

    def _step(self) -> None:
        """Process every event of the earliest instant, then let the allocator act once."""
        instant = self._events[0][0]
        self._set_clock(instant)
        timer_fired = False
        while self._events and self._events[0][0] == instant:
            _, kind, _seq, payload, version = heapq.heappop(self._events)
            self.events_processed += 1
            if kind != _Event.TIMER:
                self._live_events -= 1
            if kind == _Event.ARRIVAL:
                self.records[payload].arrived = True
                self._queue[payload] = None
            elif kind == _Event.FINISH:
                record = self.records[payload]
                if record.version == version and record.state is JobState.RUNNING:
                    self._complete(record)
            elif kind == _Event.RELAYOUT_DONE:
                if self.state.gpu_down_until[payload] <= instant:
                    self.state.finish_relayout(payload)
            else:
                timer_fired = True
        if timer_fired and self.timer_seconds and not self.finished:
            self._push(instant + self.timer_seconds, _Event.TIMER, 0)
        if self.allocator is not None and self._queue:
            self.allocator.schedule(self)
        self.timeline.sample(self.now, len(self._queue), len(self._running))

    def _set_clock(self, t: float) -> None:
        if t < self.now:
            raise ValueError(f"time cannot go back from {self.now} to {t}")
        self.now = t

    def _push(self, t: float, kind: _Event, payload: int, version: int = 0) -> None:
        self._seq += 1
        if kind != _Event.TIMER:
            self._live_events += 1
        heapq.heappush(self._events, (t, int(kind), self._seq, payload, version))

    # ----------------------------------------------------------- job life
    def _start(self, record: JobRecord) -> None:
        job = record.job
        del self._queue[job.id]
        record.state = JobState.RUNNING
        record.start = self.now
        if record.first_start is None:
            record.first_start = self.now
        record.last_update = self.now
        record.rate = 0.0  # forces a fresh finish event below
        record.speed = self._speed_of(job)
        state = self.state
        shared = (
            tuple(
                g
                for _pod, placement in state.holdings[job.id]
                if state.node_is_timeslice[placement.node]
                for g in placement.gpus
            )
            if job.pod.gpu.kind == "share"
            else ()
        )
        record.shared_gpus = shared
        for g in shared:
            self._active_on_gpu[g] += 1
        self._running.add(job.id)
        self._refresh_rates(self._neighbours(shared) | {job.id})

    def _complete(self, record: JobRecord) -> None:
        self._settle(record)
        record.state = JobState.DONE
        record.finish = self.now
        self.completed.append(record.job.id)
        record.remaining = 0.0
        self._running.discard(record.job.id)
        touched = self._deactivate(record)
        self.state.release(record.job)
        self._refresh_rates(touched)

    def _deactivate(self, record: JobRecord) -> set[int]:
        self.timeline.delivered_gpus -= record.delivered
        record.delivered = 0.0
        for g in record.shared_gpus:
            self._active_on_gpu[g] -= 1
        touched = self._neighbours(record.shared_gpus)
        touched.discard(record.job.id)
        record.shared_gpus = ()
        return touched

    def _neighbours(self, gpus: Iterable[int]) -> set[int]:
        """Running jobs sharing any of these time-sliced GPUs."""
        return {
            job_id for g in gpus for job_id in self.state.gpu_holders[g] if job_id in self._running
        }

    def _speed_of(self, job: Job) -> float:
        if job.pod.gpu.kind == "none":
            return 1.0
        return self.speed_on(self.state.held_gpus(job.id))

    def speed_on(self, gpus: Iterable[int]) -> float:
        """Relative speed of a job on these GPUs: the slowest one's (1 without speed scaling
        or without GPUs)."""
        if not self.settings.speed_scaling:
            return 1.0
        speed = self._gpu_speed
        return min((speed[g] for g in gpus), default=1.0)

    def contention_factor(self, active: int) -> float:
        """Speed share of each of `active` jobs time-sliced on one GPU."""
        if active <= 1 or not self.settings.contention:
            return 1.0
        return (1.0 - self.settings.timeslice_overhead) / active

    def _refresh_rates(self, job_ids: Iterable[int]) -> None:
        """Re-derive the progress rate of these running jobs and re-time their finish events."""
        for job_id in sorted(job_ids):
            record = self.records[job_id]
            if record.state is not JobState.RUNNING:
                continue
            self._settle(record)
            shared = record.shared_gpus
            crowd = max(int(self._active_on_gpu[g]) for g in shared) if shared else 1
            factor = self.contention_factor(crowd)
            record.contended |= factor < 1.0
            self.timeline.delivered_gpus += record.job.gpus * factor - record.delivered
            record.delivered = record.job.gpus * factor
            rate = record.speed * factor
            if rate != record.rate:
                record.rate = rate
                record.version += 1
                self._push(
                    self.now + record.remaining / rate, _Event.FINISH, job_id, record.version
                )

    def _settle(self, record: JobRecord) -> None:
        """Bring a running job's remaining work up to the current time."""
        elapsed = self.now - record.last_update
        if elapsed > 0 and record.state is JobState.RUNNING:
            record.remaining = max(0.0, record.remaining - elapsed * record.rate)
            record.run_seconds += elapsed
            record.gpu_seconds += elapsed * record.job.gpus
        record.last_update = self.now

    def _close_partial(self, record: JobRecord) -> None:
        if record.partial_since is not None:
            held = sum(len(p.gpus) for _pod, p in self.state.holdings.get(record.job.id, ()))
            record.partial_gpu_seconds += (self.now - record.partial_since) * held
            record.partial_since = None

    def close_open_intervals(self) -> None:
        """Account running and partially placed jobs up to now (call before reading metrics)."""
        for job_id in self._running:
            self._settle(self.records[job_id])
        for job_id in self._queue:
            record = self.records[job_id]
            if record.partial_since is not None:
                self._close_partial(record)
                record.partial_since = self.now
