"""The Helm charts in `charts/`: `helm lint`, `helm template`, and what they render applied to the
real local host apiserver.

The helm CLI is built from the Go module `helm.sh/helm/v4` like the other components
(`gpuparley cluster build`, cached in ~/.cache/gpuparley/bin), hence the `cluster` mark: these
tests need the built binaries, not a source of network. The host chart's static parts are
generated from `render.shared_objects()` (`deploy/charts.py`, checked for staleness in
`tests/test_charts_generated.py`); the per-agent chart is a template, so here it is rendered and
compared object by object with `deploy render` for the same inputs.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpuparley.deploy.apply import apply_objects
from gpuparley.deploy.cluster import build
from gpuparley.deploy.kube import connect
from gpuparley.deploy.render import AgentBundle, render_objects, shared_objects
from gpuparley.deploy.telemetry import Telemetry

pytestmark = pytest.mark.cluster
CHARTS = Path(__file__).resolve().parents[2] / "charts"
HOST, NEGOTIATOR = CHARTS / "gpuparley-host", CHARTS / "gpuparley-negotiator"
HELM_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart", "app.kubernetes.io/version")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        binary = build.binary_path("helm")
    except build.MissingBinaryError as exc:
        pytest.fail(str(exc), pytrace=False)
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template(chart: Path, *values: str) -> list[dict[str, Any]]:
    """`helm template` of a chart (CRDs included) with `--set` values, as objects."""
    sets = [arg for value in values for arg in ("--set", value)]
    result = helm("template", "release", str(chart), "--include-crds", *sets)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _key(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without Helm's own labels (everything else must be equal)."""
    out = json.loads(json.dumps(obj))
    labels = out["metadata"].get("labels") or {}
    for name in HELM_LABELS:
        labels.pop(name, None)
    if obj["kind"] == "ConfigMap" and "negotiator.yaml" in out.get("data", {}):
        out["data"]["negotiator.yaml"] = yaml.safe_load(out["data"]["negotiator.yaml"])
    return out


