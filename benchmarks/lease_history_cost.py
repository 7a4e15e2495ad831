"""What does a lease history cost, and what do the leases an agent holds cost? Released
GPULeases stay on the host (the record of how each lease ended; the market keeps each agent's
latest `--keep-released` and deletes older ones once applied, `deploy/market_collection.py`),
and the market keeps every end it made, so three costs could grow with every lease ever held,
and three with every lease held now:

* **admission**: the lease-fit policy (`deploy/admission_pods.py`) takes GPULeases as parameters,
  and the apiserver evaluates it once per parameter for every pod write in an agent's namespace.
  The market labels a lease `gpuparley.io/released` as it releases it, and the policy's binding
  selects only leases without that label. Measured: an agent's pod create (a dry run: admission
  runs in full, nothing is stored) with no lease but its own (the baseline), then with `--leases`
  released leases written as the market writes them (labelled), then with the same leases
  without the label (every lease a parameter, as before the label), on one host plane. And the
  leases an agent holds: the same create with `--live` live leases in the namespace, each in its
  shard as the market writes them (the policy has one binding per lease shard, so the pod's
  binding takes its shard's leases), against the same leases all in the pod's shard (every
  live lease a parameter, as with the one binding before the shards).
* **the negotiator's reconcile** (`LeaseSync.sync`, run at every change it
  watches), in process on the unit tests' fake apiserver: with `--leases` released leases whose
  end it has applied (skipped since), against the same leases looked at again at every
  reconcile (the baseline: as before it kept which ends it applied); with no lease for
  reference.
* **the market's publish** (`LeasePublisher.publish`, run after every clearing's changes), in
  process on the same fake apiserver: with `--leases` ends released on the host, looking only
  past the released ones the list of ends starts with, against every end looked at again at
  each publish (the baseline: as before it kept how far the released run goes).
* **the negotiator's reconcile with live leases**, in process on the same fake apiserver: with
  `--live` live leases whose pods are in place on the host and mirrored in the agent's plane,
  reading each lease again only when it changed and handing only the leases not in step to the
  request pool (the real one: threads), against every lease validated and synced each time
  (the baseline: as before).
* **the market's admission pass** (`LeasePods.admit` over every active lease, run at each
  event the market waits on), in process on the same fake apiserver: with `--live` live leases
  whose pods are all bound, keeping each lease's grant and each pod's verdict while unchanged,
  against every pod judged again each pass (the baseline: as before it kept them).

    python benchmarks/lease_history_cost.py [--leases 100,1000] [--live 100,1000] [--creates 30]

Prints medians and ratios to the baselines; saves benchmarks/results/lease_history_cost.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuparley.deploy import negotiator_leases, objects, rbac
from gpuparley.deploy.kube import Kube
from gpuparley.deploy.lease_grant import lease_grant
from gpuparley.deploy.market_pods import lease_key
from gpuparley.deploy.negotiator import NegotiatorProcess
from gpuparley.deploy.negotiator_config import NegotiatorConfig
from gpuparley.deploy.workload import JOB_NAME_ANNOTATION, group_pods, host_pod, pods_for_job
from gpuparley.envs.market.messages import Lease, Release, ResourceItem
from gpuparley.envs.scenario import load_scenario

from _common import host_with_bundle, save

# The unit tests' fake apiserver (tests/, outside the installed package; this benchmark runs from
# a source checkout, as `negotiation_e2e.py` does with the cluster tests' rig).
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from test_deploy_hardening_units import FakeKube, _controller

AGENT = "alpha"
HOME = objects.agent_namespace(AGENT)
JOB = next(job for job in load_scenario("cluster-e2e").build_jobs(0) if job.name == "gen-000021")
SETTLE = 3.0  # seconds for the apiserver's parameter cache to take the leases written


def _lease(index: int) -> Lease:
    """A one-GPU lease of alpha's, pinned to a node that does not exist (nothing is scheduled)."""
    item = ResourceItem(pod=0, node="no-such-node", gpu_kind="whole", gpus=(0,))
    return Lease(
        id=f"market.cost-{index}", sender="market", receiver=AGENT, epoch=0,
        lease_id=f"cost-{index}", holder=AGENT, lender="market", job=JOB.name,
        resources=(item,), start_epoch=0, expires_epoch=4, price=1.0,
    )  # fmt: skip


def _release(index: int) -> dict[str, Any]:
    release = Release(
        id=f"market.end.{index}", sender="market", receiver=AGENT, epoch=1,
        lease_id=_lease(index).lease_id, reason="finished",
    )  # fmt: skip
    return release.model_dump(mode="json")


