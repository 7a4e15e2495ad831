"""The static shape of a cluster: nodes, their CPU and memory, and how their GPUs are shared.

Each GPU is in exactly one sharing mode:

* `exclusive` - one pod per GPU (the default device plugin);
* `mig`       - partitioned into hardware-isolated instances by a layout of (profile, start);
* `timeslice` - advertised as `replicas` schedulable units that take turns on the GPU.

As with the NVIDIA device plugin and GPU operator, the mode is a node setting: every GPU of a node
shares its model and mode (a MIG layout can still differ per GPU after a re-layout at run time).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from gpuparley.envs import mig
from gpuparley.envs.catalogue import gpu_model


class SharingMode(StrEnum):
    EXCLUSIVE = "exclusive"
    MIG = "mig"
    TIMESLICE = "timeslice"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """One node: capacity and GPU configuration. `gpu_model` is None for CPU-only nodes."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_model: str | None = None
    gpu_count: int = 0
    mode: SharingMode = SharingMode.EXCLUSIVE
    replicas: int = 1
    mig_layout: tuple[mig.Instance, ...] = ()
    labels: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = f"node {self.name!r}"
        if self.cpu_milli <= 0 or self.memory_mib <= 0:
            raise ValueError(f"{where}: cpu_milli and memory_mib must be > 0")
        if self.gpu_count < 0:
            raise ValueError(f"{where}: gpu_count must be >= 0")
        if self.gpu_count and self.gpu_model is None:
            raise ValueError(f"{where}: has GPUs but no gpu_model")
        if self.gpu_model is not None:
            model = gpu_model(self.gpu_model)
            if self.mode is SharingMode.MIG:
                if not model.mig_capable:
                    raise ValueError(f"{where}: {self.gpu_model} does not support MIG")
                if not self.mig_layout:
                    raise ValueError(f"{where}: MIG mode needs a non-empty mig_layout")
                mig.validate_layout(self.gpu_model, self.mig_layout)
        if self.mode is SharingMode.TIMESLICE and self.replicas < 2:
            raise ValueError(f"{where}: time-slicing needs replicas >= 2")


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """All nodes of a cluster, in a fixed order (node index = position)."""

    nodes: tuple[NodeSpec, ...]

    def __post_init__(self) -> None:
        names = Counter(node.name for node in self.nodes)
        duplicated = [name for name, count in names.items() if count > 1]
        if duplicated:
            raise ValueError(f"duplicate node names: {', '.join(duplicated[:5])}")

    @property
    def gpu_count(self) -> int:
        return sum(node.gpu_count for node in self.nodes)

    def gpu_models(self) -> Counter[str]:
        """GPUs per model."""
        counts: Counter[str] = Counter()
        for node in self.nodes:
            if node.gpu_model:
                counts[node.gpu_model] += node.gpu_count
        return counts
