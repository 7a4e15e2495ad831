"""The market controller: the auctioneer and lease registry of one host cluster.

It runs the very `Market` the simulator runs (`envs/market/core.py`: ledger, leases, clearing,
message validation), driven by real messages instead of in-process calls:

1. every sub-step, it publishes each agent's view (`agent_views`, the simulator's function) as
   the ConfigMap `gpuparley-market-view` in that agent's home namespace, which only that agent can
   read;
2. it waits until every agent's `Negotiator` status says it answered that (epoch, sub-step), or
   the sub-step times out (a silent agent passes: a partitioned agent only delays);
3. it reads the `Offer` objects (bids) in its inbox, checks that the object's sender label and
   namespace agree with the message, hands each message to `Market.receive` (which rejects
   malformed, stale, replayed, unauthorised and unaffordable ones with a reason, changing
   nothing), and deletes them (consumed);
4. at the epoch's end it clears, writes the new/renewed leases as `GPULease` objects in the
   holders' namespaces, ends the others by setting `status.release`, and deletes GPU pods in agent
   namespaces that no active lease covers (a lease is the only right to run: `_enforce_leases`).

Simplification (stated in deploy/README.md): the market's clock is logical (one epoch per
clearing, not per `epoch_seconds` of wall time), and job progress comes from the market's
simulator (the rig's KWOK containers compute nothing), so a job's lease ends "finished" when the
model says it is done. The market's state lives in memory: a restarted controller starts a new
market (the negotiators are the restart-safe side).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.gpu_resources import env_node_resources, is_gpu_resource
from gpuparley.deploy.kube import ApiError, Kube
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.deploy.trace import LeaseEvent, epoch_events
from gpuparley.deploy.workload import HOSTNAME_LABEL, ungate
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.encoding import view_to_dict
from gpuparley.envs.market.episode import default_max_epochs
from gpuparley.envs.market.messages import Lease, Release
from gpuparley.envs.market.views import agent_views
from gpuparley.envs.scenario import Scenario

log = logging.getLogger("gpuparley.market")
STATUS_CONFIGMAP = "gpuparley-market"


class MarketSetupError(RuntimeError):
    """The host cluster does not match the scenario the market was started with."""


def check_host_nodes(kube: Kube, scenario: Scenario) -> None:
    """Every node of the scenario's cluster exists on the host with the GPU resources the market
    will lease (otherwise leases would name capacity the scheduler cannot bind)."""
    found = {node["metadata"]["name"]: node for node in kube.list("nodes")}
    problems = []
    for node in scenario.build_cluster().nodes:
        want = env_node_resources(node)
        host = found.get(node.name)
        if host is None:
            problems.append(f"node {node.name} is missing")
            continue
        have = (host.get("status") or {}).get("allocatable") or {}
        for resource, count in want.items():
            if str(have.get(resource)) != str(count):
                problems.append(
                    f"node {node.name}: {resource} is {have.get(resource)!r}, want {count}"
                )
    if problems:
        raise MarketSetupError(
            "the host cluster does not match the scenario's cluster: "
            + "; ".join(problems[:10])
            + " (create the nodes with `gpuparley cluster up --scenario` for this scenario)"
        )


def _lease_key(lease: Lease) -> tuple[str, str]:
    """(holder namespace, GPULease object name): how host pods name their lease."""
    return objects.agent_namespace(lease.holder), objects.object_name(lease.lease_id, "lease")


def _placed(lease: Lease, pods: list[dict[str, Any]]) -> bool:
    """Every pod of the lease is bound to a node the lease names."""
    nodes = {item.node for item in lease.resources}
    bound = [p for p in pods if (p.get("spec") or {}).get("nodeName") in nodes]
    return len(bound) == len(lease.resources)


def _is_gpu_pod(pod: dict[str, Any]) -> bool:
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        if any(is_gpu_resource(k) for k in limits):
            return True
    return False


class MarketController:
    """One market over the host cluster, stepped sub-step by sub-step."""

    def __init__(
        self,
        kube: Kube,
        scenario: Scenario,
        seed: int,
        mechanism: str | None = None,
        *,
        substep_timeout: float = 10.0,
        placement_timeout: float = 30.0,
        poll_interval: float = 0.02,
        max_epochs: int | None = None,
        telemetry: Telemetry | None = None,
        trace_path: str | Path | None = None,
    ) -> None:
        self.kube = kube
        self.market = Market(scenario, seed, mechanism)
        if self.market.mechanism.name != "auction":
            raise MarketSetupError(
                "the in-cluster market runs the auction only (bargaining needs peer-to-peer "
                "threads the controller does not route yet); use mechanism=auction"
            )
        self.agents = list(self.market.agents)
        self.substep_timeout = substep_timeout
        self.placement_timeout = placement_timeout
        self.placement_timeouts = 0
        self.poll_interval = poll_interval
        self.max_epochs = max_epochs or default_max_epochs(scenario, self.market)
        self.telemetry = telemetry or Telemetry("market")
        self.trace: list[LeaseEvent] = []
        self.trace_path = Path(trace_path) if trace_path else None
        self.rejected: Counter[str] = Counter()
        self.timeouts: Counter[str] = Counter()
        self.evicted: list[str] = []  # namespace/pod of every eviction, in order
        self.reclaimed_pods = 0

    # ------------------------------------------------------------------ the loop
    @property
    def done(self) -> bool:
        return self.market.finished or self.market.epoch >= self.max_epochs

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Step until the workload is done (or the epoch cap, or `should_stop`); the summary."""
        check_host_nodes(self.kube, self.market.scenario)
        self.telemetry.ready = True
        while not self.done and not should_stop():
            self.substep()
        return self.publish_status()

    def substep(self) -> None:
        """Publish the views, collect the answers, apply them, and close the sub-step."""
        market = self.market
        self.telemetry.heartbeat()
        token = (market.epoch, market.substep)
        started = time.perf_counter()
        self._publish_views()
        if market.substep == 0:
            # The views are out (holders learn of new leases from them); the epoch only runs
            # once the leases of the last clearing are real.
            self._await_placements()
        answers = self._wait_for_answers(token)
        before, seen = dict(market.leases), len(market.releases)
        self._receive_bids()
        for agent in self.agents:
            if answers.get(agent) is None:
                self.timeouts[agent] += 1
                self.telemetry.rejections.labels("timeout").inc()
            if answers.get(agent) != "bid":
                market.passed.add(agent)
        epoch = market.epoch
        ended = market.end_substep()
        events = epoch_events(market, before, seen, epoch)
        self._publish_leases(events)
        log.info(
            "sub-step closed",
            extra={
                "epoch": token[0],
                "substep": token[1],
                "bids": sum(1 for a in answers.values() if a == "bid"),
                "leases_changed": len(events),
                "seconds": round(time.perf_counter() - started, 4),
            },
        )
        if ended:
            self.telemetry.epoch.set(market.epoch)
            self._enforce_leases()
            self.publish_status()

    # ------------------------------------------------------------------ views and answers
    def _publish_views(self) -> None:
        market = self.market
        for agent, view in agent_views(market).items():
            document = {
                "epoch": market.epoch,
                "substep": market.substep,
                "term_epochs": market.term_epochs,
                "view": view_to_dict(view),
            }
            self.kube.apply_configmap(
                objects.agent_namespace(agent),
                objects.VIEW_CONFIGMAP,
                {objects.VIEW_KEY: json.dumps(document)},
            )

    def _wait_for_answers(self, token: tuple[int, int]) -> dict[str, str]:
        """agent -> its action ("bid" or "pass") for this sub-step; missing if it timed out."""
        deadline = time.monotonic() + self.substep_timeout
        while True:
            answers = {}
            for negotiator in self.kube.list("negotiators"):
                status = negotiator.get("status") or {}
                agent = (negotiator.get("spec") or {}).get("agent")
                home = negotiator["metadata"].get("namespace")
                if agent not in self.agents or home != objects.agent_namespace(agent):
                    continue  # a Negotiator object elsewhere cannot answer for an agent
                if (status.get("observedEpoch"), status.get("observedSubstep")) == token:
                    answers[agent] = status.get("action", "pass")
            if len(answers) == len(self.agents) or time.monotonic() > deadline:
                return answers
            time.sleep(self.poll_interval)

    def _receive_bids(self) -> None:
        order = {agent: i for i, agent in enumerate(self.agents)}
        offers = self.kube.list("offers", objects.MARKET_INBOX)
        offers.sort(
            key=lambda o: (
                order.get((o.get("spec") or {}).get("sender"), len(order)),
                o["metadata"]["name"],
            )
        )
        for obj in offers:
            spec = obj.get("spec") or {}
            labels = obj["metadata"].get("labels") or {}
            if labels.get(objects.SENDER_LABEL) != spec.get("sender"):
                self._rejected("forged", obj, "sender label and message sender differ")
            else:
                before = Counter(self.market.stats.rejected)
                receipt = self.market.receive(spec)
                if receipt.accepted:
                    self.telemetry.messages.labels(spec.get("kind", "?"), "received").inc()
                else:
                    category = next(iter(self.market.stats.rejected - before), "invalid")
                    self._rejected(category, obj, receipt.reason)
            self.kube.delete("offers", objects.MARKET_INBOX, obj["metadata"]["name"])

    def _rejected(self, category: str, obj: dict[str, Any], reason: str) -> None:
        self.rejected[category] += 1
        self.telemetry.rejections.labels(category).inc()
        log.warning(
            "message rejected",
            extra={"category": category, "object": obj["metadata"]["name"], "reason": reason},
        )

    # ------------------------------------------------------------------ leases and pods
    def _publish_leases(self, events: list[LeaseEvent]) -> None:
        market = self.market
        released = {lease.lease_id: (lease, rel) for lease, rel in market.releases}
        for event in events:
            self.trace.append(event)
            if event.event == "released":
                lease, release = released[event.lease_id]
                self._write_lease(lease, release)
            else:
                self._write_lease(market.leases[event.lease_id], None)
                self.telemetry.agreements.inc()
        self.telemetry.leases.set(len(market.leases))
        if events and self.trace_path is not None:
            with self.trace_path.open("a") as out:
                for event in events:
                    out.write(json.dumps(event.to_json()) + "\n")

    def _write_lease(self, lease: Lease, release: Release | None) -> None:
        obj = objects.gpulease_object(lease)
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if not self.kube.create("gpuleases", namespace, obj):
            self.kube.merge_patch("gpuleases", namespace, name, {"spec": obj["spec"]})
        if release is not None:
            status = {"status": {"release": release.model_dump(mode="json")}}
            self.kube.merge_patch("gpuleases/status", namespace, name, status)

    def _covered_nodes(self) -> dict[tuple[str, str], set[str]]:
        """(holder namespace, GPULease object name) -> the nodes its active lease names."""
        return {
            _lease_key(lease): {item.node for item in lease.resources}
            for lease in self.market.leases.values()
        }

    def _await_placements(self) -> None:
        """Hold the next epoch until every active lease's pods are bound where it says.

        In the simulator a lease is placed the instant it is signed; on a cluster the holder
        must sync its pods, the market must admit them and kube-scheduler must bind them. Job
        progress is modelled per epoch, so the logical clock may only move on once the leases it
        granted are real. A holder that does not sync within `placement_timeout` (crashed,
        partitioned) is counted and the market moves on: it can delay, never block, the market.
        """
        deadline = time.monotonic() + self.placement_timeout
        while True:
            pods = self._lease_pods()
            self._admit_pods(pods)
            unplaced = [
                lease.lease_id
                for lease in self.market.leases.values()
                if not _placed(lease, pods.get(_lease_key(lease), []))
            ]
            if not unplaced:
                return
            if time.monotonic() > deadline:
                self.placement_timeouts += 1
                self.telemetry.rejections.labels("placement-timeout").inc()
                log.warning("leases not placed in time", extra={"leases": unplaced[:10]})
                return
            time.sleep(self.poll_interval)

    def _lease_pods(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Host pods that carry a lease label, by (namespace, lease object name)."""
        found: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for agent in self.agents:
            namespace = objects.agent_namespace(agent)
            for pod in self.kube.list("pods", namespace, selector=objects.LEASE_LABEL):
                lease = pod["metadata"]["labels"][objects.LEASE_LABEL]
                found.setdefault((namespace, lease), []).append(pod)
        return found

    def _admit_pods(self, pods: dict[tuple[str, str], list[dict[str, Any]]]) -> None:
        """Lift the lease gate of host pods whose lease is active, a lease's pods all at once.

        Agents create their host pods behind the gate (the admission policy refuses GPU pods
        without it, and lets only the market lift it), so a GPU pod can only ever be scheduled
        under a lease the market issued, and a gang is handed to the scheduler whole.
        """
        for lease in self.market.leases.values():
            nodes = {item.node for item in lease.resources}
            mine = [
                pod
                for pod in pods.get(_lease_key(lease), [])
                if ((pod.get("spec") or {}).get("nodeSelector") or {}).get(HOSTNAME_LABEL) in nodes
            ]
            if len(mine) != len(lease.resources):
                continue  # the holder has not created every pod of the lease yet
            for pod in mine:
                ungate(self.kube, pod["metadata"]["namespace"], pod)

    def _enforce_leases(self) -> None:
        """Delete GPU pods in agent namespaces that no active lease of that agent covers.

        A pod of one of the market's own leases - one that has just ended, or one whose renewal
        moved the job to another node - is *reclaimed*: its holder is told (`status.release`, or
        the lease's new resources) and normally deletes or moves it within moments, but the
        capacity already belongs to someone else. Any other uncovered pod - no lease, someone
        else's lease, a lease that never existed - is *evicted*: that is an agent running GPUs
        it did not win.
        """
        covered = self._covered_nodes()
        ended = {_lease_key(lease) for lease, _release in self.market.releases}
        for agent in self.agents:
            namespace = objects.agent_namespace(agent)
            for pod in self.kube.list("pods", namespace):
                if not _is_gpu_pod(pod):
                    continue
                meta, spec = pod["metadata"], pod.get("spec") or {}
                lease = (meta.get("labels") or {}).get(objects.LEASE_LABEL) or ""
                nodes = covered.get((namespace, lease))
                node = spec.get("nodeName") or (spec.get("nodeSelector") or {}).get(HOSTNAME_LABEL)
                if nodes is not None and node in nodes:
                    continue
                if not self.kube.delete("pods", namespace, meta["name"]):
                    continue
                if (namespace, lease) in ended or (namespace, lease) in covered:
                    self.reclaimed_pods += 1
                    self.telemetry.pods_synced.labels("reclaimed").inc()
                    continue
                self.evicted.append(f"{namespace}/{meta['name']}")
                self.telemetry.pods_synced.labels("evicted").inc()
                log.warning(
                    "evicted a GPU pod no lease covers",
                    extra={
                        "namespace": namespace,
                        "pod": meta["name"],
                        "lease": lease,
                        "node": node,
                    },
                )

    # ------------------------------------------------------------------ status
    def publish_status(self) -> dict[str, Any]:
        """The market's public record (ConfigMap `gpuparley-market` in gpuparley-system)."""
        market = self.market
        extras = market.summary_extras()
        status = {
            "epoch": market.epoch,
            "finished": market.finished,
            "done": self.done,
            "leases_active": len(market.leases),
            "rejected": dict(self.rejected),
            "timeouts": dict(self.timeouts),
            "placement_timeouts": self.placement_timeouts,
            "evicted_pods": len(self.evicted),
            "evicted": self.evicted[-20:],
            "reclaimed_pods": self.reclaimed_pods,
            "social_welfare": extras["social_welfare"],
            "ledger_imbalance": extras["ledger_imbalance"],
            "agreements": extras["agreements"],
            "messages": extras["messages"],
            "requests": dict(self.kube.requests),
        }
        self.telemetry.apiserver_requests.labels("host").set(sum(self.kube.requests.values()))
        try:
            self.kube.apply_configmap(
                objects.MARKET_NAMESPACE, STATUS_CONFIGMAP, {"status.json": json.dumps(status)}
            )
        except ApiError as exc:
            log.error("cannot publish the market status", extra={"error": str(exc)})
        return status