def _write_live(market: Kube, index: int) -> str:
    """One lease as the market leaves a live one (active, in its own shard)."""
    lease = _lease(index)
    obj = objects.gpulease_object(lease, lease_grant(lease, JOB.pod))
    market.create("gpuleases", HOME, obj)
    return str(obj["metadata"]["name"])


def _write_released(market: Kube, index: int) -> str:
    """One lease as the market leaves a released one: created, labelled, then released."""
    name = _write_live(market, index)
    _relabel(market, [name], _labels(released="true"))
    market.merge_patch("gpuleases/status", HOME, name, {"status": {"release": _release(index)}})
    return name


def _labels(
    shard: str | None = None, released: str | None = None
) -> Callable[[str], dict[str, str | None]]:
    """Each lease's labels: in `shard` (None: its own, as the market writes it; one shard for
    all: as if the fit policy had one binding), and the released label `released` (None: not
    set: a parameter of the policy, as before the label)."""
    return lambda name: {
        objects.LEASE_SHARD_LABEL: shard or objects.lease_shard(name),
        objects.RELEASED_LABEL: released,
    }


def _relabel(
    market: Kube, names: list[str], labels: Callable[[str], dict[str, str | None]]
) -> None:
    """Patch each lease's labels to `labels(name)` (None removes one)."""
    market.each(
        lambda name: market.merge_patch(
            "gpuleases", HOME, name, {"metadata": {"labels": labels(name)}}
        ),
        names,
    )


def live_rows(
    market: Kube, agent: Kube, pod: dict[str, Any], counts: list[int], creates: int
) -> list[dict[str, Any]]:
    """Pod creates with `counts` live leases in the namespace, each in its shard (as the market
    writes them: the pod's fit binding holds its shard's), then all in the pod's shard (every
    live lease a parameter, as with one binding before the shards); the leases deleted after."""
    shard = pod["metadata"]["labels"][objects.LEASE_SHARD_LABEL]
    rows, names = [], []
    for count in counts:
        while len(names) < count:
            names.append(_write_live(market, 100_000 + len(names)))
        time.sleep(SETTLE)
        sharded = _create_ms(agent, pod, creates)
        in_shard = sum(objects.lease_shard(name) == shard for name in names)
        _relabel(market, names, _labels(shard))
        time.sleep(SETTLE)
        every = _create_ms(agent, pod, creates)
        _relabel(market, names, _labels())
        rows.append({
            "live_leases": count, "in_the_pods_shard": in_shard, "create_ms_sharded": sharded,
            "create_ms_one_binding": every,
        })  # fmt: skip
        print(
            f"{count:>5} live leases: sharded ({in_shard} in the pod's shard) {sharded:.1f} ms;"
            f" one binding (every live lease a parameter) {every:.1f} ms"
            f" (x{every / sharded:.1f} the time)",
            flush=True,
        )
    market.each(lambda name: market.delete("gpuleases", HOME, name), names)
    return rows


