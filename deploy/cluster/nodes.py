"""Fake GPU nodes for the local host plane: Node objects that KWOK keeps Ready and that carry the
GPU resources and labels of real NVIDIA nodes, so the real kube-scheduler binds pods against them.

Why its own small dataclass (:class:`FakeNode`) rather than the simulator's node: a cluster can
come up from three sources -- the built-in three-node topology, a plain ``nodes:`` YAML list, or a
``gpuparley.envs`` scenario (translated by :func:`fake_node_from_env`) -- and all three end in
:func:`node_manifest`, the one translation of a node into a Kubernetes Node.

GPUs are advertised the way the NVIDIA device plugin and GPU Feature Discovery (GFD) do on real
nodes, so the real kube-scheduler does real extended-resource accounting. The resources are named
by ``deploy/gpu_resources.py`` (shared with the market controller); the GFD labels are made here:

* ``exclusive``: label ``nvidia.com/gpu.sharing-strategy=none``.
* ``timeslice``: labels ``nvidia.com/gpu.replicas`` and
  ``nvidia.com/gpu.sharing-strategy=time-slicing``, product suffixed ``-SHARED``.
* ``mig`` (mixed strategy): labels ``nvidia.com/mig.strategy=mixed`` and ``nvidia.com/mig.config``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpuparley.deploy.gpu_resources import (
    MigLayout,
    Sharing,
    env_mig_layout,
    env_sharing,
    node_resources,
)

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
MIG_PROFILE_RE = re.compile(r"^\d+g\.\d+gb(\+me)?$")

# GPU memory per model in MiB, for the GFD label nvidia.com/gpu.memory (informative only).
GPU_MEMORY_MIB = {
    "A100-80GB": 81920,
    "A100-40GB": 40960,
    "H100-80GB": 81559,
    "L4": 23034,
    "T4": 15360,
    "A10G": 23028,
    "A10": 23028,
    "V100M16": 16384,
    "V100M32": 32768,
    "P100": 16384,
}
GPU_PRODUCT = {
    "A100-80GB": "NVIDIA-A100-SXM4-80GB",
    "A100-40GB": "NVIDIA-A100-SXM4-40GB",
    "H100-80GB": "NVIDIA-H100-80GB-HBM3",
    "L4": "NVIDIA-L4",
    "T4": "Tesla-T4",
    "A10G": "NVIDIA-A10G",
    "A10": "NVIDIA-A10",
    "V100M16": "Tesla-V100-SXM2-16GB",
    "V100M32": "Tesla-V100-SXM2-32GB",
    "P100": "Tesla-P100-PCIE-16GB",
}


@dataclass(frozen=True)
class FakeNode:
    """One fake GPU node of the host plane.

    Attributes:
        name: Kubernetes node name (DNS-1123).
        cpu_milli: allocatable CPU in millicores.
        memory_mib: allocatable memory in MiB.
        gpu_model: short model name (e.g. ``A100-80GB``); mapped to a GFD product label.
        gpu_count: physical GPUs on the node.
        sharing: ``exclusive`` | ``mig`` | ``timeslice``.
        mig_layout: for ``mig``: one entry per GPU, each a list of ``(profile, start_slice)``
            such as ``[("1g.10gb", 0), ..., ("1g.10gb", 6)]``.
        replicas: for ``timeslice``: how many pods may share each GPU.
        max_pods: the node's ``pods`` capacity.
        labels: extra node labels.
    """

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_model: str
    gpu_count: int
    sharing: Sharing = "exclusive"
    mig_layout: MigLayout = ()
    replicas: int = 1
    max_pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sharing not in ("exclusive", "mig", "timeslice"):
            raise ValueError(f"node {self.name}: unknown sharing mode {self.sharing!r}")
        if self.sharing == "mig":
            if len(self.mig_layout) != self.gpu_count:
                raise ValueError(
                    f"node {self.name}: mig_layout has {len(self.mig_layout)} GPUs, "
                    f"gpu_count is {self.gpu_count}"
                )
            for gpu in self.mig_layout:
                for profile, _start in gpu:
                    if not MIG_PROFILE_RE.match(profile):
                        raise ValueError(f"node {self.name}: bad MIG profile {profile!r}")
        if self.sharing == "timeslice" and self.replicas < 1:
            raise ValueError(f"node {self.name}: replicas must be >= 1")

    def gpu_resources(self) -> dict[str, int]:
        """Extended resources this node advertises (what the device plugin would report)."""
        return node_resources(self.sharing, self.gpu_count, self.replicas, self.mig_layout)


def gpu_labels(node: FakeNode) -> dict[str, str]:
    """GFD-style labels describing the node's GPUs."""
    if node.gpu_count == 0:
        return {}
    product = GPU_PRODUCT.get(node.gpu_model, re.sub(r"[^A-Za-z0-9._-]", "-", node.gpu_model))
    labels = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(node.gpu_count),
        "nvidia.com/gpu.family": "gpuparley-sim",
    }
    if node.gpu_model in GPU_MEMORY_MIB:
        labels["nvidia.com/gpu.memory"] = str(GPU_MEMORY_MIB[node.gpu_model])
    if node.sharing == "timeslice":
        labels["nvidia.com/gpu.product"] = f"{product}-SHARED"
        labels["nvidia.com/gpu.replicas"] = str(node.replicas)
        labels["nvidia.com/gpu.sharing-strategy"] = "time-slicing"
    elif node.sharing == "mig":
        profiles = sorted({p for gpu in node.mig_layout for p, _ in gpu})
        uniform = len(profiles) == 1 and all(
            len(g) == len(node.mig_layout[0]) for g in node.mig_layout
        )
        labels["nvidia.com/mig.strategy"] = "mixed"
        labels["nvidia.com/mig.capable"] = "true"
        labels["nvidia.com/mig.config"] = f"all-{profiles[0]}" if uniform else "custom"
        labels["nvidia.com/mig.config.state"] = "success"
    else:
        labels["nvidia.com/gpu.sharing-strategy"] = "none"
    return labels


