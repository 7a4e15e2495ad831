"""The openb GPU-sharing trace format (Alibaba, ATC'23 FGD paper) as `NodeSpec`s and `Job`s.

Any file in the openb format loads: the bundled development split (package data, under
`envs.resources.traces_dir() / "openb"`, see its README), or a user's pod list and node list by
path (`workload.trace.path` and `cluster.trace.nodes` in a scenario, `--trace` on the CLI).

**Columns.** A pod list needs `name, cpu_milli, memory_mib, num_gpu, gpu_milli`; the other
columns of the openb format are optional, and a file without them gets these defaults:

=================  ========================================================================
`gpu_spec`         empty: any GPU model
`qos`              `BE` (best effort)
`pod_phase`        `Running`
`creation_time`    0: every pod arrives at once, in file order
`deletion_time`    `creation_time` + `default_lifetime` (a scenario field; one day)
=================  ========================================================================

(`scheduled_time` is not used.) A node list needs `sn, cpu_milli, memory_mib, gpu, model`
(`model` empty on CPU-only nodes, a catalogue model otherwise). A missing required column, a
value that is not a non-negative integer or a pod asking for more than a whole GPU's share is a
`TraceFormatError` naming the file, the row and the column.

Modelling choices, each explicit because the trace does not decide them:

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
  `arrival_scale` then multiplies the arrivals alone: below 1 it packs the same pods, with the
  same lifetimes, into a shorter arrival window, so the cluster carries more of them at once
  (the offered load of `envs.load` grows about as 1 / arrival_scale). It is how a replay is
  made to load a cluster without changing any pod.
* **Slices** - `offset` skips that many pods (in creation order, after `phases`) before `limit`
  takes the next ones, so a replay can start anywhere in the trace. `sample_nodes` keeps a share
  of the nodes with the trace's node mix (its docstring says how); pods and nodes are sliced
  independently, and a scenario states both.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gpuparley.envs import mig
from gpuparley.envs.jobs import GPURequest, Job, PodDemand, QoS
from gpuparley.envs.resources import traces_dir
from gpuparley.envs.topology import NodeSpec, SharingMode

GPU_NODE_FILE = "openb_node_list_gpu_node.csv"
ALL_NODE_FILE = "openb_node_list_all_node.csv"
SPLITS = ("dev",)
DEFAULT_REPLICAS = 20
DEFAULT_LIFETIME = 86400.0
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_DEFAULTS = {"gpu_spec": "", "qos": QoS.BE.value, "pod_phase": "Running"}
Fractional = Literal["timeslice", "mig"]


class TraceNotFoundError(FileNotFoundError):
    """A trace file is not where it was looked for."""


class TraceFormatError(ValueError):
    """A trace file is not in the openb format; the message names the file, row and column."""


def openb_dir() -> Path:
    """The folder of the bundled openb trace (or of `GPUPARLEY_TRACES`)."""
    folder = traces_dir() / "openb"
    if not folder.is_dir():
        raise TraceNotFoundError(
            f"no openb trace folder at {folder}; GPUPARLEY_TRACES must name a folder holding "
            "`openb/` (unset it to use the bundled trace)"
        )
    return folder


def split_file(split: str) -> Path:
    """The bundled pod list of a split (`dev`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown openb split {split!r}; available: {', '.join(SPLITS)}")
    return openb_dir() / f"openb_pod_list_{split}.csv"


@dataclass(frozen=True)
class TraceFile:
    """Which file a run replayed, so a result can say so: name, path, rows, sha256."""

    path: Path
    rows: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> TraceFile:
        data = _existing(path).read_bytes()
        rows = max(0, len(data.decode(errors="replace").splitlines()) - 1)
        return cls(path.resolve(), rows, hashlib.sha256(data).hexdigest())

    def describe(self) -> dict[str, str | int]:
        return {
            "file": self.path.name,
            "path": str(self.path),
            "rows": self.rows,
            "sha256": self.sha256,
        }


def _existing(path: Path) -> Path:
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (folder {path.parent} does not exist either)"
        raise TraceNotFoundError(f"trace file {path} does not exist{hint}")
    return path


def check_header(path: Path, required: Iterable[str]) -> list[str]:
    """The file's columns; TraceFormatError naming any required one that is missing."""
    with _existing(path).open(newline="") as handle:
        header = next(csv.reader(handle), [])
    missing = [column for column in required if column not in header]
    if missing:
        raise TraceFormatError(
            f"trace file {path} lacks column(s) {', '.join(missing)} "
            f"(an openb file needs {', '.join(required)}; it has {', '.join(header) or 'none'})"
        )
    return header


def _rows(path: Path, required: tuple[str, ...]) -> Iterable[tuple[int, dict[str, str]]]:
    """(file line number, row) of a CSV whose header has every `required` column."""
    check_header(path, required)
    with path.open(newline="") as handle:
        for index, row in enumerate(csv.DictReader(handle)):
            yield index + 2, row


def _count(path: Path, line: int, row: Mapping[str, str | None], column: str) -> int:
    """A non-negative integer cell, or a TraceFormatError saying where the bad value is."""
    text = (row.get(column) or "").strip()
    if not text.isdigit():
        raise TraceFormatError(
            f"trace file {path}, line {line}, column {column}: {text!r} is not a "
            "non-negative integer"
        )
    return int(text)


def load_openb_nodes(
    mode: SharingMode = SharingMode.TIMESLICE,
    replicas: int = DEFAULT_REPLICAS,
    include_cpu_nodes: bool = False,
    nodes_file: Path | None = None,
    all_nodes_file: Path | None = None,
    fraction: float = 1.0,
) -> list[NodeSpec]:
    """A node list's GPU nodes in the given sharing mode, then optionally the CPU-only nodes of
    the all-node list (defaults: the bundled openb lists); `fraction` < 1 keeps that share of
    each group by `sample_nodes`."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if mode is SharingMode.MIG:
        raise ValueError("openb GPU models do not support MIG; use exclusive or timeslice")
    path = nodes_file or openb_dir() / GPU_NODE_FILE
    labels = {"trace": "openb"}
    nodes = [
        _node(path, line, row, mode, replicas, labels)
        for line, row in _rows(path, NODE_COLUMNS)
        if _count(path, line, row, "gpu") > 0
    ]
    nodes = sample_nodes(nodes, fraction)
    if include_cpu_nodes:
        all_path = all_nodes_file or openb_dir() / ALL_NODE_FILE
        cpu_rows = [
            (line, row)
            for line, row in _rows(all_path, NODE_COLUMNS)
            if _count(all_path, line, row, "gpu") == 0
        ]
        cpu_nodes = [
            NodeSpec(
                name=f"openb-cpu-{i:04d}",
                cpu_milli=_count(all_path, line, row, "cpu_milli"),
                memory_mib=_count(all_path, line, row, "memory_mib"),
                labels={**labels, "openb/sn": row["sn"]},
            )
            for i, (line, row) in enumerate(cpu_rows)
        ]
        nodes += sample_nodes(cpu_nodes, fraction)
    return nodes


def sample_nodes(nodes: list[NodeSpec], fraction: float) -> list[NodeSpec]:
    """A systematic sample of `fraction` of the nodes that keeps the list's node mix.

    The nodes are ordered by shape (GPU model, GPU count, CPU, memory; list order within a
    shape) and `round(fraction x n)` of them (at least one) are taken at evenly spaced
    positions, the middle of each stride. Every shape thus keeps its share of the nodes up to
    rounding (a shape rarer than 1 / fraction keeps one node or none), which a prefix of the
    list would not: openb's node list is not shuffled. The kept nodes stay in list order.
    """
    if fraction >= 1 or not nodes:
        return list(nodes)
    order = sorted(
        range(len(nodes)),
        key=lambda i: (
            nodes[i].gpu_model or "",
            nodes[i].gpu_count,
            nodes[i].cpu_milli,
            nodes[i].memory_mib,
            i,
        ),
    )
    keep = max(1, round(fraction * len(nodes)))
    stride = len(nodes) / keep
    return [nodes[i] for i in sorted(order[int((k + 0.5) * stride)] for k in range(keep))]


def _node(
    path: Path,
    line: int,
    row: Mapping[str, str],
    mode: SharingMode,
    replicas: int,
    labels: dict[str, str],
) -> NodeSpec:
    try:
        return NodeSpec(
            name=row["sn"],
            cpu_milli=_count(path, line, row, "cpu_milli"),
            memory_mib=_count(path, line, row, "memory_mib"),
            gpu_model=row["model"],
            gpu_count=_count(path, line, row, "gpu"),
            mode=mode,
            replicas=replicas if mode is SharingMode.TIMESLICE else 1,
            labels=labels,
        )
    except TraceFormatError:
        raise
    except ValueError as error:  # unknown model, zero CPU, ...
        raise TraceFormatError(f"trace file {path}, line {line}: {error}") from None


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
    return list(agents)[-1]  # point == total up to rounding


@dataclass(frozen=True, slots=True)
class _Pod:
    """One validated row of a pod list (times in trace seconds)."""

    name: str
    cpu_milli: int
    memory_mib: int
    num_gpu: int
    gpu_milli: int
    gpu_spec: tuple[str, ...]
    qos: QoS
    phase: str
    created: int
    deleted: float


def read_pods(path: Path, default_lifetime: float = DEFAULT_LIFETIME) -> list[_Pod]:
    """Every row of an openb pod list, validated, defaults filled in (module docstring)."""
    pods = []
    for line, row in _rows(path, POD_COLUMNS):
        cells = {**POD_DEFAULTS, **{k: v for k, v in row.items() if k and v is not None}}
        num_gpu = _count(path, line, row, "num_gpu")
        gpu_milli = _count(path, line, row, "gpu_milli")
        if num_gpu == 1 and not 0 < gpu_milli <= 1000:
            raise TraceFormatError(
                f"trace file {path}, line {line}, column gpu_milli: a one-GPU pod asks for "
                f"{gpu_milli} milli-GPU; use 1..1000"
            )
        try:
            qos = QoS(cells["qos"])
        except ValueError:
            raise TraceFormatError(
                f"trace file {path}, line {line}, column qos: {cells['qos']!r} is not one of "
                f"{', '.join(q.value for q in QoS)}"
            ) from None
        has_times = "creation_time" in row
        created = _count(path, line, row, "creation_time") if has_times else 0
        deleted = (
            _count(path, line, row, "deletion_time")
            if "deletion_time" in row
            else created + default_lifetime
        )
        pods.append(
            _Pod(
                name=cells["name"],
                cpu_milli=_count(path, line, row, "cpu_milli"),
                memory_mib=_count(path, line, row, "memory_mib"),
                num_gpu=num_gpu,
                gpu_milli=gpu_milli,
                gpu_spec=tuple(m for m in cells["gpu_spec"].split("|") if m),
                qos=qos,
                phase=cells["pod_phase"],
                created=created,
                deleted=deleted,
            )
        )
    return pods


def load_openb_jobs(
    agents: Mapping[str, float],
    path: Path | None = None,
    fractional: Fractional = "timeslice",
    mig_model: str | None = None,
    time_scale: float = 1.0,
    arrival_scale: float = 1.0,
    offset: int = 0,
    limit: int | None = None,
    phases: Iterable[str] | None = None,
    value_per_gpu_hour: float = 2.0,
    value_sigma: float = 0.0,
    seed: int = 0,
    default_lifetime: float = DEFAULT_LIFETIME,
) -> list[Job]:
    """The pods of an openb pod list (default: the bundled dev split) as jobs, sorted by
    arrival with ids 0..n-1 (slicing and scaling: module docstring)."""
    if time_scale <= 0:
        raise ValueError("time_scale must be > 0")
    if arrival_scale <= 0:
        raise ValueError("arrival_scale must be > 0")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    keep = set(phases) if phases is not None else None
    pods = [
        pod
        for pod in read_pods(path or split_file("dev"), default_lifetime)
        if keep is None or pod.phase in keep
    ]
    pods.sort(key=lambda pod: pod.created)  # stable: ties keep file order
    pods = pods[offset:]
    if limit is not None:
        pods = pods[:limit]
    start = pods[0].created if pods else 0
    mig_family = (
        tuple(m for m, t in mig.PROFILES.items() if t is mig.profiles_of(mig_model))
        if mig_model
        else ()
    )
    noise = np.exp(value_sigma * np.random.default_rng(seed).standard_normal(len(pods)))
    jobs = []
    for job_id, pod in enumerate(pods):
        request = map_gpu_request(pod.num_gpu, pod.gpu_milli, fractional, mig_model)
        duration = max(1.0, pod.deleted - pod.created) * time_scale
        work_hours = duration * request.gpu_equivalent / 3600
        jobs.append(
            Job(
                id=job_id,
                owner=assign_agent(pod.name, agents),
                pod=PodDemand(request, pod.cpu_milli, pod.memory_mib),
                duration=duration,
                arrival=(pod.created - start) * time_scale * arrival_scale,
                allowed_models=mig_family if request.kind == "mig" else pod.gpu_spec,
                value=value_per_gpu_hour * work_hours * float(noise[job_id]),
                deadline=math.inf,
                qos=pod.qos,
                name=pod.name,
                tags={"class": "openb", "source": "openb", "phase": pod.phase},
            )
        )
    return jobs
