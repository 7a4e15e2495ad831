"""The in-cluster negotiator's pure parts, without a cluster: jobs <-> pods <-> demands, the
market view's wire form, host pods under a lease, the lease trace, the telemetry endpoints, and
a reconcile against a host that refuses its pods."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import yaml

from gpuparley.agents.negotiators.simple import RandomNegotiator, Truthful
from gpuparley.deploy import objects
from gpuparley.deploy.answers_ahead import ahead_id
from gpuparley.deploy.gpu_resources import GPU_RESOURCE
from gpuparley.deploy.gpu_resources import lease_item_limits as host_gpu_limits
from gpuparley.deploy.kube import Invalid
from gpuparley.deploy.market_questions import Questions
from gpuparley.deploy.negotiator import NegotiatorProcess
from gpuparley.deploy.negotiator_config import NegotiatorConfig
from gpuparley.deploy.telemetry import JsonFormatter, Telemetry
from gpuparley.deploy.trace import simulated_trace
from gpuparley.deploy.workload import (
    JOB_NAME_ANNOTATION,
    WorkloadError,
    group_pods,
    host_pod,
    object_safe,
    pod_demand,
    pods_for_job,
    waiting,
)
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.demand import demand_of
from gpuparley.envs.market.encoding import encode
from gpuparley.envs.market.messages import Lease, ResourceItem
from gpuparley.envs.market.parallel_env import GPUMarketEnv, has_decision
from gpuparley.envs.market.views import agent_views
from gpuparley.envs.market.wire import view_from_dict, view_to_dict
from gpuparley.envs.scenario import load_scenario, scenarios_dir
from gpuparley.policy.specs import parse_negotiator


@pytest.mark.parametrize("scenario", ["cluster-e2e", "mig-mixed", "gang-heavy", "timeslice-noisy"])
def test_pods_read_back_as_the_markets_demand(scenario: str) -> None:
    """Every GPU job, written as pods and read back, asks for exactly what the market knows."""
    jobs = [j for j in load_scenario(scenario).build_jobs(0) if j.pod.gpu.kind != "none"]
    pods = [pod for job in jobs for pod in pods_for_job(job)]
    groups = group_pods(json.loads(json.dumps(pods)))  # as the apiserver would hand them back
    assert len(groups) == len(jobs)
    for job in jobs:
        group = groups[job.name]
        assert group.complete
        assert group.demand() == demand_of(job)
        assert all(waiting(pod, objects.AGENT_SCHEDULER) for pod in group.pods)


def test_a_partial_or_inconsistent_group_is_not_a_demand() -> None:
    job = next(j for j in load_scenario("cluster-e2e").build_jobs(0) if j.pods == 2)
    first, second = pods_for_job(job)
    assert not group_pods([first])[job.name].complete
    second["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] = "3"
    with pytest.raises(WorkloadError, match="different resources"):
        group_pods([first, second])[job.name].demand()


def test_unreadable_quantities_name_the_field() -> None:
    job = load_scenario("cluster-e2e").build_jobs(0)[0]
    pod = pods_for_job(job)[0]
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "1.5"
    with pytest.raises(WorkloadError, match=r"cpu: cannot read quantity '1\.5'"):
        pod_demand(pod)


def test_object_safe_names_are_dns_labels() -> None:
    assert object_safe("Gen_000001/A") == "gen-000001-a"
    assert len(object_safe("x" * 200)) <= 52
    assert object_safe("___") == "job"


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
def test_views_survive_the_wire_exactly(mechanism: str) -> None:
    """A view sent as JSON encodes to the very same observation and mask."""
    market = Market(load_scenario("gang-heavy"), 0, mechanism)
    for _ in range(30):
        for view in agent_views(market).values():
            wired = view_from_dict(json.loads(json.dumps(view_to_dict(view))))
            assert wired == view
            (obs_a, mask_a), (obs_b, mask_b) = encode(view), encode(wired)
            assert (obs_a == obs_b).all() and (mask_a == mask_b).all()
        market.passed.update(market.agents)
        market.end_substep()


def test_host_pods_take_the_leases_node_and_resources() -> None:
    jobs = load_scenario("cluster-e2e").build_jobs(0)
    mig_job = next(j for j in jobs if j.pod.gpu.kind == "mig")
    item = ResourceItem(pod=0, node="mig-0", gpu_kind="mig", gpus=(1,),
                        mig_profile=mig_job.pod.gpu.profile, mig_start=4)  # fmt: skip
    pod = host_pod(pods_for_job(mig_job)[0], "lease-x", item)
    assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "mig-0"}
    assert pod["metadata"]["labels"][objects.LEASE_LABEL] == "lease-x"
    # Routed to its lease's fit binding: the shard is the last character of the lease's name.
    assert pod["metadata"]["labels"][objects.LEASE_SHARD_LABEL] == "x"
    assert waiting(pod, objects.MARKET_SCHEDULER)  # the market binds it
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits[f"nvidia.com/mig-{mig_job.pod.gpu.profile}"] == "1"
    whole = ResourceItem(pod=0, node="whole-0", gpu_kind="whole", gpus=(0, 1))
    assert host_gpu_limits(whole) == {GPU_RESOURCE: "2"}
    share = ResourceItem(pod=0, node="shared-0", gpu_kind="share", gpus=(1,), gpu_milli=250)
    assert host_gpu_limits(share) == {GPU_RESOURCE: "1"}  # one time-slicing replica


def test_the_simulated_trace_is_deterministic_and_balanced() -> None:
    scenario = load_scenario("cluster-e2e")
    truthful = parse_negotiator("scripted:truthful")
    first = simulated_trace(scenario, 0, truthful.negotiator())
    again = simulated_trace(scenario, 0, truthful.negotiator())
    assert first == again and first
    signed = {e.lease_id for e in first if e.event == "signed"}
    released = {e.lease_id for e in first if e.event == "released"}
    assert signed == released  # the workload finishes: every lease ends


def test_policy_specs_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown policy 'torch:/x'"):
        parse_negotiator("torch:/x")
    with pytest.raises(ValueError, match="no negotiator 'nope'"):
        parse_negotiator("scripted:nope")
    with pytest.raises(ValueError, match="central scheduler"):
        parse_negotiator("kai")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_telemetry_serves_metrics_health_and_readiness() -> None:
    telemetry = Telemetry("negotiator")
    server = telemetry.serve(0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        telemetry.rejections.labels("stale").inc()
        telemetry.decision_seconds.observe(0.003)
        code, body = _get(f"{base}/metrics")
        assert code == 200
        assert 'gpuparley_messages_rejected_total{reason="stale"} 1.0' in body
        assert "gpuparley_decision_seconds_bucket" in body
        assert _get(f"{base}/healthz")[0] == 200
        assert _get(f"{base}/readyz")[0] == 503  # not ready until connected
        telemetry.ready = True
        assert _get(f"{base}/readyz")[0] == 200
        telemetry.stale_after = 0.0  # a wedged loop: liveness fails
        assert _get(f"{base}/healthz")[0] == 503
    finally:
        server.shutdown()


def test_logs_are_json_lines_with_extra_fields() -> None:
    import logging

    record = logging.makeLogRecord({"msg": "bid %s", "args": ("x",), "levelname": "INFO",
                                    "name": "gpuparley.negotiator", "job": "gen-1"})  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "bid x" and entry["job"] == "gen-1" and entry["level"] == "info"


def test_the_rendered_deployment_runs_the_real_command_line() -> None:
    """The Deployment's args parse with the very command the image runs (no drift)."""
    import typer

    from gpuparley.deploy.process_cli import app_negotiator
    from gpuparley.deploy.render import AgentBundle, deployment

    bundle = AgentBundle(agent="alpha", policy="learned:/models/policy.onnx", mechanism="auction")
    container = deployment(bundle)["spec"]["template"]["spec"]["containers"][0]
    group, command, *args = container["args"]
    assert (group, command) == ("negotiator", "run")
    run = typer.main.get_command(app_negotiator).commands["run"]  # type: ignore[attr-defined]
    context = run.make_context("run", list(args))
    assert context.params["agent"] == "alpha"
    assert context.params["policy"] == "learned:/models/policy.onnx"
    assert context.params["leader_elect"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


class AdmissionNotReadyHost:
    """The host right after a kube-apiserver restart, as in a failed cluster run: every pod
    create is refused by the lease-fit admission policy (its paramKind, the GPULease CRD, not
    resolved yet -- for up to 30 s); everything else is written."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.written: list[tuple[str, str, dict[str, Any]]] = []

    def each(self, request: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        return [request(item) for item in items]  # in order: the writes logged as made

    def create(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        if resource == "pods":
            raise Invalid(422, "Invalid", "failed to find resource referenced by paramKind")
        self.written.append((resource, namespace, obj))
        return {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}

    def merge_patch(
        self, resource: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        self.written.append((resource, namespace, patch))
        return {"metadata": {"namespace": namespace, "name": name}, **patch}


def test_a_negotiator_answers_the_market_while_its_pods_are_refused() -> None:
    """The agent holds a lease whose host pods the host refuses, and the market asks it to
    decide: it still answers (a bid, recorded in its status) and only then reports the pod
    error for a retry. (Before, the refused pod blocked the answer, the market timed the agent
    out as a pass, and the crash test's lease trace left the simulator's.)"""
    scenario = load_scenario("cluster-e2e")
    env = GPUMarketEnv(scenario=scenario)
    env.reset(seed=0)
    market = env.market
    assert market is not None
    agent = "gamma"
    assert has_decision(env.views[agent])
    jobs = [job for job in scenario.build_jobs(0) if job.owner == agent]
    leased = next(j for j in jobs if j.name == "gen-000015")  # the job of the failed run
    lease = Lease.model_validate(
        {"id": "market.0.lease-1", "sender": "market", "receiver": agent, "epoch": 0,
         "lease_id": "lease-1", "holder": agent, "lender": "market", "job": leased.name,
         "resources": [{"pod": 0, "node": "whole-0", "gpu_kind": "share", "gpus": [1],
                        "gpu_milli": leased.pod.gpu.milli}],
         "start_epoch": 0, "expires_epoch": 2, "price": 0.0}
    )  # fmt: skip
    document = {
        "epoch": market.epoch,
        "substep": 0,
        "term_epochs": market.term_epochs,
        "mechanism": market.mechanism.name,
        "view": view_to_dict(env.views[agent]),
    }
    host = AdmissionNotReadyHost()
    policy = parse_negotiator("learned:default").negotiator(backend="onnxruntime")
    config = NegotiatorConfig(agent=agent, policy="learned:default")
    process = NegotiatorProcess(config, host, host, policy)  # type: ignore[arg-type]
    home = objects.agent_namespace(agent)
    process.leases.observe(objects.gpulease_object(lease))
    view = {"metadata": {"name": objects.VIEW_CONFIGMAP, "namespace": home, "resourceVersion": "1"},
            "data": {objects.VIEW_KEY: json.dumps(document)}}  # fmt: skip
    process.views.observe(view)
    for job in jobs:
        for pod in json.loads(json.dumps(pods_for_job(job))):
            pod["metadata"]["namespace"] = "default"
            process.agent_pods.observe(pod)
    with pytest.raises(Invalid, match="paramKind"):
        process.step()
    statuses = [
        patch["status"] for resource, _, patch in host.written if resource.endswith("/status")
    ]
    assert statuses and statuses[-1]["observedEpoch"] == 0 and statuses[-1]["observedSubstep"] == 0
    assert statuses[-1]["action"] == "bid"
    assert statuses[-1]["bid"]["id"] == statuses[-1]["message"]  # the bid travels in the status
    assert [obj for resource, _, obj in host.written if resource == "offers"] == []


@pytest.mark.parametrize("policy", [Truthful(), RandomNegotiator(0)], ids=["truthful", "random"])
def test_a_deterministic_negotiator_answers_the_rest_of_the_round_ahead(tmp_path, policy) -> None:
    """Asked at the start of a burst's round, a negotiator whose policy is a function of its
    view answers the round's later sub-steps too, in its status: each answer under the sub-step
    and the digest of the view it answered, a bid whole under an id of its own (the asked view's
    bid is in the status too; no bid is an Offer object). A seeded random one answers only what
    it is asked."""
    doc = yaml.safe_load((scenarios_dir() / "cluster-e2e.yaml").open())
    doc["workload"]["generator"].update({"jobs": 24, "hours": 0.01, "rate_per_hour": 1e6})
    doc["market"]["clearing_interval"] = 60.0
    (tmp_path / "burst.yaml").write_text(yaml.safe_dump(doc))
    scenario = load_scenario(str(tmp_path / "burst.yaml"))
    env = GPUMarketEnv(scenario=scenario)
    env.reset(seed=0)
    agent = "alpha"
    questions = Questions(None, env, None)  # type: ignore[arg-type]
    document = questions.documents([agent], (0, 0))[agent]
    host = AdmissionNotReadyHost()
    config = NegotiatorConfig(agent=agent, policy="scripted")
    process = NegotiatorProcess(config, host, host, policy)  # type: ignore[arg-type]
    home = objects.agent_namespace(agent)
    view = {"metadata": {"name": objects.VIEW_CONFIGMAP, "namespace": home, "resourceVersion": "1"},
            "data": {objects.VIEW_KEY: json.dumps(document)}}  # fmt: skip
    process.views.observe(view)
    for job in scenario.build_jobs(0):
        if job.owner == agent:
            for pod in json.loads(json.dumps(pods_for_job(job))):
                pod["metadata"]["namespace"] = "default"
                process.agent_pods.observe(pod)
    process.step()
    status = [patch for resource, _, patch in host.written if resource.endswith("/status")][-1]
    ahead = status["status"]["ahead"]
    assert [obj for resource, _, obj in host.written if resource == "offers"] == []
    asked = status["status"]["bid"]  # the asked view's bid
    assert asked["id"] == status["status"]["message"] == f"{agent}.0.0"
    if isinstance(policy, RandomNegotiator):
        assert ahead == []
        return
    assert [entry["substep"] for entry in ahead] == list(range(1, len(ahead) + 1))
    assert len(ahead) >= 3 and all(entry["action"] == "bid" for entry in ahead)
    for entry in ahead:  # each bid whole in the status, under its own id
        assert (
            entry["bid"]["id"]
            == entry["message"]
            == ahead_id(agent, 0, entry["substep"], entry["view"])
        )
        assert entry["bid"]["sender"] == agent and entry["bid"]["kind"] == "Bid"


def test_an_opened_view_is_no_question_and_a_broken_one_is_rejected(monkeypatch) -> None:
    """The market opens each agent's view ConfigMap empty at start-up: nothing to answer, and
    nothing to complain about; a view whose payload does not parse is a rejection."""
    host = AdmissionNotReadyHost()
    process = NegotiatorProcess(
        NegotiatorConfig(agent="alpha", policy="scripted"), host, host, None
    )  # type: ignore[arg-type]
    rejected: list[str] = []
    monkeypatch.setattr(process, "_reject", lambda reason, detail: rejected.append(reason))
    home = objects.agent_namespace("alpha")
    meta = {"name": objects.VIEW_CONFIGMAP, "namespace": home, "resourceVersion": "1"}
    process.views.observe({"metadata": meta, "data": {}})
    process.step()
    assert host.written == [] and rejected == []
    process.views.observe({"metadata": {**meta, "resourceVersion": "2"},
                           "data": {objects.VIEW_KEY: "{not json"}})  # fmt: skip
    process.step()
    assert host.written == [] and rejected == ["malformed-view"]


def test_a_reconcile_touches_only_the_leases_not_in_step() -> None:
    """The reconcile runs at every change the negotiator watches: a lease whose pods already
    say what it says on the host and in the agent's plane costs no request, and its message is
    not read again until its object changes; a lease whose agent pod lags its host pod's phase
    is mirrored, alone."""
    from fake_host import FakeKube

    class CountingKube(FakeKube):
        """Logs the leases handed to its request pool."""

        def __init__(self) -> None:
            super().__init__()
            self.handed: list[str] = []

        def each(self, request: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
            work = list(items)
            self.handed += [item[0]["metadata"]["name"] for item in work]
            return super().each(request, work)

    job = next(j for j in load_scenario("cluster-e2e").build_jobs(0) if j.name == "gen-000021")
    host, plane = CountingKube(), FakeKube()
    config = NegotiatorConfig(agent=job.owner, policy="scripted")
    process = NegotiatorProcess(config, host, plane, None)  # type: ignore[arg-type]
    sync, home = process.lease_sync, objects.agent_namespace(job.owner)
    agent_pods, leases = [], []
    for index, copy_of in enumerate(("job-a", "job-b")):
        (pod,) = json.loads(json.dumps(pods_for_job(job)))
        pod["metadata"].update(name=f"{copy_of}-0", namespace="default")
        pod["metadata"]["labels"][objects.JOB_LABEL] = copy_of
        pod["metadata"]["annotations"][JOB_NAME_ANNOTATION] = copy_of
        plane.add("pods", pod)
        agent_pods.append(pod)
        lease = Lease(
            id=f"market.{copy_of}", sender="market", receiver=job.owner, epoch=0,
            lease_id=f"lease-{copy_of}", holder=job.owner, lender="market", job=copy_of,
            resources=(ResourceItem(pod=0, node="whole-0", gpu_kind="whole", gpus=(index,)),),
            start_epoch=0, expires_epoch=4, price=1.0,
        )  # fmt: skip
        obj = objects.gpulease_object(lease)
        obj["metadata"].update(namespace=home, resourceVersion=f"v-{copy_of}")
        leases.append(obj)
    groups = group_pods(agent_pods)
    sync.sync(groups, leases)
    assert [w[0] for w in host.writes] == ["create", "create"]  # the host pods
    for pod in host.list("pods"):  # the market bound them and they run
        pod["spec"]["nodeName"], pod["status"] = "whole-0", {"phase": "Running"}
        pod["metadata"]["resourceVersion"] += "0"  # newer, as the watch shows it
        process.host_pods.observe(pod)
    sync.sync(groups, leases)  # the agent's pods follow: bound, then their phase mirrored
    assert (
        sorted(w[:2] for w in plane.writes)
        == [("create", "pods/binding")] * 2 + [("patch", "pods/status")] * 2
    )
    groups = group_pods(plane.list("pods", "default"))  # as its watch shows them now
    read = {name: message for name, (_version, message) in sync._read.items()}
    host_writes, plane_writes = len(host.writes), len(plane.writes)
    host.handed.clear()
    sync.sync(groups, leases)
    assert (len(host.writes), len(plane.writes)) == (host_writes, plane_writes)
    assert host.handed == []  # nothing to do, and nothing handed to the request pool
    assert all(sync._read[name][1] is message for name, message in read.items())
    plane.objects["pods", "default", "job-b-0"]["status"]["phase"] = "Pending"  # it lags
    groups = group_pods(plane.list("pods", "default"))
    leases[0]["metadata"]["resourceVersion"] = "v-changed"  # job-a's object written again
    sync.sync(groups, leases)
    assert len(host.writes) == host_writes
    assert plane.writes[plane_writes:] == [("patch", "pods/status", "job-b-0")]
    assert host.handed == [leases[1]["metadata"]["name"]]
    first = leases[0]["metadata"]["name"]
    assert sync._read[first][1] is not read[first]  # read again: its object changed
    assert sync._read[leases[1]["metadata"]["name"]][1] is read[leases[1]["metadata"]["name"]]
