"""The placement engine: the live state of every node and GPU, and the only code that changes it.

Every allocator (central scheduler or market) places pods through `ClusterState.bind` and frees
them through `release`, so the physical rules are enforced in exactly one place:

* a pod fits a node only if its CPU, memory and GPU request all fit;
* an `exclusive` GPU holds one pod; a `whole` request on a time-sliced GPU needs the GPU empty and
  then holds all of it;
* a `share` on a time-sliced GPU takes one replica and its milli-GPU; the shares on one GPU sum to
  at most 1000 (a memory-fit rule: time-slicing has no memory isolation, so co-located pods must
  fit together); a `share` on an exclusive GPU holds the whole GPU, as the device plugin does;
* a `mig` request takes one free instance of exactly its profile; a GPU's layout changes only
  while the GPU is empty, and the GPU is then down for the configured downtime;
* binding is atomic: a call that places several pods either places all of them or none.

Node-level summaries (free CPU, memory, whole GPUs, largest free share, free MIG instances per
profile) are kept in numpy arrays so that a scheduler can filter thousands of nodes in one
vectorised expression instead of a Python loop.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gpuparley.envs import mig
from gpuparley.envs.catalogue import MODEL_NAMES
from gpuparley.envs.few_nodes import FEW_NODES, any_feasible_node, feasible_list, largest
from gpuparley.envs.jobs import GPURequest, Job, PodDemand
from gpuparley.envs.topology import ClusterSpec, SharingMode

FULL_GPU_MILLI = 1000
_MODEL_ID = {name: i for i, name in enumerate(MODEL_NAMES)}


def gpu_shape(request: GPURequest) -> int:
    """The shape a GPU pod has for GPU clustering: k for k whole GPUs, 0 for a share or MIG."""
    return request.count if request.kind == "whole" else 0


class PlacementError(ValueError):
    """A placement that breaks a physical rule; the state is unchanged when it is raised."""


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """Where one pod runs: a node, the GPUs it holds, and for MIG the instance on that GPU."""

    node: int
    gpus: tuple[int, ...] = ()
    instance: int = -1


Binding = tuple[int, PodPlacement]
"""(pod index within its job, placement)."""


def any_node(mask: np.ndarray) -> bool:
    """`mask.any()` for a node mask: `count_nonzero` is one C call, where `any` goes through a
    Python wrapper that costs several times the test on a small cluster."""
    return bool(np.count_nonzero(mask))


class ClusterState:
    """Mutable occupancy of a `ClusterSpec`, with the invariants of the module docstring."""

    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        nodes = spec.nodes
        self.node_count = len(nodes)
        counts = np.array([n.gpu_count for n in nodes], dtype=np.int64)
        self.node_first_gpu = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.node_gpu_count = counts
        self.gpu_count = int(counts.sum())
        self.gpu_node = np.repeat(np.arange(self.node_count), counts)
        self.node_model_id = np.array(
            [_MODEL_ID[n.gpu_model] if n.gpu_model else -1 for n in nodes], dtype=np.int64
        )
        self.node_is_timeslice = np.array([n.mode is SharingMode.TIMESLICE for n in nodes])
        self.node_is_mig = np.array([n.mode is SharingMode.MIG and n.gpu_count > 0 for n in nodes])
        self.gpu_model_name = [nodes[int(n)].gpu_model or "" for n in self.gpu_node]
        self.gpu_is_mig = self.node_is_mig[self.gpu_node] if self.gpu_count else np.zeros(0, bool)
        self.gpu_replicas = np.array(
            [nodes[int(n)].replicas if self.node_is_timeslice[n] else 1 for n in self.gpu_node],
            dtype=np.int64,
        )

        self.cpu_free = np.array([n.cpu_milli for n in nodes], dtype=np.int64)
        self.mem_free = np.array([n.memory_mib for n in nodes], dtype=np.int64)
        self.gpu_used_milli = np.zeros(self.gpu_count, dtype=np.int64)
        self.gpu_used_slots = np.zeros(self.gpu_count, dtype=np.int64)
        self.gpu_down_until = np.zeros(self.gpu_count, dtype=np.float64)
        self.gpu_holders: list[list[int]] = [[] for _ in range(self.gpu_count)]
        self.mig_used_slices = np.zeros(self.gpu_count, dtype=np.int64)
        self.node_free_gpus = np.where(self.node_is_mig, 0, counts).astype(np.int64)
        self.node_max_free_milli = np.where(
            self.node_is_mig | (counts == 0), 0, FULL_GPU_MILLI
        ).astype(np.int64)
        # GPU pods on each node by `gpu_shape` (column); what GPU clustering scores nodes by.
        self.node_gpu_pods = np.zeros((self.node_count, int(counts.max(initial=0)) + 1), np.int64)

        # Python copies of the fixed per-node and per-GPU facts: binding reads them one entry at
        # a time, and indexing a list costs a fraction of indexing a numpy array.
        self._gpu_range = [
            range(first, first + count)
            for first, count in zip(self.node_first_gpu.tolist(), counts.tolist(), strict=True)
        ]
        self._gpu_node = self.gpu_node.tolist()
        self._gpu_is_mig = self.gpu_is_mig.tolist()
        self._gpu_replicas = self.gpu_replicas.tolist()
        self._node_is_timeslice = self.node_is_timeslice.tolist()
        self._node_model = [n.gpu_model for n in nodes]

        self.mig_layout: dict[int, list[mig.Instance]] = {}
        self.mig_holder: dict[int, list[int]] = {}
        self.node_mig_free: dict[str, np.ndarray] = {}
        for node_index, node in enumerate(nodes):
            if self.node_is_mig[node_index]:
                for g in self._gpus_of(node_index):
                    self._install_layout(g, list(node.mig_layout))

        self.holdings: dict[int, list[Binding]] = {}
        self.allocated_milli = 0.0
        self.version = 0  # bumped by every change, so callers can cache derived answers
        self.node_changes = np.zeros(self.node_count, dtype=np.int64)  # the same, per node
        self._model_masks: dict[tuple[str, ...], np.ndarray] = {}
        self._fit_cache: dict[int, bool] = {}  # by demand number, see `_number_demand`
        self._demands: dict[tuple[PodDemand, tuple[str, ...]], int] = {}
        self._demand_numbers: dict[int, tuple[Job, int]] = {}
        self._fit_cache_version = -1
        self._most_free: tuple[int, int] | None = None  # (GPUs, milli-GPU), see `_might_fit`

    # ----------------------------------------------------------------- queries
    def _gpus_of(self, node: int) -> range:
        return self._gpu_range[node]

    def gpus_of(self, node: int) -> range:
        """Global indices of a node's GPUs."""
        return self._gpus_of(node)

    def model_mask(self, allowed_models: tuple[str, ...]) -> np.ndarray:
        """Nodes whose GPU model is allowed (every node when the tuple is empty)."""
        mask = self._model_masks.get(allowed_models)
        if mask is None:
            if allowed_models:
                ids = [_MODEL_ID[m] for m in allowed_models if m in _MODEL_ID]
                mask = np.isin(self.node_model_id, ids)
            else:
                mask = np.ones(self.node_count, dtype=bool)
            self._model_masks[allowed_models] = mask
        return mask

    def feasible_nodes(self, pod: PodDemand, allowed_models: tuple[str, ...] = ()) -> np.ndarray:
        """Boolean mask of nodes where one pod of this demand fits right now (`feasible_mask`;
        on a few nodes worked out node by node, `few_nodes`)."""
        if self.node_count <= FEW_NODES:
            return np.array(feasible_list(self, pod, allowed_models), dtype=bool)
        return self.feasible_mask(pod, allowed_models)

    def feasible_mask(self, pod: PodDemand, allowed_models: tuple[str, ...] = ()) -> np.ndarray:
        """`feasible_nodes`, vectorised over every node."""
        fits = (self.cpu_free >= pod.cpu_milli) & (self.mem_free >= pod.memory_mib)
        request = pod.gpu
        if request.kind == "none":
            return fits
        fits &= self.model_mask(allowed_models)
        if request.kind == "whole":
            return fits & (self.node_free_gpus >= request.count)
        if request.kind == "share":
            shared = self.node_is_timeslice & (self.node_max_free_milli >= request.milli)
            exclusive_whole = ~self.node_is_timeslice & (self.node_free_gpus >= 1)
            return fits & (shared | exclusive_whole)
        free = self.node_mig_free.get(request.profile or "")
        if free is None:
            return np.zeros(self.node_count, dtype=bool)
        return fits & (free > 0)

    def can_fit_somewhere(self, job: Job) -> bool:
        """Whether one pod of the job fits any node now (cached until the state changes, and
        shared by jobs with the same demand)."""
        if self._fit_cache_version != self.version:
            self._fit_cache.clear()
            self._fit_cache_version = self.version
            self._most_free = None
        entry = self._demand_numbers.get(id(job))
        if entry is None or entry[0] is not job:
            entry = self._number_demand(job)
        key = entry[1]
        answer = self._fit_cache.get(key)
        if answer is None:
            answer = self._fit_cache[key] = self._might_fit(job.pod.gpu) and self.any_feasible_node(
                job.pod, job.allowed_models
            )
        return answer

    def any_feasible_node(self, pod: PodDemand, allowed_models: tuple[str, ...] = ()) -> bool:
        """`feasible_nodes(pod, allowed_models).any()`."""
        if self.node_count > FEW_NODES:
            return any_node(self.feasible_mask(pod, allowed_models))
        return any_feasible_node(self, pod, allowed_models)

    def _number_demand(self, job: Job) -> tuple[Job, int]:
        """(job, one number per distinct (pod demand, allowed models)), remembered by the job
        object's id: hashing a demand costs more than looking up the fit check it keys. An
        entry holds its job, so the id cannot be reused while remembered."""
        number = self._demands.setdefault((job.pod, job.allowed_models), len(self._demands))
        entry = self._demand_numbers[id(job)] = (job, number)
        return entry

    def _might_fit(self, request: GPURequest) -> bool:
        """A necessary condition for a pod to fit anywhere, from the most free GPUs and the
        largest free share of any node: two numbers per state version instead of a node mask per
        request. A full cluster, common in a market, answers here."""
        if request.kind not in ("whole", "share"):
            return True
        if self._most_free is None:
            self._most_free = (largest(self.node_free_gpus), largest(self.node_max_free_milli))
        gpus, milli = self._most_free
        if request.kind == "whole":
            return request.count <= gpus
        return request.milli <= milli or gpus >= 1

    def gpu_fits(self, g: int, request: GPURequest) -> bool:
        """Whether GPU `g` (not MIG) can take this whole or share request right now."""
        if self._gpu_is_mig[g] or self.gpu_down_until[g] > 0:
            return False
        if request.kind == "share" and self._node_is_timeslice[self._gpu_node[g]]:
            return (
                self.gpu_used_slots[g] < self._gpu_replicas[g]
                and self.gpu_used_milli[g] + request.milli <= FULL_GPU_MILLI
            )
        return self.gpu_used_milli[g] == 0 and self.gpu_used_slots[g] == 0

    def free_instances(self, node: int, profile: str) -> list[tuple[int, int]]:
        """(gpu, instance index) of every free MIG instance of `profile` on a node."""
        found = []
        for g in self._gpus_of(node):
            if self.gpu_down_until[g] > 0:
                continue
            for i, (name, _start) in enumerate(self.mig_layout.get(g, ())):
                if name == profile and self.mig_holder[g][i] < 0:
                    found.append((g, i))
        return found

    def candidate_placements(self, node: int, pod: PodDemand) -> list[PodPlacement]:
        """Every distinct way one pod fits on a node, GPUs chosen lowest-index first.

        For `whole` requests the choice of which free GPUs is immaterial to the physics, so one
        placement is returned; for shares and MIG every GPU / instance is a candidate, which is
        what packing-aware schedulers score.
        """
        if self.cpu_free[node] < pod.cpu_milli or self.mem_free[node] < pod.memory_mib:
            return []
        request = pod.gpu
        if request.kind == "none":
            return [PodPlacement(node)]
        if request.kind == "mig":
            return [
                PodPlacement(node, (g,), i)
                for g, i in self.free_instances(node, request.profile or "")
            ]
        if request.kind == "whole":  # the first `count` GPUs that fit (asked one by one)
            chosen: list[int] = []
            for g in self._gpus_of(node):
                if self.gpu_fits(g, request):
                    chosen.append(g)
                    if len(chosen) == request.count:
                        return [PodPlacement(node, tuple(chosen))]
            return []
        return [PodPlacement(node, (g,)) for g in self._gpus_of(node) if self.gpu_fits(g, request)]

    def first_fit(self, pod: PodDemand, node: int) -> PodPlacement | None:
        """The lowest-index placement of one pod on a node, or None."""
        candidates = self.candidate_placements(node, pod)
        return candidates[0] if candidates else None

    # ----------------------------------------------------------------- changes
    def bind(self, job: Job, bindings: Sequence[Binding]) -> None:
        """Place pods of `job`; all of them or none (raises PlacementError, state unchanged)."""
        held = self.holdings.get(job.id, [])
        taken = {pod for pod, _ in held}
        applied: list[Binding] = []
        try:
            for pod_index, placement in bindings:
                if not 0 <= pod_index < job.pods or pod_index in taken:
                    raise PlacementError(
                        f"job {job.id}: pod index {pod_index} is out of range or already placed"
                    )
                self._apply(job, placement)
                applied.append((pod_index, placement))
                taken.add(pod_index)
        except PlacementError:
            for _pod, placement in reversed(applied):
                self._undo(job, placement)
            raise
        self.holdings[job.id] = [*held, *applied]
        self.version += 1

    def release(self, job: Job) -> list[Binding]:
        """Free everything `job` holds; returns what it held."""
        held = self.holdings.pop(job.id, [])
        for _pod, placement in reversed(held):
            self._undo(job, placement)
        self.version += 1
        return held

    def relayout(self, g: int, layout: Sequence[mig.Instance], down_until: float) -> None:
        """Change an empty MIG GPU's layout; it is unusable until `down_until`."""
        if not self.gpu_is_mig[g]:
            raise PlacementError(f"GPU {g} is not in MIG mode")
        if any(holder >= 0 for holder in self.mig_holder[g]):
            raise PlacementError(f"GPU {g} has running instances; a MIG re-layout needs it empty")
        try:
            mig.validate_layout(self.gpu_model_name[g], list(layout))
        except ValueError as error:
            raise PlacementError(str(error)) from None
        self._uninstall_layout(g)
        self._install_layout(g, list(layout))
        self._set_down(g, down_until)

    def finish_relayout(self, g: int) -> None:
        """Bring a re-laid-out GPU back into service."""
        self._set_down(g, 0.0)

    def _set_down(self, g: int, until: float) -> None:
        self.version += 1
        self.node_changes[self._gpu_node[g]] += 1
        was_down = self.gpu_down_until[g] > 0
        self.gpu_down_until[g] = until
        is_down = until > 0
        if was_down != is_down:
            node = int(self.gpu_node[g])
            delta = -1 if is_down else 1
            for name, _start in self.mig_layout[g]:
                self.node_mig_free[name][node] += delta

    def _install_layout(self, g: int, layout: list[mig.Instance]) -> None:
        node = int(self.gpu_node[g])
        self.mig_layout[g] = layout
        self.mig_holder[g] = [-1] * len(layout)
        for name, _start in layout:
            self._mig_free_array(name)[node] += 1

    def _uninstall_layout(self, g: int) -> None:
        node = int(self.gpu_node[g])
        for name, _start in self.mig_layout.pop(g, []):
            self.node_mig_free[name][node] -= 1
        self.mig_holder.pop(g, None)

    def _mig_free_array(self, profile: str) -> np.ndarray:
        array = self.node_mig_free.get(profile)
        if array is None:
            array = self.node_mig_free[profile] = np.zeros(self.node_count, dtype=np.int64)
        return array

    def _apply(self, job: Job, placement: PodPlacement) -> None:
        pod = job.pod
        node = placement.node
        if not 0 <= node < self.node_count:
            raise PlacementError(f"job {job.id}: no node {node}")
        if self.cpu_free[node] < pod.cpu_milli or self.mem_free[node] < pod.memory_mib:
            raise PlacementError(f"job {job.id}: not enough CPU or memory on node {node}")
        request = pod.gpu
        gpus = placement.gpus
        if request.kind != "none":
            model = self._node_model[node]
            if model is None or not job.allows(model):
                raise PlacementError(f"job {job.id}: GPU model of node {node} is not allowed")
            expected = request.count if request.kind == "whole" else 1
            if len(gpus) != expected or (expected > 1 and len(set(gpus)) != expected):
                raise PlacementError(f"job {job.id}: needs {expected} distinct GPU(s), got {gpus}")
            gpu_node, gpu_count = self._gpu_node, self.gpu_count
            for g in gpus:
                if not (0 <= g < gpu_count and gpu_node[g] == node):
                    raise PlacementError(f"job {job.id}: GPUs {gpus} are not all on node {node}")
        elif gpus:
            raise PlacementError(f"job {job.id}: a CPU-only pod holds no GPU")

        if request.kind == "mig":
            g = gpus[0]
            holders = self.mig_holder.get(g)
            if (
                holders is None
                or not 0 <= placement.instance < len(holders)
                or self.mig_layout[g][placement.instance][0] != request.profile
                or holders[placement.instance] >= 0
                or self.gpu_down_until[g] > 0
            ):
                raise PlacementError(
                    f"job {job.id}: MIG instance {placement.instance} on GPU {g} is not a free "
                    f"{request.profile}"
                )
            holders[placement.instance] = job.id
            self.mig_used_slices[g] += request.compute_slices
            self.node_mig_free[request.profile or ""][node] -= 1
            self.allocated_milli += request.milli_gpu
        elif request.kind in ("whole", "share"):
            for g in gpus:
                if not self.gpu_fits(g, request):
                    raise PlacementError(f"job {job.id}: GPU {g} cannot take {request.describe()}")
            shared = request.kind == "share" and self._node_is_timeslice[node]
            for g in gpus:
                if shared:
                    self.gpu_used_milli[g] += request.milli
                    self.gpu_used_slots[g] += 1
                else:
                    self.gpu_used_milli[g] = FULL_GPU_MILLI
                    self.gpu_used_slots[g] = self._gpu_replicas[g]
                self.gpu_holders[g].append(job.id)
            self.allocated_milli += request.milli if shared else FULL_GPU_MILLI * len(gpus)
            self._gpus_changed(node, -len(gpus))
        if request.kind != "none":
            self.node_gpu_pods[node, gpu_shape(request)] += 1
        self.node_changes[node] += 1
        self.cpu_free[node] -= pod.cpu_milli
        self.mem_free[node] -= pod.memory_mib

    def _undo(self, job: Job, placement: PodPlacement) -> None:
        pod = job.pod
        node = placement.node
        request = pod.gpu
        if request.kind == "mig":
            g = placement.gpus[0]
            self.mig_holder[g][placement.instance] = -1
            self.mig_used_slices[g] -= request.compute_slices
            self.node_mig_free[request.profile or ""][node] += 1
            self.allocated_milli -= request.milli_gpu
        elif request.kind in ("whole", "share"):
            shared = request.kind == "share" and self._node_is_timeslice[node]
            for g in placement.gpus:
                if shared:
                    self.gpu_used_milli[g] -= request.milli
                    self.gpu_used_slots[g] -= 1
                else:
                    self.gpu_used_milli[g] = 0
                    self.gpu_used_slots[g] = 0
                self.gpu_holders[g].remove(job.id)
            self.allocated_milli -= (
                request.milli if shared else FULL_GPU_MILLI * len(placement.gpus)
            )
            self._gpus_changed(node, len(placement.gpus))
        if request.kind != "none":
            self.node_gpu_pods[node, gpu_shape(request)] -= 1
        self.node_changes[node] += 1
        self.cpu_free[node] += pod.cpu_milli
        self.mem_free[node] += pod.memory_mib

    def _gpus_changed(self, node: int, freed: int) -> None:
        """Bring a node's summary up to date after a whole-GPU or share pod came or went,
        `freed` the GPUs it gave back (negative: took). On an exclusive node each of them went
        from free to held or back (`gpu_fits`), so the free count moves by that much;
        time-sliced GPUs are recounted."""
        if self._node_is_timeslice[node]:
            self.refresh_node_summary(node)
            return
        free = int(self.node_free_gpus[node]) + freed
        self.node_free_gpus[node] = free
        self.node_max_free_milli[node] = FULL_GPU_MILLI if free else 0

    def refresh_node_summary(self, node: int) -> None:
        """Recompute a node's free-GPU count and largest free share from its GPUs (in plain
        Python: a node has a handful of GPUs, too few for numpy to pay off)."""
        gpus = self._gpu_range[node]
        used = self.gpu_used_milli[gpus.start : gpus.stop].tolist()
        slots = self.gpu_used_slots[gpus.start : gpus.stop].tolist()
        free_gpus = list(map(operator.or_, used, slots)).count(0)  # neither milli nor slots used
        self.node_free_gpus[node] = free_gpus
        if self._node_is_timeslice[node]:
            replicas = self._gpu_replicas[gpus.start : gpus.stop]
            free = [
                FULL_GPU_MILLI - u if s < r else 0
                for u, s, r in zip(used, slots, replicas, strict=True)
            ]
            self.node_max_free_milli[node] = max(free, default=0)
        else:
            self.node_max_free_milli[node] = FULL_GPU_MILLI if free_gpus else 0

    # ----------------------------------------------------------------- queries by job
    def held_gpus(self, job_id: int) -> Iterable[int]:
        """GPUs a job holds (whole, share or MIG)."""
        for _pod, placement in self.holdings.get(job_id, ()):
            yield from placement.gpus