def node_manifest(node: FakeNode) -> dict[str, Any]:
    """The Kubernetes Node object (a plain dict) for one fake node, status included.

    The annotation ``kwok.x-k8s.io/node: fake`` hands the node to KWOK; capacity and allocatable
    are equal (no system reservations are simulated).
    """
    resources = {
        "cpu": f"{node.cpu_milli}m",
        "memory": f"{node.memory_mib}Mi",
        "pods": str(node.max_pods),
        "ephemeral-storage": "1Ti",
        **{k: str(v) for k, v in node.gpu_resources().items()},
    }
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "gpuparley.io/sharing": node.sharing,
        **gpu_labels(node),
        **node.labels,
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "phase": "Pending",
        },
    }


def create_nodes(api: Any, fake_nodes: Iterable[FakeNode]) -> list[str]:
    """Create the nodes through a ``kubernetes.client.CoreV1Api`` and make sure their status
    (the GPU capacity) is set, patching ``/status`` if the apiserver dropped it on create."""
    names = []
    for node in fake_nodes:
        body = node_manifest(node)
        created = api.create_node(body=body)
        capacity = (created.status.capacity or {}) if created.status else {}
        if any(k not in capacity for k in body["status"]["capacity"]):
            api.patch_node_status(node.name, {"status": body["status"]})
        names.append(node.name)
    return names


def mig_uniform(profile: str, slices: int, gpus: int) -> MigLayout:
    """A layout with ``slices`` instances of ``profile`` on each of ``gpus`` GPUs."""
    size = int(profile.split("g", 1)[0])
    return tuple(tuple((profile, i * size) for i in range(slices)) for _ in range(gpus))


def default_fake_nodes() -> list[FakeNode]:
    """The built-in topology used when no scenario file exists: one node per sharing mode."""
    return [
        FakeNode("gpu-a100-excl-0", 96_000, 1_000_000, "A100-80GB", 8, "exclusive"),
        FakeNode(
            "gpu-a100-mig-0",
            96_000,
            1_000_000,
            "A100-80GB",
            8,
            "mig",
            mig_layout=mig_uniform("1g.10gb", 7, 8),
        ),
        FakeNode("gpu-l4-ts-0", 48_000, 192_000, "L4", 4, "timeslice", replicas=4),
    ]


def uniform_gpu_nodes(count: int, gpus_per_node: int = 8, prefix: str = "gpu") -> list[FakeNode]:
    """``count`` identical exclusive A100 nodes (for load tests such as the bind-rate benchmark)."""
    return [
        FakeNode(f"{prefix}-{i:04d}", 96_000, 1_000_000, "A100-80GB", gpus_per_node, max_pods=110)
        for i in range(count)
    ]


