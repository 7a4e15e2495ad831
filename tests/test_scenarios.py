"""Scenario files: every bundled one builds; bad files fail naming file, field and choices; CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpuparley.cli import app
from gpuparley.envs.load import offered_load, offered_work_ratio, peak_demand
from gpuparley.envs.scenario import (
    Scenario,
    ScenarioError,
    _can_host,
    _validate,
    list_scenarios,
    load_scenario,
)
from gpuparley.envs.settings import SimulationSettings

BUNDLED = [
    "cluster-e2e",
    "gang-heavy",
    "mig-mixed",
    "openb",
    "openb-loaded",
    "timeslice-noisy",
    "tiny",
]
TRACES = ("openb", "openb-loaded")

GOOD = {
    "description": "test",
    "agents": [{"name": "a"}, {"name": "b", "quota_share": 0.4}],
    "cluster": {
        "nodes": [
            {"name": "ex", "gpu_model": "A100-80GB", "gpus": 8},
            {
                "name": "mig",
                "gpu_model": "A100-80GB",
                "gpus": 8,
                "mode": "mig",
                "mig_layout": "balanced",
            },
        ]
    },
    "workload": {"generator": {"jobs": 20}},
}


def write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_(path: str, value: object) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    target = data
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
    target[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return data


def test_list_scenarios_names_descriptions() -> None:
    listed = dict(list_scenarios())
    assert sorted(listed) == BUNDLED
    assert all(listed.values())


@pytest.mark.parametrize("name", [n for n in BUNDLED if n not in TRACES])
def test_bundled_generated_scenarios_build(name: str) -> None:
    scenario = load_scenario(name)
    cluster = scenario.build_cluster()
    jobs = scenario.build_jobs(seed=3)
    assert cluster.gpu_count > 0 and jobs
    assert [j.id for j in jobs] == list(range(len(jobs)))
    assert {j.owner for j in jobs} <= {a.name for a in scenario.agents}
    assert isinstance(scenario.settings, SimulationSettings)
    assert sum(a.quota_share for a in scenario.agents) == pytest.approx(1.0)
    assert scenario.build_jobs(3) == jobs


def test_openb_scenario() -> None:
    scenario = load_scenario("openb")
    cluster = scenario.build_cluster()
    assert len(cluster.nodes) == 1213 and cluster.gpu_count == 6212
    assert len(scenario.build_jobs()) == 5706
    assert len(scenario.agents) == 8
    assert not scenario.settings.contention and not scenario.settings.speed_scaling


def test_openb_loaded_is_a_loaded_slice_of_the_trace() -> None:
    scenario = load_scenario("openb-loaded")
    cluster, jobs = scenario.build_cluster(), scenario.build_jobs()
    assert (len(cluster.nodes), cluster.gpu_count, len(jobs)) == (12, 62, 1000)
    assert cluster.gpu_models() == {"G2": 40, "G3": 8, "T4": 8, "V100M16": 4, "P100": 2}
    trace = load_scenario("openb").build_jobs()
    assert [j.name for j in jobs] == [j.name for j in trace[3123:4123]]
    for job, original in zip(jobs, trace[3123:4123], strict=True):  # lifetimes unchanged
        assert job.duration == original.duration
        assert job.arrival == pytest.approx((original.arrival - trace[3123].arrival) * 0.0718)
    assert 1.0 <= offered_load(jobs, cluster.gpu_count) <= 1.2
    assert offered_load(jobs, cluster.gpu_count) == pytest.approx(1.100, rel=1e-3)  # the YAML's
    assert offered_work_ratio(jobs, cluster.gpu_count) == pytest.approx(2.21, rel=1e-2)
    assert peak_demand(jobs) > 1.4 * cluster.gpu_count  # the cluster really fills up
    assert all(  # every pod can run somewhere, so "run until every job finishes" can end
        any(_can_host(node, job.pod, job.allowed_models) for node in cluster.nodes) for job in jobs
    )


def test_trace_slice_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"workload\.trace\.arrival_scale"):
        load_scenario("openb-loaded", {"workload.trace.arrival_scale": 0})
    with pytest.raises(ScenarioError, match=r"workload\.trace\.offset"):
        load_scenario("openb-loaded", {"workload.trace.offset": -3})
    with pytest.raises(ScenarioError, match=r"cluster\.node_fraction"):
        load_scenario("openb-loaded", {"cluster.node_fraction": 1.5})
    with pytest.raises(ScenarioError, match="node_fraction apply to `trace` clusters"):
        load_scenario(write(tmp_path, with_("cluster.node_fraction", 0.5)))


def test_tiny_is_small() -> None:
    scenario = load_scenario("tiny")
    assert scenario.build_cluster().gpu_models() == {"A100-80GB": 8}
    assert 30 <= len(scenario.build_jobs()) <= 60
    assert [a.name for a in scenario.agents] == ["alice", "bob", "carol"]


def test_mig_layouts_resolved() -> None:
    nodes = {n.name: n for n in load_scenario("mig-mixed").build_cluster().nodes}
    assert nodes["a100-balanced-0"].mig_layout == (
        ("1g.10gb", 0), ("1g.10gb", 1), ("2g.20gb", 2), ("3g.40gb", 4),
    )  # fmt: skip
    assert len(nodes["a100-small-0"].mig_layout) == 7


def test_defaults_quota_and_budget(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, GOOD, "good.yaml"))
    a, b = scenario.agents
    assert (a.quota_share, b.quota_share) == pytest.approx((0.6, 0.4))
    price_per_epoch = 16 * 3.93 * 300 / 3600  # 16 A100-80GB at list price, one 5-minute epoch
    assert a.budget_per_epoch == pytest.approx(0.6 * price_per_epoch, rel=1e-3)
    assert scenario.market.mechanism == "auction" and scenario.seed == 0


def test_overrides_nested_and_dotted() -> None:
    nested = load_scenario("tiny", {"workload": {"generator": {"jobs": 5}}})
    dotted = load_scenario("tiny", {"workload.generator.jobs": 5, "seed": 4})
    assert len(nested.build_jobs()) == len(dotted.build_jobs()) == 5
    assert dotted.seed == 4


def test_to_dict_round_trips() -> None:
    for name in BUNDLED:
        scenario = load_scenario(name)
        again = Scenario(_validate(scenario.to_dict(), name))
        assert again.to_dict() == scenario.to_dict()


@pytest.mark.parametrize(
    ("change", "field", "allowed"),
    [
        (("cluster.nodes.0.gpu_model", "B200"), "cluster.nodes[0].gpu_model", "A100-40GB"),
        (("cluster.nodes.1.mig_layout", ["9g.90gb"]), "cluster.nodes[1].mig_layout", "3g.40gb"),
        (("cluster.nodes.1.mig_layout", "all-1g.5gb"), "cluster.nodes[1].mig_layout", "1g.10gb"),
        (("cluster.nodes.1.mig_layout", [["3g.40gb", 1]]), "cluster.nodes[1].mig_layout", "[0, 4]"),
        (("cluster.nodes.0.mode", "mps"), "cluster.nodes[0].mode", "timeslice"),
        (("cluster.nodes.0.gpus", "eight"), "cluster.nodes[0].gpus", "integer"),
        (("cluster.nodes.0.colour", "red"), "cluster.nodes[0].colour", "gpu_model"),
        (("workload.generator.jobz", 5), "workload.generator.jobz", "did you mean 'jobs'"),
        (("market.payment_rule", "third"), "market.payment_rule", "'second'"),
        (("agents.0.class_weights", {"gaming": 2}), "agents[0].class_weights", "notebook"),
        # YAML's .inf passes every lower bound; no scenario field means infinity
        (("workload.generator.rate_per_hour", float("inf")), "rate_per_hour", "finite number"),
        (("agents.0.weight", float("inf")), "agents[0].weight", "finite number"),
    ],
)
def test_bad_files_name_file_field_and_choices(
    tmp_path: Path, change: tuple[str, object], field: str, allowed: str
) -> None:
    path = write(tmp_path, with_(*change))
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    message = str(error.value)
    assert str(path) in message and field in message and allowed in message


def test_unservable_size_is_rejected(tmp_path: Path) -> None:
    data = with_("workload.generator", {"classes": {"training": {"sizes": {"2x16": 1}}}})
    with pytest.raises(ScenarioError, match="fits no node"):
        load_scenario(write(tmp_path, data))


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ScenarioError, match="available: cluster-e2e, gang-heavy, mig-mixed"):
        load_scenario("nope")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("agents: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(path)


runner = CliRunner()


def test_cli_scenarios_table() -> None:
    result = runner.invoke(app, ["scenarios"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in BUNDLED:
        assert name in result.output
    assert "6212" in result.output


def test_cli_scenario_show_tiny() -> None:
    result = runner.invoke(app, ["scenario", "show", "tiny"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output.split("\n  ")[0].split("  cluster:")[0].split("\n ")[0])
    assert shown["name"] == "tiny"
    assert "GPU-hours" in result.output and "A100-80GB" in result.output


def test_cli_bad_name_exits_2() -> None:
    result = runner.invoke(app, ["scenario", "show", "nope"])
    assert result.exit_code == 2
    assert "unknown scenario 'nope'" in result.output
    assert "Traceback" not in result.output


def test_cli_bad_file_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, with_("cluster.nodes.0.mode", "mps"))
    result = runner.invoke(app, ["scenario", "show", str(path)])
    assert result.exit_code == 2 and "cluster.nodes[0].mode" in result.output


@pytest.mark.parametrize("pair", ["seed", "agents=[", "=3"])
def test_cli_bad_override_exits_2(pair: str) -> None:
    result = runner.invoke(app, ["scenario", "show", "tiny", "--set", pair])
    assert result.exit_code == 2 and f"bad --set '{pair}'" in result.output
