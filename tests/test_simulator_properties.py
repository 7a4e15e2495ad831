"""Property tests of the simulator: gangs atomic, no free speed from sharing, deterministic."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuparley.agents.first_fit import FirstFit
from gpuparley.envs.cluster_audit import check_invariants
from gpuparley.envs.jobs import GPURequest, Job, PodDemand
from gpuparley.envs.metrics import summarise
from gpuparley.envs.settings import SimulationSettings
from gpuparley.envs.simulator import JobState, Simulator

from builders import mixed_cluster

REQUESTS = st.one_of(
    st.builds(lambda n: GPURequest("whole", count=n), st.integers(1, 4)),
    st.builds(lambda m: GPURequest("share", milli=m), st.integers(50, 1000)),
    st.sampled_from(
        [
            GPURequest("mig", profile="1g.10gb", compute_slices=1),
            GPURequest("mig", profile="2g.20gb", compute_slices=2),
            GPURequest("mig", profile="3g.40gb", compute_slices=3),
        ]
    ),
)
WORKLOADS = st.lists(
    st.tuples(
        REQUESTS,
        st.integers(1, 3),
        st.floats(1.0, 500.0),
        st.floats(0.0, 300.0),
        st.sampled_from(["a", "b", "c"]),
    ),
    min_size=1,
    max_size=30,
).map(
    lambda rows: [
        Job(i, owner, PodDemand(req, 1000, 1000), duration, arrival, pods=pods)
        for i, (req, pods, duration, arrival, owner) in enumerate(rows)
    ]
)


def run(jobs, overhead=0.1, check=True):
    sim = Simulator(
        mixed_cluster(), jobs, FirstFit(), SimulationSettings(timeslice_overhead=overhead)
    )

    def audit() -> None:
        if check:
            check_invariants(sim.state, sim.jobs)
            assert all(r.state is not JobState.PARTIAL for r in sim.records.values())
            for r in sim.records.values():
                held = len(sim.state.holdings.get(r.job.id, ()))
                assert held in (0, r.job.pods), f"job {r.job.id} holds {held}/{r.job.pods} pods"

    sim.run(audit)
    return sim


@settings(max_examples=80, deadline=None)
@given(WORKLOADS)
def test_gangs_are_all_or_nothing_and_invariants_hold_at_every_event(jobs):
    sim = run(jobs)
    for r in sim.records.values():
        if r.finish is not None:
            assert r.first_start >= r.job.arrival


@settings(max_examples=80, deadline=None)
@given(WORKLOADS)
def test_time_sliced_progress_never_beats_exclusive(jobs):
    sim = run(jobs, check=False)
    for r in sim.records.values():
        if r.finish is not None:
            alone = r.job.duration / r.speed
            assert r.finish - r.first_start >= alone * (1 - 1e-9)
            if not r.contended:
                assert math.isclose(r.finish - r.first_start, alone, rel_tol=1e-9)


@settings(max_examples=30, deadline=None)
@given(WORKLOADS)
def test_replays_are_deterministic(jobs):
    first = summarise(run(jobs, check=False), ["a", "b", "c"])
    second = summarise(run(list(reversed(jobs)), check=False), ["a", "b", "c"])
    assert first == second


def test_contention_slows_every_sharer_by_the_time_slicing_factor():
    share = GPURequest("share", milli=300)
    cluster = mixed_cluster()
    ts_only = Job(0, "a", PodDemand(share, 1000, 1000), 100.0, 0.0, allowed_models=("T4",))
    twins = [ts_only, Job(1, "b", PodDemand(share, 1000, 1000), 100.0, 0.0, allowed_models=("T4",))]
    sim = Simulator(cluster, twins, FirstFit(), SimulationSettings(timeslice_overhead=0.2))
    sim.run()
    speed = 0.2  # T4
    expected = 100.0 / speed / ((1 - 0.2) / 2)
    for r in sim.records.values():
        assert math.isclose(r.finish, expected, rel_tol=1e-9)
    assert math.isclose(summarise(sim, ["a", "b"])["noisy_neighbour_slowdown_mean"], 2 / 0.8)


def test_time_average_covers_only_the_requested_window():
    from gpuparley.envs.settings import SimulationSettings as S

    job = Job(0, "a", PodDemand(GPURequest("whole", count=4), 1000, 1000), 100.0, 0.0)
    late = Job(1, "a", PodDemand(GPURequest("whole", count=4), 1000, 1000), 100.0, 50.0)
    sim = Simulator(mixed_cluster(), [job, late], FirstFit(), S(speed_scaling=False))
    sim.run()
    timeline = sim.timeline
    # 12 GPUs: 4 busy on [0, 50), 8 on [50, 100), 4 on [100, 150)
    assert math.isclose(timeline.time_average("allocation_ratio", 50.0), 4 / 12)
    assert math.isclose(timeline.time_average("allocation_ratio", 100.0), 6 / 12)
    assert math.isclose(timeline.time_average("allocation_ratio"), (4 + 8 + 4) / 3 / 12)
    assert math.isclose(summarise(sim, ["a"])["allocation_ratio_mean"], 4 / 12)


def test_cluster_averages_start_at_the_first_arrival_whenever_the_clock_starts():
    """A market's clock starts at 0, a central scheduler's at its first event: the empty
    cluster before the first arrival counts for neither."""
    from gpuparley.envs.settings import SimulationSettings as S

    def summary(sample_from_zero: bool) -> dict:
        jobs = [
            Job(0, "a", PodDemand(GPURequest("whole", count=4), 1000, 1000), 100.0, 50.0),
            Job(1, "a", PodDemand(GPURequest("whole", count=4), 1000, 1000), 100.0, 80.0),
        ]
        sim = Simulator(mixed_cluster(), jobs, FirstFit(), S(speed_scaling=False))
        if sample_from_zero:
            sim.advance(0.0)  # the market's first round samples the empty cluster at 0
        sim.run()
        return summarise(sim, ["a"])

    # 12 GPUs: 4 busy on [50, 80), 8 on [80, 150): over the offered window [50, 80], 4 / 12
    assert math.isclose(summary(False)["allocation_ratio_mean"], 4 / 12)
    assert math.isclose(summary(True)["allocation_ratio_mean"], 4 / 12)
    assert math.isclose(summary(True)["unallocated_gpus_mean"], 8.0)
