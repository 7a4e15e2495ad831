"""Property tests of the placement engine: no slice is ever held twice, whatever is tried."""

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from gpuparley.envs import mig
from gpuparley.envs.cluster import ClusterState, PlacementError, PodPlacement
from gpuparley.envs.cluster_audit import check_invariants
from gpuparley.envs.few_nodes import any_feasible_node, feasible_list
from gpuparley.envs.jobs import GPURequest, Job, PodDemand

from builders import mixed_cluster

REQUESTS = st.one_of(
    st.builds(lambda n: GPURequest("whole", count=n), st.integers(1, 4)),
    st.builds(lambda m: GPURequest("share", milli=m), st.integers(1, 1000)),
    st.sampled_from(
        [
            GPURequest(
                "mig", profile=p, compute_slices=mig.lookup_profile("A100-80GB", p).compute_slices
            )
            for p in ("1g.10gb", "2g.20gb", "3g.40gb", "1g.20gb")
        ]
    ),
    st.just(GPURequest("none")),
)
JOBS = st.builds(
    lambda i, req, cpu, pods: Job(i, "a", PodDemand(req, cpu, 1000), 10.0, 0.0, pods=pods),
    st.integers(0, 10**6),
    REQUESTS,
    st.integers(0, 20_000),
    st.integers(1, 3),
)
RAW_PLACEMENTS = st.builds(
    PodPlacement,
    st.integers(-1, 4),
    st.lists(st.integers(-1, 13), max_size=4).map(tuple),
    st.integers(-1, 4),
)


def snapshot(state: ClusterState):
    return copy.deepcopy(
        (
            state.cpu_free,
            state.mem_free,
            state.gpu_used_milli,
            state.gpu_used_slots,
            state.mig_holder,
            state.node_free_gpus,
            state.node_max_free_milli,
            {k: v.copy() for k, v in state.node_mig_free.items()},
            state.holdings,
            state.allocated_milli,
        )
    )


def equal(a, b) -> bool:
    import numpy as np

    if isinstance(a, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(JOBS, st.booleans(), st.lists(RAW_PLACEMENTS, max_size=3)), max_size=25))
def test_any_sequence_of_binds_and_releases_keeps_every_invariant(steps):
    state = ClusterState(mixed_cluster())
    jobs: dict[int, Job] = {}
    for index, (job, release_one, raw) in enumerate(steps):
        job = Job(index, job.owner, job.pod, job.duration, 0.0, pods=job.pods)
        jobs[job.id] = job
        # 1) arbitrary, usually illegal, placements: accepted whole or rejected with no change
        before = snapshot(state)
        try:
            state.bind(job, list(enumerate(raw)))
        except PlacementError:
            assert equal(before, snapshot(state)), "a rejected bind changed the state"
        check_invariants(state, jobs)
        # 2) a legal first-fit placement of the remaining pods whenever one exists
        for pod in range(job.pods):
            if pod in {p for p, _ in state.holdings.get(job.id, ())}:
                continue
            mask = state.feasible_nodes(job.pod)
            # a small cluster's node-by-node answers are the vectorised mask's
            for models in ((), ("A100-80GB",), ("H100-80GB",), ("T4", "A100-80GB")):
                expected = state.feasible_mask(job.pod, models)
                assert feasible_list(state, job.pod, models) == expected.tolist()
                assert any_feasible_node(state, job.pod, models) == bool(expected.any())
            assert (mask == state.feasible_mask(job.pod)).all()
            for node in mask.nonzero()[0]:
                placement = state.first_fit(job.pod, int(node))
                assert placement is not None, "feasible_nodes promised a node that cannot fit"
                state.bind(job, [(pod, placement)])
                break
        check_invariants(state, jobs)
        if release_one and state.holdings:
            victim = sorted(state.holdings)[index % len(state.holdings)]
            state.release(jobs[victim])
            check_invariants(state, jobs)
    for job_id in list(state.holdings):
        state.release(jobs[job_id])
    check_invariants(state, jobs)
    assert state.allocated_milli == 0
    assert (state.cpu_free == [n.cpu_milli for n in state.spec.nodes]).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
        max_size=8,
    )
)
def test_relayout_only_accepts_legal_layouts_on_empty_gpus(profiles):
    state = ClusterState(mixed_cluster())
    g = state.gpus_of(2)[0]
    layout = []
    for name in profiles:
        starts = mig.possible_placements("A100-80GB", name, layout)
        if starts:
            layout.append((name, starts[-1]))
    if layout:
        state.relayout(g, layout, down_until=5.0)
        check_invariants(state, {})
        assert state.free_instances(2, layout[0][0]) == [
            (g2, i) for g2, i in state.free_instances(2, layout[0][0]) if g2 != g
        ], "a GPU in re-layout downtime must not offer instances"
        state.finish_relayout(g)
        assert any(g2 == g for g2, _ in state.free_instances(2, layout[0][0]))
    check_invariants(state, {})
