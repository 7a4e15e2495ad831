"""The placement engine's self-check: every occupancy figure recomputed from the holdings.

`ClusterState` keeps its occupancy in many incrementally updated arrays (free CPU and memory,
per-GPU shares and slots, MIG holders, per-node summaries) for speed. This audit rebuilds all of
them from the jobs' placements alone and asserts that they agree, so the property tests can prove
after any sequence of changes that no slice is held twice, MIG instances sit only at allowed
starts with at most 7 compute slices per GPU, shares fit, and CPU and memory balance.
"""

from __future__ import annotations

import numpy as np

from gpuparley.envs import mig
from gpuparley.envs.cluster import FULL_GPU_MILLI, ClusterState, gpu_shape
from gpuparley.envs.jobs import Job


def check_invariants(state: ClusterState, jobs: dict[int, Job]) -> None:
    """Recompute all occupancy from the holdings and compare; raise AssertionError on drift.

    Used by the property tests: it proves no slice is held twice, MIG instances sit only at
    allowed starts with at most 7 compute slices per GPU, shares fit, and CPU/memory balance.
    """
    cpu = np.array([n.cpu_milli for n in state.spec.nodes], dtype=np.int64)
    mem = np.array([n.memory_mib for n in state.spec.nodes], dtype=np.int64)
    milli = np.zeros(state.gpu_count, dtype=np.int64)
    slots = np.zeros(state.gpu_count, dtype=np.int64)
    shapes = np.zeros_like(state.node_gpu_pods)
    mig_taken: dict[tuple[int, int], int] = {}
    for job_id, held in state.holdings.items():
        job = jobs[job_id]
        for _pod, placement in held:
            cpu[placement.node] -= job.pod.cpu_milli
            mem[placement.node] -= job.pod.memory_mib
            request = job.pod.gpu
            shapes[placement.node, gpu_shape(request)] += request.kind != "none"
            if request.kind == "mig":
                key = (placement.gpus[0], placement.instance)
                assert key not in mig_taken, f"MIG instance {key} held twice"
                mig_taken[key] = job_id
            for g in placement.gpus if request.kind in ("whole", "share") else ():
                if request.kind == "share" and state.node_is_timeslice[placement.node]:
                    milli[g] += request.milli
                    slots[g] += 1
                else:
                    assert milli[g] == 0 and slots[g] == 0, f"GPU {g} held twice"
                    milli[g] = FULL_GPU_MILLI
                    slots[g] = state.gpu_replicas[g]
    assert (cpu >= 0).all() and (mem >= 0).all(), "CPU or memory over-committed"
    assert (cpu == state.cpu_free).all() and (mem == state.mem_free).all(), "CPU/memory drift"
    assert (milli <= FULL_GPU_MILLI).all(), "shares on a GPU exceed 1000 milli"
    assert (slots <= state.gpu_replicas).all(), "more pods than replicas on a GPU"
    assert (milli == state.gpu_used_milli).all() and (slots == state.gpu_used_slots).all()
    assert (shapes == state.node_gpu_pods).all(), "GPU pod shape count drift"
    for g, layout in state.mig_layout.items():
        mig.validate_layout(state.gpu_model_name[g], layout)  # starts, overlap, <= 7 compute
        for i, holder in enumerate(state.mig_holder[g]):
            assert (holder >= 0) == ((g, i) in mig_taken), f"MIG holder drift on GPU {g}"
    mig_slices = np.zeros(state.gpu_count, dtype=np.int64)
    for (g, i), job_id in mig_taken.items():
        mig_slices[g] += jobs[job_id].pod.gpu.compute_slices
        assert state.mig_layout[g][i][0] == jobs[job_id].pod.gpu.profile, "wrong MIG profile"
    assert (mig_slices == state.mig_used_slices).all(), "MIG slice count drift"
    assert not (milli[state.gpu_is_mig]).any(), "a MIG GPU holds a non-MIG pod"
    _check_node_summaries(state)


def _check_node_summaries(state: ClusterState) -> None:
    """The vectorised per-node summaries must equal a recomputation from the GPUs."""
    summaries = (state.node_free_gpus.copy(), state.node_max_free_milli.copy())
    mig_free = {name: array.copy() for name, array in state.node_mig_free.items()}
    for node in range(state.node_count):
        if not state.node_is_mig[node] and state.node_gpu_count[node]:
            state.refresh_node_summary(node)
    assert (summaries[0] == state.node_free_gpus).all(), "free-GPU summary drift"
    assert (summaries[1] == state.node_max_free_milli).all(), "largest-share summary drift"
    for name, array in mig_free.items():
        recount = np.zeros(state.node_count, dtype=np.int64)
        for g, layout in state.mig_layout.items():
            if state.gpu_down_until[g] > 0:
                continue
            for i, (profile, _start) in enumerate(layout):
                recount[state.gpu_node[g]] += profile == name and state.mig_holder[g][i] < 0
        assert (recount == array).all(), f"free {name} instance summary drift"
