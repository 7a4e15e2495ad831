"""How GPUs are named as Kubernetes extended resources: the NVIDIA device plugin's names.

Why one module: these names are a contract between parties that never call each other -- what a
node advertises (the fake nodes of `gpuparley cluster up`, `deploy/cluster/nodes.py`), what a
pod asks for (the workload submitter and the negotiator's host pods), and what the market
controller checks the host's nodes against and counts as a GPU pod. Each side reads the names
from here, so they cannot drift apart.

What a node advertises, per sharing mode (the device plugin's defaults):

* ``exclusive``: ``nvidia.com/gpu = gpu_count``;
* ``timeslice``: ``nvidia.com/gpu = gpu_count * replicas`` (time-slicing renames nothing by
  default: each replica is one more ``nvidia.com/gpu``);
* ``mig`` (mixed strategy): one resource per profile, ``nvidia.com/mig-<profile> = count``
  summed over the node's GPUs (e.g. ``nvidia.com/mig-3g.40gb``).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from gpuparley.envs.market.messages import ResourceItem
    from gpuparley.envs.topology import NodeSpec

NVIDIA_PREFIX = "nvidia.com/"  # every resource below (admission policies match on it)
GPU_RESOURCE = f"{NVIDIA_PREFIX}gpu"
MIG_RESOURCE_PREFIX = f"{NVIDIA_PREFIX}mig-"

Sharing = Literal["exclusive", "mig", "timeslice"]
# One entry per GPU of a node: its MIG instances as (profile, start slice).
MigLayout = tuple[tuple[tuple[str, int], ...], ...]


def mig_resource(profile: str) -> str:
    """The resource of one MIG instance of `profile` (mixed strategy)."""
    return f"{MIG_RESOURCE_PREFIX}{profile}"


def is_gpu_resource(name: str) -> bool:
    """Whether a resource name is a whole GPU, a time-slice replica or a MIG instance."""
    return name == GPU_RESOURCE or name.startswith(MIG_RESOURCE_PREFIX)


def lease_item_limits(item: ResourceItem) -> dict[str, str]:
    """What one leased pod may ask the kubelet for: the lease's GPUs, MIG instance or one
    time-slice replica (a share is one replica; its milli-GPU is the market's bookkeeping)."""
    if item.gpu_kind == "mig":
        return {mig_resource(str(item.mig_profile)): "1"}
    if item.gpu_kind in ("whole", "share"):
        return {GPU_RESOURCE: str(max(len(item.gpus), 1))}
    return {}


def node_resources(
    sharing: Sharing, gpu_count: int, replicas: int = 1, mig_layout: MigLayout = ()
) -> dict[str, int]:
    """Extended resources a node advertises (what the device plugin would report)."""
    if gpu_count == 0:
        return {}
    if sharing == "exclusive":
        return {GPU_RESOURCE: gpu_count}
    if sharing == "timeslice":
        return {GPU_RESOURCE: gpu_count * replicas}
    counts = Counter(profile for gpu in mig_layout for profile, _ in gpu)
    return {mig_resource(p): n for p, n in sorted(counts.items())}


def env_sharing(node: NodeSpec) -> Sharing:
    """The sharing mode of a simulator node (``gpuparley.envs.topology.NodeSpec``)."""
    return str(getattr(node.mode, "value", node.mode))  # type: ignore[return-value]


def env_mig_layout(node: NodeSpec) -> MigLayout:
    """A simulator node's MIG layout, per GPU: the simulator gives one layout that every GPU of
    the node carries. Empty unless the node is in MIG mode."""
    if env_sharing(node) != "mig":
        return ()
    one = tuple((str(profile), int(start)) for profile, start in node.mig_layout)
    return tuple(one for _ in range(node.gpu_count))


def env_node_resources(node: NodeSpec) -> dict[str, int]:
    """Extended resources the node of a scenario must advertise on a real cluster."""
    return node_resources(
        env_sharing(node), int(node.gpu_count), int(node.replicas), env_mig_layout(node)
    )
