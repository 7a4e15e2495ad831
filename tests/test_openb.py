"""The openb loader: exact counts, the gpu_milli mapping table, tenant assignment, speed."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs.jobs import GPURequest
from gpuparley.envs.topology import SharingMode
from gpuparley.envs.workloads import (
    TraceNotFoundError,
    assign_agent,
    load_openb_jobs,
    load_openb_nodes,
    map_gpu_request,
)

AGENTS = {f"agent-{i}": 1.0 for i in range(8)}


@pytest.fixture(scope="module")
def nodes():
    return load_openb_nodes()


@pytest.fixture(scope="module")
def jobs():
    return load_openb_jobs(AGENTS)


def test_node_and_gpu_counts(nodes) -> None:
    assert len(nodes) == 1213
    assert sum(n.gpu_count for n in nodes) == 6212
    models = Counter(n.gpu_model for n in nodes)
    assert models == {
        "G2": 549, "T4": 404, "P100": 134, "V100M16": 55, "G3": 39, "V100M32": 30, "A10": 2,
    }  # fmt: skip
    assert all(n.mode is SharingMode.TIMESLICE and n.replicas == 20 for n in nodes)


def test_cpu_nodes_optional_and_renamed() -> None:
    nodes = load_openb_nodes(SharingMode.EXCLUSIVE, include_cpu_nodes=True)
    assert len(nodes) == 1523
    cpu = [n for n in nodes if n.gpu_model is None]
    assert len(cpu) == 310 and cpu[0].name == "openb-cpu-0000"
    assert nodes[0].name == "openb-node-0000" and nodes[0].gpu_model == "P100"


def test_mig_mode_rejected() -> None:
    with pytest.raises(ValueError, match="MIG"):
        load_openb_nodes(SharingMode.MIG)


def test_pod_count_and_order(jobs) -> None:
    assert len(jobs) == 5706
    assert [j.id for j in jobs] == list(range(5706))
    assert jobs[0].arrival == 0
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(jobs))
    kinds = Counter(j.pod.gpu.kind for j in jobs)
    assert kinds == {"whole": 2743 + 53, "share": 4832 - 2743, "none": 821}
    assert Counter(j.tags["phase"] for j in jobs)["Pending"] == 548  # kept by default


@pytest.mark.parametrize(
    ("num_gpu", "milli", "expected"),
    [
        (0, 0, GPURequest("none")),
        (1, 1000, GPURequest("whole", count=1)),
        (8, 1000, GPURequest("whole", count=8)),
        (1, 460, GPURequest("share", milli=460)),
        (1, 50, GPURequest("share", milli=50)),
    ],
)
def test_mapping_timeslice(num_gpu: int, milli: int, expected: GPURequest) -> None:
    assert map_gpu_request(num_gpu, milli) == expected


@pytest.mark.parametrize(
    ("model", "milli", "profile"),
    [
        ("A100-80GB", 460, "4g.40gb"),
        ("A100-80GB", 110, "1g.10gb"),
        ("A100-80GB", 810, "7g.80gb"),
        ("A100-40GB", 110, "1g.5gb"),
        ("H100-80GB", 230, "2g.20gb"),
    ],
)
def test_mapping_mig(model: str, milli: int, profile: str) -> None:
    request = map_gpu_request(1, milli, "mig", model)
    assert (request.kind, request.profile) == ("mig", profile)
    assert request.compute_slices == int(profile[0])


def test_mapping_mig_needs_model() -> None:
    with pytest.raises(ValueError, match="mig_model"):
        map_gpu_request(1, 460, "mig")


def test_mig_jobs_allowed_on_profile_family() -> None:
    jobs = load_openb_jobs(AGENTS, fractional="mig", mig_model="A100-80GB", limit=200)
    mig_jobs = [j for j in jobs if j.pod.gpu.kind == "mig"]
    assert mig_jobs and all(j.allowed_models == ("A100-80GB", "H100-80GB") for j in mig_jobs)


def test_agent_assignment_deterministic_and_uses_everyone(jobs) -> None:
    owners = Counter(j.owner for j in jobs)
    assert set(owners) == set(AGENTS)
    assert min(owners.values()) > 5706 / 8 * 0.8
    again = load_openb_jobs(AGENTS, seed=99, limit=100)
    assert [j.owner for j in again] == [j.owner for j in jobs[:100]]  # seed- and limit-free
    assert assign_agent("openb-pod-0001", AGENTS) == assign_agent("openb-pod-0001", AGENTS)
    assert assign_agent("x", {"only": 1.0}) == "only"


def test_value_and_time_scale(jobs) -> None:
    scaled = load_openb_jobs(AGENTS, time_scale=0.5, limit=50)
    for original, half in zip(jobs[:50], scaled, strict=True):
        assert half.arrival == pytest.approx(original.arrival / 2)
        assert half.duration == pytest.approx(original.duration / 2)
    whole = next(j for j in jobs if j.pod.gpu.kind == "whole")
    assert whole.value == pytest.approx(2.0 * whole.work / 3600)
    assert all(j.value == 0 for j in jobs if j.pod.gpu.kind == "none")


def test_missing_trace_names_path_and_env(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GPUPARLEY_TRACES", str(tmp_path))
    with pytest.raises(TraceNotFoundError, match="GPUPARLEY_TRACES") as error:
        load_openb_nodes()
    assert str(tmp_path / "openb") in str(error.value)


def test_a_moved_trace_folder_is_one_line_from_the_commands(tmp_path, monkeypatch) -> None:
    """Before: `simulate --scenario openb` with GPUPARLEY_TRACES elsewhere was a traceback, and
    `scenarios` with GPUPARLEY_CONFIGS elsewhere an empty table with exit 0."""
    monkeypatch.setenv("GPUPARLEY_TRACES", str(tmp_path))
    result = CliRunner().invoke(app, ["simulate", "--scenario", "openb", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "GPUPARLEY_TRACES must name a folder" in result.output
    monkeypatch.setenv("GPUPARLEY_CONFIGS", str(tmp_path))
    result = CliRunner().invoke(app, ["scenarios"])
    assert result.exit_code == 2 and "GPUPARLEY_CONFIGS must name a folder" in result.output


def test_arrival_scale_moves_arrivals_only(jobs) -> None:
    packed = load_openb_jobs(AGENTS, arrival_scale=0.1, limit=50)
    for original, scaled in zip(jobs[:50], packed, strict=True):
        assert scaled.arrival == pytest.approx(original.arrival * 0.1)
        assert scaled.duration == original.duration and scaled.value == original.value
    both = load_openb_jobs(AGENTS, time_scale=0.5, arrival_scale=0.1, limit=5)
    assert both[4].arrival == pytest.approx(jobs[4].arrival * 0.05)
    assert both[4].duration == pytest.approx(jobs[4].duration * 0.5)


def test_offset_skips_pods_in_creation_order(jobs) -> None:
    window = load_openb_jobs(AGENTS, offset=100, limit=20)
    assert [j.name for j in window] == [j.name for j in jobs[100:120]]
    assert window[0].arrival == 0 and [j.id for j in window] == list(range(20))
    assert window[5].arrival == pytest.approx(jobs[105].arrival - jobs[100].arrival)
    assert load_openb_jobs(AGENTS, offset=5706) == []


@pytest.mark.parametrize(("field", "value"), [("arrival_scale", 0), ("offset", -1)])
def test_bad_slice_arguments_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        load_openb_jobs(AGENTS, limit=5, **{field: value})


def test_node_sample_keeps_the_mix(nodes) -> None:
    sample = load_openb_nodes(fraction=0.1)
    assert len(sample) == 121
    names = [n.name for n in nodes]
    assert [names.index(n.name) for n in sample] == sorted(names.index(n.name) for n in sample)
    full = Counter((n.gpu_model, n.gpu_count) for n in nodes)
    kept = Counter((n.gpu_model, n.gpu_count) for n in sample)
    for shape, count in full.items():  # systematic sampling: within one node of the share
        assert abs(kept[shape] - count * 0.1) <= 1, shape
    assert load_openb_nodes(fraction=1.0) == nodes
    assert len(load_openb_nodes(fraction=1e-6)) == 1
    with pytest.raises(ValueError, match="fraction"):
        load_openb_nodes(fraction=0)