@pytest.mark.parametrize("chart", [HOST, NEGOTIATOR], ids=lambda p: p.name)
def test_helm_lint_passes(chart: Path) -> None:
    sets = ["--set", "agent=alpha"] if chart == NEGOTIATOR else []  # the host chart has no agent
    result = helm("lint", str(chart), "--strict", *sets)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_host_chart_renders_the_shared_objects_and_a_leader_elected_market() -> None:
    docs = {_key(d): d for d in template(HOST)}
    for obj in shared_objects():
        assert _comparable(docs[_key(obj)]) == _comparable(obj), _key(obj)
    market = docs["Deployment", "gpuparley-system", "gpuparley-market"]
    spec = market["spec"]["template"]["spec"]
    assert market["spec"]["replicas"] == 2
    assert spec["serviceAccountName"] == "market"
    args = spec["containers"][0]["args"]
    assert args[:2] == ["market", "run"] and "--leader-elect" in args
    probes = spec["containers"][0]
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    dashboard = docs["ConfigMap", "gpuparley-system", "gpuparley-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(dashboard["data"]["gpuparley.json"])


def test_the_dashboard_queries_only_metrics_the_processes_export() -> None:
    board = json.loads((HOST / "files" / "gpuparley-dashboard.json").read_text())
    exported = {m.name for m in Telemetry("x").registry.collect()}
    used = set()
    for panel in board["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"gpuparley_[a-z_]+", target["expr"]))
    suffixes = ("_bucket", "_total", "_count", "_sum")
    base = {next((u.removesuffix(s) for s in suffixes if u.endswith(s)), u) for u in used}
    assert base <= exported, base - exported
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for watched in ("price", "lease", "latency"):
        assert watched in titles


@pytest.mark.parametrize(
    ("values", "bundle"),
    [
        ((), AgentBundle(agent="alpha")),
        (
            ("budgetPerEpoch=2.5", "peers={beta,gamma}", "replicas=2"),
            AgentBundle(agent="alpha", budget_per_epoch=2.5, peers=("beta", "gamma"), replicas=2),
        ),
        (
            ("policy.source=configMap", "policy.configMap.name=alpha-policy"),
            AgentBundle(agent="alpha", policy_configmap="alpha-policy"),
        ),
    ],
    ids=["defaults", "peers-budget-replicas", "policy-from-configmap"],
)
def test_the_negotiator_chart_renders_what_deploy_render_does(
    values: tuple[str, ...], bundle: AgentBundle
) -> None:
    charted = {_key(d): d for d in template(NEGOTIATOR, "agent=alpha", *values)}
    rendered = render_objects(bundle)[len(shared_objects()) :]
    for obj in rendered:
        assert _key(obj) in charted, _key(obj)
        assert _comparable(charted[_key(obj)]) == _comparable(obj), _key(obj)
    extra = set(charted) - {_key(o) for o in rendered}
    assert extra == {("Service", "agent-alpha", "gpuparley-negotiator-metrics")}


def test_the_negotiator_chart_mounts_a_policy_from_a_volume_or_an_image() -> None:
    for values, source in (
        (("policy.source=volume", "policy.volume.persistentVolumeClaim.claimName=models"), "pvc"),
        (("policy.source=image", "policy.image.reference=registry.example/models:v3"), "image"),
    ):
        docs = {_key(d): d for d in template(NEGOTIATOR, "agent=alpha", *values)}
        pod = docs["Deployment", "agent-alpha", "gpuparley-negotiator"]["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == "policy"]
        assert ("persistentVolumeClaim" in volume) == (source == "pvc")
        assert ("image" in volume) == (source == "image")
        args = pod["containers"][0]["args"]
        assert args[args.index("--policy") + 1] == "learned:/etc/gpuparley/policy/policy.onnx"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((), "agent: set the agent's name"),
        (("agent=market",), "reserved for the market"),
        (("agent=Alpha",), "is not a DNS label"),
        (("agent=alpha", "policy.source=nfs"), "at '/policy/source'"),
        (("agent=alpha", "policy.source=configMap"), "policy.configMap.name"),
        # values.schema.json (generated, `deploy/charts.py`): helm refuses before rendering
        (("agent=alpha", "budgetPerEpoch=-5"), "at '/budgetPerEpoch': minimum"),
        (("agent=alpha", "mechanism=vickrey"), "at '/mechanism'"),
        (("agent=alpha", "policy.spec=bogus"), "at '/policy/spec'"),
        (("agent=alpha", "metricsPort=99999"), "at '/metricsPort': maximum"),
        (("agent=alpha", "peers={Beta}"), "at '/peers/0'"),
        (("agent=alpha", "budget=5"), "additional properties 'budget' not allowed"),
    ],
)
def test_the_negotiator_chart_refuses_bad_values_in_one_line(
    values: tuple[str, ...], message: str
) -> None:
    sets = [arg for value in values for arg in ("--set", value)]
    result = helm("template", "release", str(NEGOTIATOR), *sets)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("market.seed=-1", "at '/market/seed': minimum"),
        ("market.substepTimeout=0", "at '/market/substepTimeout': exclusiveMinimum"),
        ("market.keepReleased=200", "at '/market/keepReleased': maximum: got 200, want 128"),
        ("market.replica=2", "additional properties 'replica' not allowed"),
    ],
)
def test_the_host_chart_refuses_bad_values_in_one_line(value: str, message: str) -> None:
    result = helm("template", "release", str(HOST), "--set", value)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_the_rendered_charts_apply_to_the_real_host_apiserver(
    cluster: Any, deployed: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both charts, rendered by helm, server-side applied to the local host plane: every object
    is accepted (CRDs, RBAC, admission policies, quotas, the Negotiator, both Deployments), a
    second apply changes nothing, and the applies leave no file behind (the client's API
    discovery cache)."""
    objects = template(HOST) + template(NEGOTIATOR, "agent=alpha", "peers={beta}")
    objects.sort(key=lambda o: o["kind"] != "CustomResourceDefinition")  # CRDs first, as helm
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with connect(cluster.host.kubeconfig) as api:
        first = apply_objects(api, objects)
        second = apply_objects(api, objects)
    assert len(first) == len(objects)
    assert not [r for r in second if r.changed], [r for r in second if r.changed]
    assert list(tmp_path.iterdir()) == []
