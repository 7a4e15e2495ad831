"""Cluster-wide measurements over time, one sample per simulated instant.

Definitions (FGD-style where the paper defines them, see `docs/reference.md`):

* `allocation_ratio` - allocated milli-GPU / total milli-GPU. A MIG instance counts its compute
  share (N/7 of a GPU); a share counts its milli; a whole or exclusive GPU counts 1000.
* `utilisation` - GPU compute actually delivered / total: each running job contributes its GPU
  equivalents times its time-slicing factor, so k jobs taking turns on one GPU deliver less than
  the same jobs on isolated slices. Pods held by a job that is not yet running deliver nothing.
* `unallocated_gpus` - total minus allocated, in GPUs (the paper's count of unallocated GPUs).
* `fragmented_gpus` - free capacity stranded on partly used GPUs: free milli of time-sliced GPUs
  that already hold a share, plus free compute of MIG GPUs that already hold an instance. It can
  host only small requests, never a whole-GPU one.
* `idle_gpus` - GPUs with nothing on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from gpuparley.envs.mig import COMPUTE_SLICES

if TYPE_CHECKING:
    from gpuparley.envs.cluster import ClusterState
    from gpuparley.envs.settings import SimulationSettings

_FEW_GPUS = 64  # up to this many GPUs, occupancy is measured in plain Python

COLUMNS = (
    "time",
    "pending_jobs",
    "running_jobs",
    "allocation_ratio",
    "utilisation",
    "unallocated_gpus",
    "fragmented_gpus",
    "idle_gpus",
    "mig_slices_used",
    "timeslice_replicas_used",
)


class Timeline:
    """Time series of cluster measurements (one row per distinct instant), read by column."""

    def __init__(self, state: ClusterState, settings: SimulationSettings) -> None:
        self._state = state
        self._rows: list[tuple[float, ...]] = []  # one per instant, in `COLUMNS` order
        self.delivered_gpus = 0.0  # kept current by the simulator
        self._total_milli = max(1, state.gpu_count * 1000)
        self._not_mig = ~state.gpu_is_mig
        self._has_mig = bool(state.gpu_is_mig.any())
        self._is_mig = state.gpu_is_mig.tolist()
        self._sliced = self._not_mig & state.node_is_timeslice[state.gpu_node]
        self._has_sliced = bool(self._sliced.any())
        self._occupancy: tuple[float, int, int, int] = (0.0, 0, 0, 0)
        self._occupancy_version = -1  # the state version `_occupancy` was measured at
        del settings

    def sample(self, now: float, pending: int, running: int) -> None:
        state = self._state
        if self._occupancy_version != state.version:  # most instants change no placement
            self._occupancy = self._measure_occupancy()
            self._occupancy_version = state.version
        fragmented, idle, mig_slices, replicas = self._occupancy
        row = (
            now,
            pending,
            running,
            state.allocated_milli / self._total_milli,
            self.delivered_gpus * 1000 / self._total_milli,
            (self._total_milli - state.allocated_milli) / 1000 if state.gpu_count else 0.0,
            fragmented,
            idle,
            mig_slices,
            replicas,
        )
        rows = self._rows
        if rows and rows[-1][0] == now:
            rows[-1] = row
        else:
            rows.append(row)

    def _measure_occupancy(self) -> tuple[float, int, int, int]:
        """Fragmented GPUs, idle GPUs, MIG slices used and time-slice replicas used."""
        if self._state.gpu_count <= _FEW_GPUS:
            return self._measure_few()
        return self._measure_many()

    def _measure_many(self) -> tuple[float, int, int, int]:
        """`_measure_occupancy` with numpy, for many GPUs."""
        state = self._state
        used = state.gpu_used_milli
        mig_used = state.mig_used_slices
        partial_share = self._not_mig & (used > 0) & (used < 1000)
        fragmented_milli = (1000 - used[partial_share]).sum()
        # The MIG and time-slice terms are sums over no GPU when the cluster has none of that
        # kind: skipping them saves most of the numpy calls, each costly on arrays this small.
        if self._has_mig:
            is_mig = state.gpu_is_mig
            partial_mig = is_mig & (mig_used > 0) & (mig_used < COMPUTE_SLICES)
            fragmented_milli = fragmented_milli + (
                (COMPUTE_SLICES - mig_used[partial_mig]).sum() * 1000 / COMPUTE_SLICES
            )
            idle = np.where(is_mig, mig_used == 0, used == 0)
        else:
            idle = used == 0
        return (
            fragmented_milli / 1000,
            int(np.count_nonzero(idle)),
            int(mig_used.sum()),
            int(state.gpu_used_slots[self._sliced].sum()) if self._has_sliced else 0,
        )

    def _measure_few(self) -> tuple[float, int, int, int]:
        """`_measure_occupancy` in plain Python, the same numbers: on a few GPUs numpy's cost
        per call is most of the work, and the market samples after every change."""
        state = self._state
        used = state.gpu_used_milli.tolist()
        slices = state.mig_used_slices.tolist()
        is_mig = self._is_mig
        fragmented_milli: float = sum(
            1000 - u for u, mig in zip(used, is_mig, strict=True) if not mig and 0 < u < 1000
        )
        if self._has_mig:
            partial = sum(
                COMPUTE_SLICES - s
                for s, mig in zip(slices, is_mig, strict=True)
                if mig and 0 < s < COMPUTE_SLICES
            )
            fragmented_milli = fragmented_milli + partial * 1000 / COMPUTE_SLICES
            idle = sum(
                (s if mig else u) == 0 for u, s, mig in zip(used, slices, is_mig, strict=True)
            )
        else:
            idle = used.count(0)
        replicas = 0
        if self._has_sliced:
            replicas = sum(state.gpu_used_slots[self._sliced].tolist())
        return fragmented_milli / 1000, idle, sum(slices), replicas

    def column(self, name: str) -> np.ndarray:
        index = COLUMNS.index(name)
        return np.asarray([row[index] for row in self._rows], dtype=np.float64)

    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> Iterator[tuple[float, ...]]:
        return iter(self._rows)

    def time_average(
        self, name: str, until: float | None = None, since: float | None = None
    ) -> float:
        """Average of a column over [`since`, `until`] (defaults: the first and the last
        sample), each sample weighted by how long it held (a step function). A window that
        starts before the first sample counts only from it."""
        times = self.column("time")
        if len(times) == 0:
            return 0.0
        end = times[-1] if until is None else until
        start = times[0] if since is None else since
        values = self.column(name)
        held = np.clip(np.append(times[1:], max(end, times[-1])), start, end) - np.clip(
            times, start, end
        )
        total = held.sum()
        return float(values @ held / total) if total > 0 else float(values[0])
