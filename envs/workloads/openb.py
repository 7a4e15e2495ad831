"""The openb GPU-sharing trace (Alibaba, ATC'23 FGD paper) as `NodeSpec`s and `Job`s.

The trace lives in `gpuparley.paths.traces_dir() / "openb"` (move it with `GPUPARLEY_TRACES`); see
its README. Modelling choices, each explicit because the trace does not decide them:

* **GPU requests** - `map_gpu_request`: `num_gpu == 0` is CPU-only; a whole GPU (`gpu_milli ==
  1000`) or several GPUs is `whole`; a fraction of one GPU is a time-slice `share` of `gpu_milli`,
  or, when the scenario sends fractional pods to MIG hardware, the smallest MIG profile covering
  the share by compute and memory (`mig.profile_for_share`) on a named MIG model.
* **Nodes** - every GPU node's sharing mode comes from the scenario; the default is `timeslice`
  with 20 replicas, since the smallest share in the trace is 50 milli (20 per GPU) and openb GPUs
  host several sharing pods. The placement engine also keeps the shares on one GPU <= 1000 milli.
  None of openb's models supports MIG. CPU-only nodes (optional) come from the all-node file; that
  file numbers nodes differently, so they are renamed `openb-cpu-XXXX` (original name in the
  `openb/sn` label) and appended after the GPU nodes, which keep the GPU-node file's names.
* **Lifetimes** - `duration = deletion_time - creation_time` (at least 1 s). Pods that ended
  `Pending` or `Failed` still carry such a lifetime (a Pending pod's is how long it waited before
  deletion); all pods are kept by default, as the FGD experiment replays them, and the phase is
  kept in the `phase` tag so an analysis can filter. `phases=` restricts the load.
* **Time** - `arrival = creation_time` shifted so the first pod arrives at 0, and both arrival and
  duration are multiplied by `time_scale` (a change of clock: the load's shape is unchanged).
* **Tenants** - the trace has none. `assign_agent` hashes the pod name (BLAKE2b) to a point in
  [0, 1) and picks the agent whose slice of the cumulative weights holds it: deterministic, the
  same for every seed and for any `limit`, and independent of pod order.
* **Value** - `value_per_gpu_hour * GPU-hours of work` (GPU-equivalents x lifetime), times a
  lognormal noise `exp(value_sigma * N(0, 1))` drawn from `seed` in pod order (`value_sigma=0`
  gives none). CPU-only pods hold no GPU and are worth 0 in the GPU market.
* **Deadlines** - the trace has none: `deadline` stays infinite, so a pod keeps its value however
  late it finishes.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import numpy as np

from gpuparley.envs import mig
from gpuparley.envs.jobs import GPURequest, Job, PodDemand, QoS
from gpuparley.envs.topology import NodeSpec, SharingMode
from gpuparley.paths import traces_dir

GPU_NODE_FILE = "openb_node_list_gpu_node.csv"
ALL_NODE_FILE = "openb_node_list_all_node.csv"
SPLITS = ("dev",)
DEFAULT_REPLICAS = 20
Fractional = Literal["timeslice", "mig"]


class TraceNotFoundError(FileNotFoundError):
    """The trace files are not where `gpuparley.paths.traces_dir()` points."""


def openb_dir() -> Path:
    """The folder of the openb trace; a clear error when it is missing."""
    folder = traces_dir() / "openb"
    if not (folder / GPU_NODE_FILE).is_file():
        raise TraceNotFoundError(
            f"openb trace not found at {folder} (expected {GPU_NODE_FILE} there); "
            "set GPUPARLEY_TRACES to the folder that holds `openb/`"
        )
    return folder


def _rows(path: Path) -> Iterable[dict[str, str]]:
    if not path.is_file():
        raise TraceNotFoundError(
            f"openb trace file {path} is missing; set GPUPARLEY_TRACES to the folder that "
            "holds `openb/`"
        )
    with path.open(newline="") as handle:
        yield from csv.DictReader(handle)


def load_openb_nodes(
    mode: SharingMode = SharingMode.TIMESLICE,
    replicas: int = DEFAULT_REPLICAS,
    include_cpu_nodes: bool = False,
    folder: Path | None = None,
) -> list[NodeSpec]:
    """The trace's 1,213 GPU nodes in the given sharing mode, then optionally its CPU-only nodes."""
    if mode is SharingMode.MIG:
        raise ValueError("openb GPU models do not support MIG; use exclusive or timeslice")
    folder = folder or openb_dir()
    labels = {"trace": "openb"}
    nodes = [
        NodeSpec(
            name=row["sn"],
            cpu_milli=int(row["cpu_milli"]),
            memory_mib=int(row["memory_mib"]),
            gpu_model=row["model"],
            gpu_count=int(row["gpu"]),
            mode=mode,
            replicas=replicas if mode is SharingMode.TIMESLICE else 1,
            labels=labels,
        )
        for row in _rows(folder / GPU_NODE_FILE)
    ]
    if include_cpu_nodes:
        cpu_rows = [row for row in _rows(folder / ALL_NODE_FILE) if int(row["gpu"]) == 0]
        nodes += [
            NodeSpec(
                name=f"openb-cpu-{i:04d}",
                cpu_milli=int(row["cpu_milli"]),
                memory_mib=int(row["memory_mib"]),
                labels={**labels, "openb/sn": row["sn"]},
            )
            for i, row in enumerate(cpu_rows)
        ]
    return nodes


