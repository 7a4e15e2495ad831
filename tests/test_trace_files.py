"""Any openb-format file replays: by path in a scenario or with `--trace`, with documented
defaults for the optional columns, one-line errors for bad files, and provenance in results."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs.jobs import QoS
from gpuparley.envs.scenario import ScenarioError, load_scenario
from gpuparley.envs.workloads.openb import (
    DEFAULT_LIFETIME,
    TraceFormatError,
    load_openb_jobs,
    read_pods,
)

AGENTS = {"a": 1.0, "b": 1.0}
FULL_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time"
)
FULL_ROWS = [
    "p0,4000,8192,1,1000,,LS,Running,100,3700,100",
    "p1,2000,4096,1,250,T4,BE,Succeeded,160,760,160",
    "p2,8000,16384,2,1000,V100M16|T4,Guaranteed,Running,400,4000,400",
    "p3,1000,1024,0,0,,BE,Running,500,600,500",
]
FIVE_ROWS = ["q0,4000,8192,1,1000", "q1,2000,4096,1,500", "q2,16000,32768,4,1000"]
NODES = [
    "sn,cpu_milli,memory_mib,gpu,model",
    "n0,64000,262144,4,T4",
    "n1,96000,393216,8,V100M16",
]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    """A folder with a full-column pod list, a five-column one, a node list and a scenario that
    names them by relative path."""
    write(tmp_path / "full.csv", [FULL_HEADER, *FULL_ROWS])
    write(tmp_path / "five.csv", ["name,cpu_milli,memory_mib,num_gpu,gpu_milli", *FIVE_ROWS])
    write(tmp_path / "nodes.csv", NODES)
    scenario = {
        "name": "mini-trace",
        "agents": 2,
        "cluster": {"trace": {"nodes": "nodes.csv"}, "mode": "timeslice", "replicas": 4},
        "workload": {"trace": {"path": "full.csv"}},
    }
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(scenario))
    return tmp_path


def test_full_column_file_keeps_every_field(trace_dir: Path) -> None:
    jobs = load_openb_jobs(AGENTS, path=trace_dir / "full.csv")
    assert [j.name for j in jobs] == ["p0", "p1", "p2", "p3"]
    assert [j.arrival for j in jobs] == [0, 60, 300, 400]
    assert [j.duration for j in jobs] == [3600, 600, 3600, 100]
    assert jobs[1].pod.gpu.kind == "share" and jobs[1].pod.gpu.milli == 250
    assert jobs[1].allowed_models == ("T4",) and jobs[2].allowed_models == ("V100M16", "T4")
    assert jobs[2].qos is QoS.GUARANTEED and jobs[1].tags["phase"] == "Succeeded"


def test_five_column_file_gets_the_documented_defaults(trace_dir: Path) -> None:
    jobs = load_openb_jobs(AGENTS, path=trace_dir / "five.csv")
    assert [j.name for j in jobs] == ["q0", "q1", "q2"]  # file order: all arrive at once
    assert all(j.arrival == 0 and j.duration == DEFAULT_LIFETIME for j in jobs)
    assert all(j.qos is QoS.BE and j.allowed_models == () for j in jobs)
    assert all(j.tags["phase"] == "Running" and math.isinf(j.deadline) for j in jobs)
    assert jobs[2].pod.gpu.kind == "whole" and jobs[2].pod.gpu.count == 4
    shorter = load_openb_jobs(AGENTS, path=trace_dir / "five.csv", default_lifetime=60)
    assert all(j.duration == 60 for j in shorter)


@pytest.mark.parametrize(
    ("file", "keep"),
    [("header.csv", {}), ("five.csv", {"offset": 3}), ("full.csv", {"phases": ["Pending"]})],
)
def test_a_replay_with_no_pod_is_refused(trace_dir: Path, file: str, keep: dict[str, Any]) -> None:
    (trace_dir / "header.csv").write_text("name,cpu_milli,memory_mib,num_gpu,gpu_milli\n")
    scenario = yaml.safe_load((trace_dir / "mini.yaml").read_text())
    scenario["workload"]["trace"] = {"path": file, **keep}
    (trace_dir / "empty.yaml").write_text(yaml.safe_dump(scenario))
    with pytest.raises(ScenarioError, match=f"workload.trace: no pod of .*{file} to replay"):
        load_scenario(trace_dir / "empty.yaml").build_jobs()
    # the commands that build the workload say so in one line (exit 2), before any connection
    agent = load_scenario(trace_dir / "empty.yaml").agents[0].name
    for command in (
        ["simulate", "--scenario", str(trace_dir / "empty.yaml"), "--out", str(trace_dir)],
        ["workload", "submit", "--scenario", str(trace_dir / "empty.yaml"), "--agent", agent,
         "--kubeconfig", str(trace_dir / "never-read")],
    ):  # fmt: skip
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and "no pod of" in result.output, result.output


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["name,cpu_milli,memory_mib,num_gpu", "x,1,1,1"], r"lacks column\(s\) gpu_milli"),
        (
            ["name,cpu_milli,memory_mib,num_gpu,gpu_milli", "x,1,1,one,1000"],
            "line 2, column num_gpu",
        ),
        (["name,cpu_milli,memory_mib,num_gpu,gpu_milli", "x,-5,1,1,1000"], "column cpu_milli"),
        (["name,cpu_milli,memory_mib,num_gpu,gpu_milli", "x,1,1,1,0"], "column gpu_milli"),
        (["name,cpu_milli,memory_mib,num_gpu,gpu_milli,qos", "x,1,1,1,9,VIP"], "column qos"),
        ([], "lacks column"),
    ],
)
def test_bad_pod_lists_name_file_line_and_column(
    tmp_path: Path, lines: list[str], expected: str
) -> None:
    path = write(tmp_path / "bad.csv", lines)
    with pytest.raises(TraceFormatError, match=expected) as error:
        read_pods(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_scenario_paths_are_relative_to_the_scenario_file(trace_dir: Path) -> None:
    scenario = load_scenario(trace_dir / "mini.yaml")
    assert [n.name for n in scenario.build_cluster().nodes] == ["n0", "n1"]
    assert len(scenario.build_jobs(0)) == 4
    resolved = scenario.to_dict()
    assert resolved["workload"]["trace"]["path"] == str(trace_dir / "full.csv")
    assert resolved["cluster"]["trace"]["nodes"] == str(trace_dir / "nodes.csv")
    pods = scenario.provenance["workload.trace.path"]
    digest = hashlib.sha256((trace_dir / "full.csv").read_bytes()).hexdigest()
    assert pods == {
        "file": "full.csv", "path": str(trace_dir / "full.csv"), "rows": 4, "sha256": digest,
    }  # fmt: skip


def test_trace_override_replaces_the_bundled_split(trace_dir: Path) -> None:
    scenario = load_scenario("openb", trace=trace_dir / "five.csv")
    assert [j.name for j in scenario.build_jobs(0)] == ["q0", "q1", "q2"]
    assert scenario.provenance["workload.trace.path"]["rows"] == 3
    with pytest.raises(ScenarioError, match="generates its workload"):
        load_scenario("tiny", trace=trace_dir / "five.csv")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"workload": {"trace": {"path": "missing.csv"}}}, "workload.trace.path"),
        ({"workload": {"trace": {"path": "nodes.csv"}}}, "workload.trace.path"),
        ({"cluster": {"trace": {"nodes": "five.csv"}}}, "cluster.trace.nodes"),
        ({"workload": {"trace": {"path": "full.csv", "split": "dev"}}}, "not both"),
    ],
)
def test_bad_trace_fields_fail_at_load_naming_the_field(
    trace_dir: Path, change: dict, field: str
) -> None:
    raw = yaml.safe_load((trace_dir / "mini.yaml").read_text())
    for section, value in change.items():
        raw[section] = {**raw[section], **value}
    path = trace_dir / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match=field):
        load_scenario(path)


def test_simulate_with_trace_records_provenance(trace_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    args = ["simulate", "--scenario", str(trace_dir / "mini.yaml"), "--scheduler", "fgd"]
    result = CliRunner().invoke(
        app, [*args, "--trace", str(trace_dir / "five.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trace_files"]["workload.trace.path"]["file"] == "five.csv"
    assert metrics["trace_files"]["cluster.trace.nodes"]["rows"] == 2
    assert metrics["scenario_config"]["workload"]["trace"]["path"].endswith("five.csv")
    assert metrics["jobs_finished"] == 3


@pytest.mark.parametrize("pods", ["full.csv", "five.csv"])
def test_inflation_with_trace_and_targets(trace_dir: Path, tmp_path: Path, pods: str) -> None:
    out = tmp_path / f"out-{pods}"
    result = CliRunner().invoke(
        app,
        [
            "eval", "--scenario", str(trace_dir / "mini.yaml"), "--experiment", "fgd-inflation",
            "--trace", str(trace_dir / pods), "--targets", "1.0,1.3",
            "--policies", "fgd,best-fit", "--seeds", "0-1", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["config"]["targets"] == [1.0, 1.3]
    assert document["config"]["trace_files"]["workload.trace.path"]["file"] == pods
    for run in document["runs"]:
        metrics = run["metrics"]
        assert 0 < metrics["final_allocation_ratio@100%"] <= 1
        assert metrics["pods@130%"] > metrics["pods@100%"]
    report = (out / "report.md").read_text()
    assert "final allocation ratio (100% arrived)" in report
    assert "final allocation ratio (130% arrived)" in report
    assert f"trace `{pods}`" in report


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--trace", "{dir}/nodes.csv"], "lacks column"),
        (["--trace", "{dir}/nope.csv"], "does not exist"),
        (["--targets", "1.3,x"], "bad --targets"),
        (["--targets", "0"], "bad --targets"),
    ],
)
def test_bad_trace_input_is_one_line_exit_2(
    trace_dir: Path, extra: list[str], message: str
) -> None:
    args = [part.format(dir=trace_dir) for part in extra]
    result = CliRunner().invoke(
        app,
        ["eval", "--scenario", str(trace_dir / "mini.yaml"), "--experiment", "fgd-inflation",
         "--policies", "fgd", "--seeds", "0", "--out", str(trace_dir / "out"), *args],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (trace_dir / "out").exists()  # nothing ran, nothing written


def test_bad_row_found_at_run_time_is_exit_2(trace_dir: Path, tmp_path: Path) -> None:
    write(
        trace_dir / "late.csv",
        ["name,cpu_milli,memory_mib,num_gpu,gpu_milli", "x,1,1,1,1000", "y,1,1,1,z"],
    )
    result = CliRunner().invoke(
        app,
        ["simulate", "--scenario", str(trace_dir / "mini.yaml"), "--trace",
         str(trace_dir / "late.csv"), "--out", str(tmp_path / "sim")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "line 3, column gpu_milli" in result.output and "Traceback" not in result.output