def _fake_node_from_mapping(item: dict[str, Any], name: str) -> FakeNode:
    gpu = item.get("gpu") if isinstance(item.get("gpu"), dict) else {}
    layout = item.get("mig_layout") or gpu.get("mig_layout") or ()
    return FakeNode(
        name=name,
        cpu_milli=int(item.get("cpu_milli", int(float(item.get("cpu", 32)) * 1000))),
        memory_mib=int(item.get("memory_mib", int(float(item.get("memory_gib", 256)) * 1024))),
        gpu_model=str(item.get("gpu_model", gpu.get("model", "A100-80GB"))),
        gpu_count=int(item.get("gpu_count", gpu.get("count", 0))),
        sharing=item.get("sharing", gpu.get("sharing", "exclusive")),
        mig_layout=tuple(tuple((str(p), int(s)) for p, s in g) for g in layout),
        replicas=int(item.get("replicas", gpu.get("replicas", 1))),
        max_pods=int(item.get("max_pods", 110)),
        labels={str(k): str(v) for k, v in (item.get("labels") or {}).items()},
    )


def fake_nodes_from_mappings(items: Sequence[dict[str, Any]]) -> list[FakeNode]:
    """Fake nodes from plain mappings (as in a scenario YAML ``nodes:`` list).

    Each mapping has the :class:`FakeNode` fields; ``count: N`` repeats it with names
    ``<name>-0 .. <name>-(N-1)``; ``cpu`` (cores) and ``memory_gib`` are accepted as alternatives.
    """
    fake_nodes: list[FakeNode] = []
    for i, item in enumerate(items):
        base = str(item.get("name", f"node-{i}"))
        count = int(item.get("count", 1))
        if count == 1 and "count" not in item:
            fake_nodes.append(_fake_node_from_mapping(item, base))
        else:
            fake_nodes.extend(_fake_node_from_mapping(item, f"{base}-{j}") for j in range(count))
    return fake_nodes


def fake_node_from_env(node: Any) -> FakeNode:
    """Translate one ``gpuparley.envs.topology.NodeSpec`` (the simulator's node) into a
    :class:`FakeNode` (sharing mode and per-GPU MIG layout as ``deploy/gpu_resources.py`` reads
    them); its free-form labels are kept under the ``gpuparley.io/`` prefix."""
    return FakeNode(
        name=node.name,
        cpu_milli=int(node.cpu_milli),
        memory_mib=int(node.memory_mib),
        gpu_model=node.gpu_model or "",
        gpu_count=int(node.gpu_count),
        sharing=env_sharing(node),
        mig_layout=env_mig_layout(node),
        replicas=int(node.replicas),
        labels={f"gpuparley.io/{k}": str(v) for k, v in (node.labels or {}).items()},
    )


def _load_env_scenario(name_or_path: str | Path) -> Any:
    from gpuparley.envs.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(name_or_path)
    except ScenarioError as exc:
        raise ValueError(str(exc)) from None


def fake_nodes_from_scenario(name_or_path: str | Path | None = None) -> list[FakeNode]:
    """Fake nodes for a scenario.

    * ``None`` or ``"default"``: the built-in topology (:func:`default_fake_nodes`).
    * a YAML file with a top-level ``nodes:`` list: plain fake nodes
      (see :func:`fake_nodes_from_mappings`).
    * otherwise a scenario name (``configs/scenarios/<name>.yaml``) or path, loaded and validated
      by ``gpuparley.envs.scenario.load_scenario``; its cluster's nodes are translated with
      :func:`fake_node_from_env`. An unknown name is an error (ValueError), not a silent default.
    """
    if name_or_path is None or str(name_or_path) == "default":
        return default_fake_nodes()
    path = Path(name_or_path)
    if path.is_file():
        doc = yaml.safe_load(path.read_text()) or {}
        if isinstance(doc, dict) and isinstance(doc.get("nodes"), list):
            return fake_nodes_from_mappings(doc["nodes"])
    scenario = _load_env_scenario(name_or_path)
    return [fake_node_from_env(node) for node in scenario.build_cluster().nodes]


def scenario_agent_names(name_or_path: str | Path | None) -> list[str]:
    """The agent names a scenario declares (empty for the built-in default and plain node
    files), so ``cluster up --scenario S`` can give each of them a control plane."""
    if name_or_path is None or str(name_or_path) == "default":
        return []
    path = Path(name_or_path)
    if path.is_file():
        doc = yaml.safe_load(path.read_text()) or {}
        if isinstance(doc, dict) and "nodes" in doc and "cluster" not in doc:
            return []
    return [a.name for a in _load_env_scenario(name_or_path).agents]
