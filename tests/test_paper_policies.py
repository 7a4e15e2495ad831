"""The FGD paper's placement policies score as its simulator does, on hand-computed nodes.

Every expected number below is worked out by hand from the formulas in the module docstrings of
`envs.fragmentation`, `agents.schedulers.fgd` and `agents.schedulers.paper_baselines` (which
follow the authors' score plugins); the comments show the arithmetic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuparley.agents.registry import PAPER_POLICIES, make_allocator
from gpuparley.agents.schedulers.base import SchedulerContext
from gpuparley.agents.schedulers.fgd import fgd
from gpuparley.agents.schedulers.paper_baselines import best_fit, random_placement
from gpuparley.agents.scoring import least_allocated, most_allocated
from gpuparley.envs.cluster import ClusterState, PodPlacement
from gpuparley.envs.cluster_audit import check_invariants
from gpuparley.envs.fgd_score import Fgd, fgd_score
from gpuparley.envs.fragmentation import FragmentationIndex, TargetWorkload, free_gpus
from gpuparley.envs.jobs import GPURequest, Job, PodDemand
from gpuparley.envs.planner import plan_job
from gpuparley.envs.score_plugins import (
    best_fit_score,
    dot_product_score,
    gpu_clustering_score,
    gpu_packing_score,
    normalise,
)
from gpuparley.envs.topology import ClusterSpec, NodeSpec, SharingMode

TS = SharingMode.TIMESLICE


def node(name: str, gpus: int, cpu: int = 64_000, model: str = "T4") -> NodeSpec:
    return NodeSpec(name, cpu, 256_000, model, gpus, TS, replicas=20)


def pod(milli: int = 0, gpus: int = 0, cpu: int = 0, memory: int = 0) -> PodDemand:
    if milli:
        return PodDemand(GPURequest("share", milli=milli), cpu, memory)
    if gpus:
        return PodDemand(GPURequest("whole", count=gpus), cpu, memory)
    return PodDemand(GPURequest("none"), cpu, memory)


def job(job_id: int, demand: PodDemand, models: tuple[str, ...] = ()) -> Job:
    return Job(job_id, "a", demand, 100.0, 0.0, allowed_models=models)


def place(state: ClusterState, job_id: int, demand: PodDemand, where: PodPlacement) -> None:
    """Occupy a node by hand (the engine checks the placement)."""
    state.bind(job(job_id, demand), [(0, where)])


def scores_of(score, state: ClusterState, demand: PodDemand) -> list[int]:
    return score(state, demand, np.arange(state.node_count)).tolist()


# --------------------------------------------------------------------------- best-fit
def test_best_fit_score_truncates_and_normalises() -> None:
    state = ClusterState(ClusterSpec((node("n0", 4), node("n1", 2))))
    place(state, 0, pod(gpus=2, cpu=8_000), PodPlacement(0, (0, 1)))
    demand = pod(milli=500, cpu=8_000)
    # n0: C 56,000 -> 48,000 left, G 2,000 -> 1,500 left:
    #   100 * (1 - (0.5 * 48000/128000 + 0.5 * 1500/8000)) = 100 * (1 - 0.28125) = 71.875 -> 71
    # n1: C 64,000 -> 56,000, G 2,000 -> 1,500: 100 * (1 - (0.21875 + 0.09375)) = 68.75 -> 68
    assert scores_of(best_fit_score, state, demand) == [71, 68]
    # Min-max over the feasible nodes with integer division, once the scores span over 100;
    # within 100 it keeps order and ties, so it is skipped.
    mask = np.array([True, True, True, False])
    assert normalise(np.array([-50, 0, 60, 999]), mask)[:3].tolist() == [0, 45, 100]
    assert normalise(np.array([68, 71, 71, 0]), mask).tolist() == [68, 71, 71, 0]
    assert normalise(np.array([30, 30, 30, 0]), mask).tolist() == [30, 30, 30, 0]


def test_best_fit_ties_go_to_the_node_whose_name_sorts_first() -> None:
    # Two identical empty nodes: the same score; "a-node" (index 1) sorts before "b-node".
    state = ClusterState(ClusterSpec((node("b-node", 2), node("a-node", 2))))
    chooser = best_fit(SchedulerContext()).choose
    one = job(0, pod(gpus=1, cpu=1_000))
    placement = chooser(state, one, state.feasible_nodes(one.pod))
    assert placement == PodPlacement(1, (2,))


def test_best_gpu_is_the_fullest_that_fits_a_share_and_empty_gpus_lowest_first() -> None:
    state = ClusterState(ClusterSpec((node("n0", 4),)))
    place(state, 0, pod(milli=700), PodPlacement(0, (1,)))  # GPU 1: 300 free
    place(state, 1, pod(milli=400), PodPlacement(0, (2,)))  # GPU 2: 600 free
    chooser = best_fit(SchedulerContext()).choose
    share, whole = job(2, pod(milli=250)), job(3, pod(gpus=2))
    assert chooser(state, share, state.feasible_nodes(share.pod)) == PodPlacement(0, (1,))
    assert chooser(state, whole, state.feasible_nodes(whole.pod)) == PodPlacement(0, (0, 3))


# --------------------------------------------------------------------------- dot-product
def test_dot_product_score() -> None:
    state = ClusterState(ClusterSpec((node("n0", 4), node("n1", 8, cpu=128_000))))
    demand = pod(gpus=1, cpu=16_000)
    # n0: (64000/128000)(16000/128000) + (4000/8000)(1000/8000) = 0.0625 + 0.0625 = 0.125;
    #     100 * (1 - 0.125 / 2) = 93.75 -> 93
    # n1: (1)(0.125) + (1)(0.125) = 0.25 -> 100 * (1 - 0.125) = 87.5 -> 87
    assert scores_of(dot_product_score, state, demand) == [93, 87]


# --------------------------------------------------------------------------- gpu-packing
def test_gpu_packing_score_cases() -> None:
    nodes = (node("free2", 2), node("free8", 8), node("used", 4))
    state = ClusterState(ClusterSpec(nodes))
    place(state, 0, pod(milli=540), PodPlacement(2, (10,)))  # node "used", GPU 0: 460 free
    # Empty nodes: max(33 - n, n): 31 for 2 GPUs, 25 for 8 GPUs.
    # A 300m share on "used" fits the 460-free GPU: 100 - (460 * 100 // 1000) // 10 = 96.
    assert scores_of(gpu_packing_score, state, pod(milli=300)) == [31, 25, 96]
    # A 500m share does not fit there; it takes an empty GPU of a used node: max(50 - 1, 33).
    assert scores_of(gpu_packing_score, state, pod(milli=500)) == [31, 25, 49]
    # Two whole GPUs on a used node: max(50 - 2, 33); a CPU-only pod scores 0 everywhere.
    assert scores_of(gpu_packing_score, state, pod(gpus=2)) == [31, 25, 48]
    assert scores_of(gpu_packing_score, state, pod(cpu=1_000)) == [0, 0, 0]


# --------------------------------------------------------------------------- gpu-clustering
def test_gpu_clustering_score_bands() -> None:
    nodes = (node("shares", 2), node("mixed", 2), node("idle", 8), node("other", 2))
    state = ClusterState(ClusterSpec(nodes))
    place(state, 0, pod(milli=500), PodPlacement(0, (0,)))  # shares: 1,500 free
    place(state, 1, pod(milli=500), PodPlacement(1, (2,)))  # mixed: a share ...
    place(state, 2, pod(gpus=1), PodPlacement(1, (3,)))  # ... and a 1-GPU pod: 500 free
    place(state, 3, pod(gpus=1), PodPlacement(3, (12,)))  # other: a 1-GPU pod: 1,000 free
    # 25 * (8000 - G) // 8000 plus the band: 75 same shape only, 50 mixed with it, 25 idle, 0.
    # shares: 25 * 6500 // 8000 = 20 (+75); mixed: 25 * 7500 // 8000 = 23 (+50);
    # idle: 0 (+25); other: 25 * 7000 // 8000 = 21 (+0).
    assert scores_of(gpu_clustering_score, state, pod(milli=200)) == [95, 73, 25, 21]
    # For a 1-GPU pod "other" is the same-shape node and "shares" the other-shapes one.
    assert scores_of(gpu_clustering_score, state, pod(gpus=1)) == [20, 73, 25, 96]
    assert scores_of(gpu_clustering_score, state, pod(cpu=1_000)) == [0, 0, 0, 0]


# --------------------------------------------------------------------------- random
def test_random_is_seeded() -> None:
    spec = ClusterSpec(tuple(node(f"n{i}", 2) for i in range(8)))

    def picks(seed: int) -> list[PodPlacement | None]:
        chooser = random_placement(SchedulerContext(seed=seed)).choose
        state = ClusterState(spec)
        out = []
        for i in range(6):
            one = job(i, pod(milli=300))
            out.append(chooser(state, one, state.feasible_nodes(one.pod)))
        return out

    assert picks(1) == picks(1)
    assert picks(1) != picks(2)
    assert len({p.node for p in picks(1) if p}) > 1  # not always the same node


# --------------------------------------------------------------------------- fragmentation
def two_type_target(models: tuple[str, ...] = ()) -> TargetWorkload:
    """Half 500m shares (any model), half one-GPU pods allowed on `models`; no CPU asked."""
    jobs = [job(0, pod(milli=500)), job(1, pod(gpus=1), models)]
    return TargetWorkload.from_jobs(jobs)


def test_fragmentation_of_a_node() -> None:
    state = ClusterState(ClusterSpec((node("n0", 4), node("v100", 4, model="V100M16"))))
    place(state, 0, pod(milli=700), PodPlacement(0, (1,)))  # 300 free
    place(state, 1, pod(gpus=1), PodPlacement(0, (2,)))  # 0 free
    place(state, 2, pod(milli=400), PodPlacement(0, (3,)))  # 600 free; node 0: 1000,300,0,600
    target = two_type_target(("T4",))
    index = FragmentationIndex(target, state)
    # 500m share: GPUs with >= 500 free exist, so its fragment is the rest: 300 + 0 = 300.
    # T4 one-GPU pod: the 1000 GPU fits it; fragment 300 + 0 + 600 = 900. F = (300 + 900) / 2.
    # On the empty V100 node the share fits (fragment 0) but the T4 pod may not run there: all
    # 4,000 free milli are its fragment. F = 4000 / 2.
    assert index.node_fragmentation(state).tolist() == pytest.approx([600.0, 2000.0], rel=1e-12)
    types = target.gpu_types(index.access[0])
    assert target.node_fragmentation([1000, 300, 0, 600], 64_000, types) == pytest.approx(600.0)


def test_fragmentation_counts_cpu_shortage_and_cpu_only_types() -> None:
    jobs = [job(0, pod(gpus=1, cpu=40_000)), job(1, pod(cpu=1_000))]
    target = TargetWorkload.from_jobs(jobs)
    free, access = np.array([[1000, 1000]]), np.ones((1, 2), dtype=bool)
    # Enough CPU: the GPU type fits (fragment 0); the CPU-only type cannot use GPUs: 2000.
    assert target.fragmentation(free, np.array([64_000]), access) == pytest.approx([1000.0])
    # Short of CPU the GPU type cannot run: all 2,000 milli are fragment for it too.
    assert target.fragmentation(free, np.array([30_000]), access) == pytest.approx([2000.0])


def test_typical_pods_cover_95_percent_then_renormalise() -> None:
    counts = {1000: 60, 500: 30, 250: 6, 100: 4}  # 100 pods; 60 + 30 + 6 reaches 95
    jobs = [
        job(i * 1000 + k, pod(milli=milli))
        for i, (milli, n) in enumerate(counts.items())
        for k in range(n)
    ]
    target = TargetWorkload.from_jobs(jobs)
    assert target.milli.tolist() == [1000, 500, 250]
    assert target.weight.tolist() == pytest.approx([60 / 96, 30 / 96, 6 / 96], rel=1e-12)


# --------------------------------------------------------------------------- FGD
def test_fgd_score_is_a_truncated_sigmoid() -> None:
    changes = np.array([0.0, -500.0, 1000.0, 1e-7, np.inf])
    # 100 sigmoid(0) = 50; 100 sigmoid(0.5) = 62.2 -> 62; 100 sigmoid(-1) = 26.9 -> 26;
    # an increase of 1e-7 milli truncates below 50 (49.99...); inf: the pod cannot go.
    expected = [50, int(100 / (1 + math.exp(-0.5))), int(100 / (1 + math.exp(1))), 49, 0]
    assert expected[1:3] == [62, 26]
    assert fgd_score(changes).tolist() == expected


def test_fgd_places_a_share_where_it_fragments_least() -> None:
    state = ClusterState(ClusterSpec((node("n0", 2), node("n1", 2))))
    place(state, 0, pod(milli=500), PodPlacement(0, (0,)))  # n0: 500, 1000 free
    plugin = Fgd(two_type_target())
    share = pod(milli=500)
    # n0, GPU 0 (500 free -> 0): the share type still fits GPU 1: F 250 -> 0, and the whole
    # type's fragment drops from 500 to 0: F' = 0, change -250 -> 100 sigmoid(0.25) = 56.
    # n0, GPU 1 (1000 -> 500): no GPU has 1000 free: the whole type's fragment is all 1000:
    # F' = 500, change +250 -> 43. n1 (empty, F 0): a GPU to 500 leaves F' = 250 -> 43.
    assert plugin.score(state, share, np.arange(2)).tolist() == [56, 43]
    chooser = fgd(SchedulerContext(jobs=[job(0, share), job(1, pod(gpus=1))])).choose
    one = job(2, share)
    assert chooser(state, one, state.feasible_nodes(share)) == PodPlacement(0, (0,))


def test_fgd_honours_gpu_models_where_pooling_would_strand_constrained_pods() -> None:
    """A 500m share that may run anywhere, then two 2-GPU pods that may only run on T4.

    Per GPU model, the T4-only type cannot use the V100 node, so all its free GPUs are already
    fragment for it: the share lowers F there (change -333) and raises it on the T4 node
    (+333), so it goes to the V100 and both T4 pods fit. Pooling the types, the T4 node looks
    better (it keeps two empty GPUs after the share: +333 against +1000 on the V100) and the
    second T4 pod finds only one empty GPU left.
    """
    spec = ClusterSpec((node("t4", 4), node("v100", 2, model="V100M16")))
    jobs = [job(0, pod(milli=500)), job(1, pod(gpus=2), ("T4",)), job(2, pod(gpus=2), ("T4",))]

    def placed(target_jobs: list[Job]) -> list[bool]:
        allocator = fgd(SchedulerContext(jobs=target_jobs))
        state = ClusterState(spec)
        out = []
        for one in jobs:
            plan = plan_job(state, one, allocator.choose)
            out.append(plan is not None)
            if plan:
                state.bind(one, plan)
        return out

    assert placed(jobs) == [True, True, True]
    pooled = [dataclasses.replace(one, allowed_models=()) for one in jobs]
    assert placed(pooled) == [True, True, False]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.lists(st.sampled_from([0, 100, 250, 460, 500, 750, 1000]), min_size=4, max_size=4),
            st.integers(0, 64_000),
        ),
        min_size=8,
        max_size=12,
    ),
    milli=st.sampled_from([0, 250, 500, 1000]),
)
def test_one_node_and_batched_fragmentation_agree(
    rows: list[tuple[list[int], int]], milli: int
) -> None:
    """The plain-Python form (few nodes) and the numpy form (many) give the same F and Delta F."""
    jobs = [
        job(0, pod(milli=500, cpu=8_000)),
        job(1, pod(gpus=2, cpu=16_000), ("T4",)),
        job(2, pod(cpu=4_000)),
        job(3, pod(milli=250, cpu=2_000)),
    ]
    spec = ClusterSpec(
        tuple(node(f"n{i}", 4, model="T4" if i % 2 else "V100M16") for i in range(len(rows)))
    )
    state = ClusterState(spec)
    for i, (free, cpu) in enumerate(rows):
        for j, gpu_free in enumerate(free):
            if gpu_free < 1000:
                where = PodPlacement(i, (4 * i + j,))
                place(state, 100 * i + j, pod(milli=1000 - gpu_free), where)
        place(state, 100 * i + 99, pod(cpu=64_000 - cpu), PodPlacement(i))
    target = TargetWorkload.from_jobs(jobs)  # four types of one pod each: p = 1/4, sums exact
    index = FragmentationIndex(target, state)
    nodes = np.arange(len(rows))
    view = free_gpus(state)
    one_by_one = [
        target.node_fragmentation(
            view.free[n].tolist(), int(view.cpu[n]), target.gpu_types(index.access[n])
        )
        for n in nodes
    ]
    assert one_by_one == target.fragmentation(view.free, view.cpu, index.access).tolist()
    demand = pod(milli=milli, cpu=1_000) if 0 < milli < 1000 else pod(gpus=1 if milli else 0)
    together = index.placement_deltas(state, demand, nodes)
    alone = np.vstack([index.placement_deltas(state, demand, np.array([n])) for n in nodes])
    assert np.array_equal(together, alone)


# --------------------------------------------------------------------------- kube-scheduler
def test_most_and_least_allocated_follow_kube_schedulers_integer_formulas() -> None:
    spec = ClusterSpec(
        (NodeSpec("g", 64_000, 256_000, "A100-80GB", 4), NodeSpec("c", 32_000, 64_000))
    )
    state = ClusterState(spec)
    state.bind(job(0, pod(gpus=1, cpu=16_000)), [(0, PodPlacement(0, (0,)))])
    gpu_pod = pod(gpus=1, cpu=16_000, memory=4_096)
    # Node g after the pod: CPU 32000/64000 -> 50; memory 4096/256000 -> 1 (1.6); GPU
    # 2000/4000 -> 50; integer mean (50 + 1 + 50) // 3 = 33. Node c has no GPU: skipped there,
    # CPU 16000/32000 -> 50, memory 4096/64000 -> 6 (6.4): (50 + 6) // 2 = 28.
    assert most_allocated(state, gpu_pod).tolist() == [33, 28]
    # LeastAllocated: (50 + 98 + 50) // 3 = 66 and (50 + 93) // 2 = 71.
    assert least_allocated(state, gpu_pod).tolist() == [66, 71]
    # A CPU-only pod does not request the GPU: it is skipped on g too, (50 + 1) // 2 = 25.
    assert most_allocated(state, pod(cpu=16_000, memory=4_096)).tolist() == [25, 28]


# --------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", PAPER_POLICIES)
def test_each_paper_policy_places_every_kind_of_pod(name: str) -> None:
    spec = ClusterSpec((node("n0", 2), node("n1", 4)))
    jobs = [job(0, pod(milli=300, cpu=1_000)), job(1, pod(gpus=2)), job(2, pod(cpu=1_000))]
    allocator = make_allocator(name, jobs=jobs, seed=0)
    state = ClusterState(spec)
    for one in jobs:
        plan = plan_job(state, one, allocator.choose)
        assert plan is not None, name
        state.bind(one, plan)
    check_invariants(state, {one.id: one for one in jobs})