def _create_ms(agent: Kube, pod: dict[str, Any], creates: int) -> float:
    """The median milliseconds of `creates` dry-run creates of `pod` by the agent."""
    times = []
    for _ in range(creates):
        started = time.perf_counter()
        agent.call("POST", f"/api/v1/namespaces/{HOME}/pods", pod, {"dryRun": "All"})
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def reconcile_ms(count: int, settled: bool, repeats: int = 20) -> float:
    """The median milliseconds of a negotiator's reconcile of `count` released leases of a job
    that finished (its pods Succeeded), with 20 host pods; `settled`: as it runs, knowing which
    ends it applied, else looking at every lease each time."""
    process = NegotiatorProcess(
        NegotiatorConfig(agent=AGENT, policy="scripted"), FakeKube(), FakeKube(), None
    )  # type: ignore[arg-type]
    agent_pods = json.loads(json.dumps(pods_for_job(JOB)))
    for pod in agent_pods:
        pod["metadata"]["namespace"], pod["status"] = "default", {"phase": "Succeeded"}
    lease = _lease(0)
    for index in range(20):
        pod = host_pod(agent_pods[0], f"held-{index}", lease.resources[0])
        pod["metadata"].update(name=f"host-{index}", namespace=HOME)
        process.host_pods.observe(pod)
    leases = []
    for index in range(1, count + 1):
        obj = objects.gpulease_object(_lease(index))
        obj["metadata"].update(namespace=HOME, resourceVersion=str(index))
        obj["status"] = {"ending": _release(index), "release": _release(index)}
        leases.append(obj)
    groups = group_pods(agent_pods)
    process.lease_sync.sync(groups, leases)  # the first reconcile applies every end
    times = []
    for _ in range(repeats):
        if not settled:  # as before: every lease read and looked at again
            process.lease_sync.settled.clear()
            process.lease_sync._read.clear()
        started = time.perf_counter()
        process.lease_sync.sync(groups, copy.copy(leases))
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def live_reconcile_ms(count: int, kept: bool, repeats: int = 20) -> float:
    """The median milliseconds of a negotiator's reconcile with `count` live leases, one job
    each, every host pod in place and every agent pod mirroring it; `kept`: as it runs (leases
    read again only when changed, leases in step not handed to the request pool), else every
    lease validated and synced each time."""
    host, plane = FakeKube(), FakeKube()
    for fake in (host, plane):  # the real request pool (threads), not the fake's loop
        fake._pool = None  # type: ignore[attr-defined]
        fake.each = types.MethodType(Kube.each, fake)  # type: ignore[method-assign]
    config = NegotiatorConfig(agent=AGENT, policy="scripted")
    process = NegotiatorProcess(config, host, plane, None)  # type: ignore[arg-type]
    agent_pods, leases = [], []
    for index in range(count):
        job = f"live-{index}"
        for pod in json.loads(json.dumps(pods_for_job(JOB))):
            pod["metadata"].update(name=f"{job}-{pod['metadata']['name']}", namespace="default")
            pod["metadata"]["labels"][objects.JOB_LABEL] = job
            pod["metadata"]["annotations"][JOB_NAME_ANNOTATION] = job
            agent_pods.append(pod)
        obj = objects.gpulease_object(_lease(index).model_copy(update={"job": job}))
        obj["metadata"].update(namespace=HOME, resourceVersion=str(index + 1))
        leases.append(obj)
    groups = group_pods(agent_pods)
    sync = process.lease_sync
    sync.sync(groups, leases)  # creates the host pods; then they are bound and running
    for pod in sync.host.list("pods"):
        pod["spec"]["nodeName"], pod["status"] = "no-such-node", {"phase": "Running"}
        pod["metadata"]["resourceVersion"] += "-bound"  # newer, as the watch shows it
        process.host_pods.observe(pod)
    for pod in agent_pods:  # and the agent's pods mirror them
        pod["spec"]["nodeName"], pod["status"] = "no-such-node", {"phase": "Running"}
    groups = group_pods(agent_pods)
    writes = len(sync.host.writes) + len(sync.plane.writes)
    in_step = negotiator_leases._in_step
    if not kept:
        negotiator_leases._in_step = lambda *_args: False
    times = []
    try:
        for _ in range(repeats):
            if not kept:
                sync._read.clear()
            started = time.perf_counter()
            sync.sync(groups, copy.copy(leases))
            times.append(time.perf_counter() - started)
    finally:
        negotiator_leases._in_step = in_step
    assert len(sync.host.writes) + len(sync.plane.writes) == writes  # nothing to write
    return statistics.median(times) * 1000


def publish_ms(count: int, upto_kept: bool, repeats: int = 20) -> float:
    """The median milliseconds of the market's publish with `count` ends released on the host
    and nothing else to write; `upto_kept`: as it runs, else looking at every end each time."""
    controller, _kube = _controller()
    leases = controller.leases
    for index in range(1, count + 1):
        lease = _lease(index)
        controller.market.releases.append((lease, Release.model_validate(_release(index))))
        leases._written[lease_key(lease)] = (lease, objects.RELEASED)  # as `adopt` finds them
    leases.publish()
    times = []
    for _ in range(repeats):
        if not upto_kept:
            leases._released_upto = [0, 0]
        started = time.perf_counter()
        leases.publish()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def measure(counts: list[int], live_counts: list[int], creates: int) -> dict[str, Any]:
    with host_with_bundle(AGENT) as state:
        market = Kube(state.host.agent_kubeconfigs[rbac.MARKET_USER])
        agent = Kube(state.host.agent_kubeconfigs[HOME])
        held = _lease(0)
        obj = objects.gpulease_object(held, lease_grant(held, JOB.pod))
        market.create("gpuleases", HOME, obj)  # the lease the pod runs under
        pod = host_pod(pods_for_job(JOB)[0], obj["metadata"]["name"], held.resources[0])
        time.sleep(SETTLE)
        baseline = _create_ms(agent, pod, creates)
        print(f"pod create (dry run), no lease but its own: {baseline:.1f} ms", flush=True)
        live = live_rows(market, agent, pod, live_counts, creates)
        pod_shard = pod["metadata"]["labels"][objects.LEASE_SHARD_LABEL]
        rows, names = [], []
        for count in counts:
            while len(names) < count:
                names.append(_write_released(market, len(names) + 1))
            time.sleep(SETTLE)
            labelled = _create_ms(agent, pod, creates)
            _relabel(market, names, _labels(pod_shard))  # as before the label and shards
            time.sleep(SETTLE)
            every = _create_ms(agent, pod, creates)
            _relabel(market, names, _labels(released="true"))
            rows.append({
                "released_leases": count, "create_ms_labelled": labelled,
                "create_ms_every_lease": every, "ratio_labelled": labelled / baseline,
                "ratio_every_lease": every / baseline,
            })  # fmt: skip
        market.close()
        agent.close()
    return {"baseline_create_ms": baseline, "creates": creates, "live": live, "rows": rows}