def map_gpu_request(
    num_gpu: int, gpu_milli: int, fractional: Fractional = "timeslice", mig_model: str | None = None
) -> GPURequest:
    """The GPU request of one trace pod (the mapping table is in the module docstring).

    `fractional="mig"` needs `mig_model`, the MIG-capable model whose profiles the share maps to.
    """
    if num_gpu == 0:
        return GPURequest("none")
    if num_gpu > 1 or gpu_milli >= 1000:
        return GPURequest("whole", count=num_gpu)
    if fractional == "timeslice":
        return GPURequest("share", milli=gpu_milli)
    if mig_model is None:
        raise ValueError("mapping fractional pods to MIG needs a MIG-capable `mig_model`")
    profile = mig.lookup_profile(mig_model, mig.profile_for_share(mig_model, gpu_milli))
    return GPURequest("mig", profile=profile.name, compute_slices=profile.compute_slices)


def assign_agent(pod_name: str, agents: Mapping[str, float]) -> str:
    """The tenant of a trace pod: a stable hash of its name, split by the agents' weights."""
    total = sum(agents.values())
    if not agents or total <= 0:
        raise ValueError("assigning trace pods needs at least one agent with weight > 0")
    digest = hashlib.blake2b(pod_name.encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") / 2**64 * total
    cumulative = 0.0
    for name, weight in agents.items():
        cumulative += weight
        if point < cumulative:
            return name
    return next(reversed(agents))  # point == total up to rounding


def load_openb_jobs(
    agents: Mapping[str, float],
    split: str = "dev",
    fractional: Fractional = "timeslice",
    mig_model: str | None = None,
    time_scale: float = 1.0,
    limit: int | None = None,
    phases: Iterable[str] | None = None,
    value_per_gpu_hour: float = 2.0,
    value_sigma: float = 0.0,
    seed: int = 0,
    folder: Path | None = None,
) -> list[Job]:
    """The pods of a trace split as jobs, sorted by arrival with ids 0..n-1."""
    if split not in SPLITS:
        raise ValueError(f"unknown openb split {split!r}; available: {', '.join(SPLITS)}")
    if time_scale <= 0:
        raise ValueError("time_scale must be > 0")
    folder = folder or openb_dir()
    keep = set(phases) if phases is not None else None
    rows = [
        row
        for row in _rows(folder / f"openb_pod_list_{split}.csv")
        if keep is None or row["pod_phase"] in keep
    ]
    rows.sort(key=lambda row: int(row["creation_time"]))  # stable: ties keep trace order
    if limit is not None:
        rows = rows[:limit]
    start = int(rows[0]["creation_time"]) if rows else 0
    mig_family = (
        tuple(m for m, t in mig.PROFILES.items() if t is mig.profiles_of(mig_model))
        if mig_model
        else ()
    )
    noise = np.exp(value_sigma * np.random.default_rng(seed).standard_normal(len(rows)))
    jobs = []
    for job_id, row in enumerate(rows):
        created, deleted = int(row["creation_time"]), int(row["deletion_time"])
        request = map_gpu_request(int(row["num_gpu"]), int(row["gpu_milli"]), fractional, mig_model)
        duration = max(1.0, deleted - created) * time_scale
        spec = tuple(m for m in row["gpu_spec"].split("|") if m)
        work_hours = duration * request.gpu_equivalent / 3600
        jobs.append(
            Job(
                id=job_id,
                owner=assign_agent(row["name"], agents),
                pod=PodDemand(request, int(row["cpu_milli"]), int(row["memory_mib"])),
                duration=duration,
                arrival=(created - start) * time_scale,
                allowed_models=mig_family if request.kind == "mig" else spec,
                value=value_per_gpu_hour * work_hours * float(noise[job_id]),
                deadline=math.inf,
                qos=QoS(row["qos"]),
                name=row["name"],
                tags={"class": "openb", "source": "openb", "phase": row["pod_phase"]},
            )
        )
    return jobs
