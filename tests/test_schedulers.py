"""Each incumbent scheduler shows its defining behaviour on a small case built for it."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from gpuparley.agents.registry import (
    INCUMBENTS,
    PAPER_POLICIES,
    SCHEDULERS,
    make_allocator,
    timer_of,
)
from gpuparley.agents.schedulers.kai import Kai
from gpuparley.agents.schedulers.kube_default import KubeDefault
from gpuparley.agents.schedulers.kueue import Kueue
from gpuparley.agents.schedulers.volcano import Volcano
from gpuparley.envs.cluster_audit import check_invariants
from gpuparley.envs.jobs import Job
from gpuparley.envs.metrics import DeadlockMonitor, summarise
from gpuparley.envs.scenario import load_scenario
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.simulator import Allocator, JobState, Simulator
from gpuparley.envs.topology import ClusterSpec
from gpuparley.evaluation.inflation_protocol import run_inflation
from gpuparley.evaluation.runner import simulate

from builders import context, exclusive_cluster, gpu_job, timeslice_cluster


def run(
    cluster: ClusterSpec, jobs: Sequence[Job], allocator: Allocator
) -> tuple[Simulator, dict, set[JobState]]:
    """Replay with deadlock monitoring; also return every job state seen after each step."""
    settings = SimulationSettings(speed_scaling=False, contention=False)
    sim = Simulator(cluster, jobs, allocator, settings, timer_of(allocator))
    monitor = DeadlockMonitor(sim)
    seen: set[JobState] = set()

    def observe() -> None:
        monitor()
        seen.update(r.state for r in sim.records.values())

    sim.run(observe)
    check_invariants(sim.state, sim.jobs)
    owners = sorted({j.owner for j in jobs})
    return sim, summarise(sim, owners, monitor), seen


def half_place_case() -> tuple[ClusterSpec, list[Job]]:
    """3 of 4 GPUs busy; a 2-pod gang arrives while only one GPU is free."""
    jobs = [
        gpu_job(0, "a", gpus=3, duration=1000),
        gpu_job(1, "b", pods=2, duration=100, arrival=10),
    ]
    return exclusive_cluster(gpus=4), jobs


def deadlock_case() -> tuple[ClusterSpec, list[Job]]:
    """Two 2-pod gangs on a 2-GPU node, each getting one GPU as two short jobs finish.

    X and Y hold both GPUs; X ends at 10 and gang A (earliest) takes that GPU; Y ends at 20
    and gang B, of a higher priority class and arrived at 15, takes the other. Nothing runs.
    """
    jobs = [
        gpu_job(0, "x", duration=10, priority=5),
        gpu_job(1, "x", duration=20, priority=5),
        gpu_job(2, "a", pods=2, duration=100, arrival=1, priority=0),
        gpu_job(3, "b", pods=2, duration=100, arrival=15, priority=1),
    ]
    return exclusive_cluster(gpus=2), jobs


def test_kube_default_half_places_a_gang_and_volcano_does_not() -> None:
    cluster, jobs = half_place_case()
    shares = {"a": 0.5, "b": 0.5}
    _, kube, kube_seen = run(cluster, jobs, KubeDefault(context(cluster, shares), quota=False))
    assert kube["gangs_partially_held"] == 1 and kube["partial_hold_gpu_seconds"] > 0
    assert JobState.PARTIAL in kube_seen
    _, volcano, volcano_seen = run(cluster, jobs, Volcano(context(cluster, shares)))
    assert volcano["gangs_partially_held"] == 0 and JobState.PARTIAL not in volcano_seen
    assert volcano["jobs_finished"] == 2


def test_kube_default_counts_a_gang_deadlock() -> None:
    cluster, jobs = deadlock_case()
    shares = {"x": 0.4, "a": 0.3, "b": 0.3}
    # Same priority for the gangs' pods would let B preempt A; the case shows two gangs of
    # different classes that preemption is switched off for (or a PDB forbids evicting).
    kube = KubeDefault(context(cluster, shares), quota=False, preemption=False)
    sim, metrics, _ = run(cluster, jobs, kube)
    assert metrics["deadlock_episodes"] == 1
    assert sim.records[2].state is JobState.PARTIAL and sim.records[3].state is JobState.PARTIAL
    _, volcano, _ = run(cluster, jobs, Volcano(context(cluster, shares)))
    assert volcano["deadlock_episodes"] == 0 and volcano["jobs_finished"] == 4


def test_kube_default_priority_preemption_breaks_the_deadlock() -> None:
    cluster, jobs = deadlock_case()
    kube = KubeDefault(context(cluster, {"x": 0.4, "a": 0.3, "b": 0.3}), quota=False)
    sim, metrics, _ = run(cluster, jobs, kube)
    assert sim.records[2].evictions >= 1  # B's pod evicted the lower-priority gang A
    assert metrics["jobs_finished"] == 4


def test_kube_default_quota_keeps_gpus_idle() -> None:
    cluster = exclusive_cluster(gpus=4)
    jobs = [gpu_job(i, "a", duration=100) for i in range(4)]
    sim, _, _ = run(cluster, jobs, KubeDefault(context(cluster, {"a": 0.5, "b": 0.5})))
    starts = sorted(sim.records[i].first_start for i in range(4))
    assert starts == [0, 0, 100, 100]  # a's quota is 2 GPUs although b uses none


def test_kueue_borrows_idle_quota_and_gives_it_back() -> None:
    cluster = exclusive_cluster(gpus=4)
    a_jobs = [gpu_job(i, "a", duration=1000) for i in range(4)]
    b_jobs = [gpu_job(4 + i, "b", duration=300, arrival=100) for i in range(2)]
    sim, _, _ = run(cluster, [*a_jobs, *b_jobs], Kueue(context(cluster, {"a": 0.5, "b": 0.5})))
    assert all(sim.records[j.id].first_start == 0 for j in a_jobs)  # a borrowed b's 2 GPUs
    assert all(sim.records[j.id].first_start == 100 for j in b_jobs)  # b reclaimed them
    assert sum(sim.records[j.id].evictions for j in a_jobs) == 2  # only the borrowed part
    assert sim.evictions == 2


def test_kueue_without_borrowing_leaves_quota_idle() -> None:
    cluster = exclusive_cluster(gpus=4)
    jobs = [gpu_job(i, "a", duration=1000) for i in range(4)]
    ctx = context(cluster, {"a": 0.5, "b": 0.5})
    sim, _, _ = run(cluster, jobs, Kueue(ctx, borrowing_limit={"a": 0}))
    assert sorted(sim.records[i].first_start for i in range(4)) == [0, 0, 1000, 1000]


def consolidation_case() -> list[Job]:
    """Three 500m shares packed 2 + 1 on two time-sliced GPUs; one ends, leaving 1 + 1."""
    return [
        gpu_job(0, "a", milli=500, duration=50),
        gpu_job(1, "a", milli=500, duration=1000),
        gpu_job(2, "a", milli=500, duration=1000),
        gpu_job(3, "a", gpus=1, duration=100, arrival=100),
    ]


def test_kai_consolidation_frees_a_whole_gpu() -> None:
    cluster = timeslice_cluster(gpus=2)
    ctx = context(cluster, {"a": 1.0})
    sim, _, _ = run(cluster, consolidation_case(), Kai(ctx, min_runtime=0))
    assert sim.records[3].first_start == 100  # the whole-GPU job fits at once
    assert sim.records[1].evictions + sim.records[2].evictions == 1  # one share moved
    assert all(sim.records[i].finish is not None for i in range(4))
    idle, _, _ = run(cluster, consolidation_case(), Kai(ctx, min_runtime=0, consolidation=False))
    assert idle.records[3].first_start == 1000  # without it, it waits for a share to end


def test_kai_min_runtime_protects_young_jobs_from_reclaim() -> None:
    cluster = exclusive_cluster(gpus=2)
    jobs = [
        gpu_job(0, "a", duration=5000),
        gpu_job(1, "a", duration=5000),
        gpu_job(2, "b", duration=100, arrival=100),
    ]
    ctx = context(cluster, {"a": 0.5, "b": 0.5})
    sim, _, _ = run(cluster, jobs, Kai(ctx, min_runtime=600))
    assert sim.records[2].first_start == 600  # reclaimed on the timer once a job is 600 s old
    sim, _, _ = run(cluster, jobs, Kai(ctx, min_runtime=0))
    assert sim.records[2].first_start == 100


def test_the_paper_policies_keep_the_papers_order_on_openb() -> None:
    """FGD > BestFit > GpuPacking, GpuClustering, DotProd > Random: the paper's order on openb."""
    scenario = load_scenario("openb")
    runs = {name: run_inflation(scenario, name, seed=0) for name in PAPER_POLICIES}
    ratio = {name: run["final_allocation_ratio"] for name, run in runs.items()}
    fgd, best = runs["fgd"], runs["best-fit"]
    assert fgd["unallocated_gpus"] < best["unallocated_gpus"]
    middle = [ratio["gpu-packing"], ratio["gpu-clustering"], ratio["dot-product"]]
    assert ratio["fgd"] > ratio["best-fit"] > max(middle)
    assert min(middle) > ratio["random"]
    curve = fgd["allocation_ratio"]
    assert curve[0] == 0 and all(b >= a for a, b in itertools.pairwise(curve))
    assert len(curve) == len(fgd["arrived"]) and fgd["arrived"][-1] == pytest.approx(1.3)


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_same_seed_same_numbers(name: str) -> None:
    scenario = load_scenario("tiny")
    first = simulate(scenario, name, seed=3).metrics
    second = simulate(scenario, name, seed=3).metrics
    assert first == second


def test_bad_policy_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of: first-fit, kube-default, volcano"):
        make_allocator("kube-defualt", load_scenario("tiny"))
    with pytest.raises(ValueError, match="fgd"):
        simulate(load_scenario("tiny"), "nope", seed=0)


GANG_AWARE = sorted(set(SCHEDULERS) - {"kube-default"})


@pytest.mark.parametrize("scenario_name", ["tiny", "mig-mixed", "gang-heavy", "timeslice-noisy"])
def test_invariants_hold_and_gang_aware_never_half_place(scenario_name: str) -> None:
    scenario = load_scenario(scenario_name, overrides={"settings.horizon": 4 * 3600.0})
    for name in [*INCUMBENTS, *PAPER_POLICIES, "best-fit-gpu"]:
        result = simulate(scenario, name, seed=0)
        sim = result.simulator
        check_invariants(sim.state, sim.jobs)
        if name in GANG_AWARE:
            assert result.metrics["gangs_partially_held"] == 0, name
            assert all(r.state is not JobState.PARTIAL for r in sim.records.values()), name
            assert result.metrics["deadlock_episodes"] == 0, name