def in_process(
    name: str,
    timed: Callable[[int, bool], float],
    counts: list[int],
    kept: str,
    every: str,
    leases: str = "released",
) -> dict[str, Any]:
    """`timed` (milliseconds with n `leases` leases; True: as the code runs, False: looking at
    every lease again each time) with none, then with each count."""
    baseline = timed(0, True)
    print(f"{name}, no {leases} lease: {baseline:.3f} ms")
    rows = []
    for count in counts:
        fast, slow = timed(count, True), timed(count, False)
        rows.append({f"{leases}_leases": count, "ms": fast, "ms_every_lease": slow})
        print(
            f"{count:>5} {leases} leases: {kept} {fast:.3f} ms; {every} each time {slow:.3f} ms"
            f" (x{slow / fast:.1f} the time)"
        )
    return {"baseline_ms": baseline, "rows": rows}


def admission_pass_ms(count: int, kept: bool, repeats: int = 20) -> float:
    """The median milliseconds of the market's admission pass (`LeasePods.admit` over every
    active lease, run at each event it waits on) with `count` live leases of one pod or a
    2-pod gang each, every pod already bound; `kept`: as it runs, keeping each lease's grant
    and each pod's verdict while they are unchanged, else judging every pod afresh."""
    controller, _kube = _controller()
    pods = []
    gang = next(
        job for job in load_scenario("cluster-e2e").build_jobs(0) if job.name == "gen-000002"
    )
    for index in range(count):
        lease = _lease(index)
        job = JOB
        if index % 4 == 3:  # a gang now and then
            items = tuple(
                ResourceItem(pod=p, node="no-such-node", gpu_kind="whole", gpus=(p,))
                for p in (0, 1)
            )
            lease, job = lease.model_copy(update={"job": gang.name, "resources": items}), gang
        controller.market.leases[lease.lease_id] = lease
        name = objects.object_name(lease.lease_id, "lease")
        for item in lease.resources:
            pod = host_pod(pods_for_job(job)[item.pod], name, item)
            pod["metadata"].update(name=f"{name}-{item.pod}", namespace=HOME,
                                   resourceVersion=str(len(pods) + 1))  # fmt: skip
            pod["spec"]["nodeName"] = item.node
            pods.append(pod)
    admission = controller.pods
    admission.source = lambda: pods
    admission.admit(admission.lease_pods())
    times = []
    for _ in range(repeats):
        if not kept:
            admission._grants.clear()
            admission._verdicts.clear()
        started = time.perf_counter()
        admission.admit(admission.lease_pods())
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leases", default="100,1000")
    parser.add_argument("--live", default="100,1000")
    parser.add_argument("--creates", type=int, default=30)
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.leases.split(","))
    live_counts = sorted(int(n) for n in args.live.split(","))
    figures = measure(counts, live_counts, args.creates)
    for row in figures["rows"]:
        print(
            f"{row['released_leases']:>5} released leases: labelled (out of the policy's"
            f" parameters) {row['create_ms_labelled']:.1f} ms (x{row['ratio_labelled']:.2f});"
            f" every lease a parameter {row['create_ms_every_lease']:.1f} ms"
            f" (x{row['ratio_every_lease']:.1f})"
        )
    figures["negotiator"] = in_process(
        "negotiator reconcile", reconcile_ms, counts, "ends applied once", "every lease looked at"
    )
    figures["market"] = in_process(
        "market publish", publish_ms, counts, "released run skipped", "every end looked at"
    )
    figures["negotiator_live"] = in_process(
        "negotiator reconcile", live_reconcile_ms, live_counts, "leases in step skipped",
        "every lease synced", leases="live",
    )  # fmt: skip
    figures["market_admission"] = in_process(
        "market admission pass", admission_pass_ms, live_counts, "verdicts kept",
        "every pod judged", leases="live",
    )  # fmt: skip
    print(f"saved {save('lease_history_cost', figures)}")


if __name__ == "__main__":
    main()
