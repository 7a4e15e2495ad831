"""Knobs of the simulated physics that a scenario may set (defaults documented per field)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimulationSettings:
    """How the simulator turns placements into progress.

    * `horizon` - stop the clock here (seconds); None runs until every job has finished.
    * `timeslice_overhead` - context-switch loss on a time-sliced GPU: k >= 2 active jobs each
      progress at (1/k) * (1 - overhead) of their uncontended speed; a lone job runs at full speed.
    * `contention` - apply that time-slicing slowdown at all. Trace replays switch it off because
      the trace's observed lifetimes already include whatever sharing the pods really had.
    * `speed_scaling` - divide run time by the GPU model's relative speed. Off for trace replays,
      whose lifetimes were observed on whatever model the pod really ran on.
    * `relayout_downtime` - seconds a GPU is unusable while its MIG layout changes.
    * `preemption_keeps_progress` - whether an evicted job resumes from a checkpoint (True) or
      restarts from scratch (False, the Kubernetes default for a killed pod).
    """

    horizon: float | None = None
    timeslice_overhead: float = 0.05
    contention: bool = True
    speed_scaling: bool = True
    relayout_downtime: float = 120.0
    preemption_keeps_progress: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.timeslice_overhead < 1:
            raise ValueError("timeslice_overhead must be in [0, 1)")
        if self.relayout_downtime < 0:
            raise ValueError("relayout_downtime must be >= 0")
        if self.horizon is not None and self.horizon <= 0:
            raise ValueError("horizon must be > 0 seconds")
