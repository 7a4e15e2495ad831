"""Jobs: what a tenant asks for, how much it is worth, and how long it runs.

A job is one or more identical pods that start together (a gang when there are several, or when
one pod needs several GPUs). Each pod asks for CPU, memory and one kind of GPU request:

* `none`  - a CPU-only pod (the openb trace has them; they still consume node CPU and memory);
* `whole` - `count` whole GPUs of the same node;
* `mig`   - one MIG instance of a named profile;
* `share` - a fraction of one GPU in thousandths (`milli`), served by a time-sliced GPU.

Time is measured in seconds. `duration` is the run time of the job at full, uncontended speed on
a reference GPU (relative speed 1.0, see `catalogue`); `work` is the same in GPU-seconds. The
duration, not the work, is stored because CPU-only pods have no GPU work yet still take time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from gpuparley.envs.mig import COMPUTE_SLICES

GPURequestKind = Literal["none", "whole", "mig", "share"]


class QoS(StrEnum):
    """Quality-of-service classes, as the openb trace labels its pods."""

    LS = "LS"  # latency sensitive
    BE = "BE"  # best effort
    BURSTABLE = "Burstable"
    GUARANTEED = "Guaranteed"


@dataclass(frozen=True, slots=True)
class GPURequest:
    """The GPU part of one pod's request."""

    kind: GPURequestKind = "none"
    count: int = 0
    profile: str | None = None
    milli: int = 0
    compute_slices: int = 0  # filled for `mig` so that no catalogue look-up is needed later

    def __post_init__(self) -> None:
        if self.kind == "whole" and self.count < 1:
            raise ValueError("a whole-GPU request needs count >= 1")
        if self.kind == "mig" and (self.profile is None or not 1 <= self.compute_slices <= 7):
            raise ValueError("a MIG request needs a profile and its compute slices (1..7)")
        if self.kind == "share" and not 0 < self.milli <= 1000:
            raise ValueError(f"a GPU share must be 1..1000 milli-GPU, got {self.milli}")

    @property
    def gpu_equivalent(self) -> float:
        """GPUs' worth of compute this request holds when it runs uncontended."""
        if self.kind == "whole":
            return float(self.count)
        if self.kind == "mig":
            return self.compute_slices / COMPUTE_SLICES
        if self.kind == "share":
            return self.milli / 1000
        return 0.0

    @property
    def milli_gpu(self) -> int:
        """The request in milli-GPU, as the FGD paper counts allocation (whole GPU = 1000)."""
        if self.kind == "whole":
            return 1000 * self.count
        if self.kind == "mig":
            return round(1000 * self.compute_slices / COMPUTE_SLICES)
        return self.milli

    def describe(self) -> str:
        if self.kind == "whole":
            return f"{self.count}xGPU"
        if self.kind == "mig":
            return f"mig-{self.profile}"
        if self.kind == "share":
            return f"{self.milli}m-GPU"
        return "cpu-only"


@dataclass(frozen=True, slots=True)
class PodDemand:
    """What each pod of a job asks a node for."""

    gpu: GPURequest
    cpu_milli: int
    memory_mib: int

    def __post_init__(self) -> None:
        if self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError("pod CPU and memory requests must be >= 0")


@dataclass(frozen=True, slots=True)
class Job:
    """One tenant's job: its demand, its worth, and when it arrives.

    Value model: the job is worth `value` if it finishes within `deadline` seconds of arriving;
    after that its worth falls linearly to zero over `decay` seconds (decay 0 = a hard deadline).
    """

    id: int
    owner: str
    pod: PodDemand
    duration: float
    arrival: float
    pods: int = 1
    allowed_models: tuple[str, ...] = ()
    value: float = 0.0
    deadline: float = float("inf")
    decay: float = 0.0
    qos: QoS = QoS.BE
    priority: int = 0
    name: str = ""
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.pods < 1:
            raise ValueError(f"job {self.id}: pods must be >= 1")
        if self.duration <= 0:
            raise ValueError(f"job {self.id}: duration must be > 0 seconds")
        if self.arrival < 0:
            raise ValueError(f"job {self.id}: arrival must be >= 0")

    @property
    def is_gang(self) -> bool:
        """True when the job needs several GPUs that must all be placed together."""
        return self.pods > 1 or (self.pod.gpu.kind == "whole" and self.pod.gpu.count > 1)

    @property
    def gpus(self) -> float:
        """GPU-equivalents held by the whole job while it runs."""
        return self.pods * self.pod.gpu.gpu_equivalent

    @property
    def milli_gpu(self) -> int:
        return self.pods * self.pod.gpu.milli_gpu

    @property
    def work(self) -> float:
        """GPU-seconds of work at full speed on a reference GPU."""
        return self.duration * self.gpus

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models

    def realised_value(self, finish: float | None) -> float:
        """Worth of the job if it finishes at `finish` (None = never finished: worth nothing)."""
        if finish is None:
            return 0.0
        late = finish - self.arrival - self.deadline
        if late <= 0:
            return self.value
        if self.decay <= 0:
            return 0.0
        return self.value * max(0.0, 1.0 - late / self.decay)
