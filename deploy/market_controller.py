"""The market controller: the auctioneer and lease registry of one host cluster.

It runs the very `Market` the simulator runs (`envs/market/core.py`: ledger, leases, clearing,
message validation), driven by real messages instead of in-process calls:

1. every sub-step, it publishes each agent's view (`agent_views`, the simulator's function) as
   the ConfigMap `gpuparley-market-view` in that agent's home namespace, which only that agent can
   read;
2. it waits until every agent's `Negotiator` status says it answered that (epoch, sub-step), or
   the sub-step times out (a silent agent passes: a partitioned agent only delays);
3. it reads the `Offer` objects addressed to it (bids wait in their senders' home namespaces),
   checks that the object's sender label and namespace agree with the message, takes at most
   one bid per agent and sub-step (the decision's own, id `<agent>.<epoch>.<sub-step>`, first;
   further valid bids are rejected as `duplicate`), hands each message to `Market.receive` (which
   rejects malformed, stale, replayed, unauthorised and unaffordable ones with a reason, changing
   nothing), and deletes them (consumed); objects already being deleted are ignored;
4. at the epoch's end it clears, writes the new/renewed leases as `GPULease` objects in the
   holders' namespaces (with the `grant` their pods must stay inside), ends the others by setting
   `status.release`, and deletes pods in agent namespaces that no active lease covers
   (`market_pods.py`: a lease is the only right to run, and its pods are checked against it).

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
from gpuparley.deploy.gpu_resources import env_node_resources
from gpuparley.deploy.kube import ApiError, Kube
from gpuparley.deploy.leader import LeaderElector
from gpuparley.deploy.market_pods import LeasePods
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.deploy.trace import LeaseEvent, epoch_events
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.encoding import view_to_dict
from gpuparley.envs.market.episode import default_max_epochs
from gpuparley.envs.market.messages import MARKET, Lease, MessageError, Release, parse_message
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
        self.pods = LeasePods(kube, self.market, self.agents, self.telemetry)

    # ------------------------------------------------------------------ the loop
    @property
    def done(self) -> bool:
        return self.market.finished or self.market.epoch >= self.max_epochs

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, elector: LeaderElector | None = None
    ) -> dict[str, Any]:
        """Step until the workload is done (or the epoch cap, or `should_stop`); the summary.

        With an `elector` (several replicas, `--leader-elect`) only the leader steps; a standby
        waits, and takes over with a *new* market if the leader goes (the ledger lives in the
        leader's memory: the stated limit of this controller). A leader that cannot renew stops
        stepping before anyone else may take over."""
        check_host_nodes(self.kube, self.market.scenario)
        while elector is not None and not should_stop() and not elector.try_acquire_or_renew():
            self.telemetry.heartbeat()
            self.telemetry.leader.set(0)
            time.sleep(elector.duration / 5)
        self.telemetry.ready = True
        renewed = time.monotonic()
        while not self.done and not should_stop():
            if elector is not None:
                if time.monotonic() - renewed > elector.duration / 3:
                    elector.try_acquire_or_renew()
                    renewed = time.monotonic()
                self.telemetry.leader.set(1 if elector.is_leader else 0)
                if not elector.is_leader:
                    raise MarketSetupError("lost the market's leadership; exiting to restart")
            self.substep()
        return self.publish_status()

    def substep(self) -> None:
        """Publish the views, collect the answers, apply them, and close the sub-step."""
        market = self.market
        self.telemetry.heartbeat()
        token = (market.epoch, market.substep)
        started = time.perf_counter()
        self._publish_views()
        # The views are out (holders learn of new leases from them); an epoch only runs once
        # the leases of the last clearing are real.
        if market.substep == 0 and not self.pods.await_placements(
            self.placement_timeout, self.poll_interval
        ):
            self.placement_timeouts += 1
            self.telemetry.rejections.labels("placement-timeout").inc()
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
        self.telemetry.price.labels("clearing").set(market.last_price)
        self.telemetry.price.labels("reference").set(market.reference_price)
        if ended:
            self.telemetry.epoch.set(market.epoch)
            self.pods.enforce()
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
        """Hand the bids addressed to the market to it, at most one per agent, and consume them.

        Bids wait in their senders' home namespaces (one list request across them, by receiver
        label). An object whose namespace or label disagrees with its sender is `forged`. Of an
        agent's valid bids for this sub-step only one reaches the market -- its decision's own
        (`<agent>.<epoch>.<sub-step>`) if present, else the first by name; the rest are
        `duplicate` (one action per agent per sub-step, as in the simulator). Objects already
        being deleted (a finalizer holds them) were consumed before and are skipped.
        """
        order = {agent: i for i, agent in enumerate(self.agents)}
        decision = {a: f"{a}.{self.market.epoch}.{self.market.substep}" for a in self.agents}
        selector = f"{objects.RECEIVER_LABEL}={MARKET}"
        offers = [
            o
            for o in self.kube.list("offers", None, selector=selector)
            if not o["metadata"].get("deletionTimestamp")
        ]

        def rank(obj: dict[str, Any]) -> tuple[int, bool, str]:
            spec = obj.get("spec") or {}
            sender = spec.get("sender")
            mine = isinstance(sender, str) and spec.get("id") == decision.get(sender)
            return order.get(sender, len(order)), not mine, obj["metadata"]["name"]

        bid_from: set[str] = set()
        for obj in sorted(offers, key=rank):
            spec = obj.get("spec") or {}
            meta = obj["metadata"]
            sender = spec.get("sender")
            if (meta.get("labels") or {}).get(objects.SENDER_LABEL) != sender:
                self._rejected("forged", obj, "sender label and message sender differ")
            elif not isinstance(sender, str) or meta.get("namespace") != objects.agent_namespace(
                sender
            ):
                self._rejected("forged", obj, "a bid must wait in its sender's home namespace")
            elif sender in bid_from and self._valid_bid(sender, spec):
                self._rejected("duplicate", obj, "one bid per agent and sub-step")
            else:
                before = Counter(self.market.stats.rejected)
                receipt = self.market.receive(spec)
                if receipt.accepted:
                    bid_from.add(sender)
                    self.telemetry.messages.labels(spec.get("kind", "?"), "received").inc()
                else:
                    category = next(iter(self.market.stats.rejected - before), "invalid")
                    self._rejected(category, obj, receipt.reason)
            self.kube.delete("offers", meta["namespace"], meta["name"])

    def _valid_bid(self, sender: str, spec: dict[str, Any]) -> bool:
        """Whether `spec` is a bid the market would take from `sender` now, by the checks that
        change nothing (so a second bid is a `duplicate`, while junk keeps its own reason)."""
        try:
            message = parse_message(spec)
        except MessageError:
            return False
        if message.kind != "Bid" or message.sender != sender or message.epoch != self.market.epoch:
            return False
        job, _reason = self.market.job_asked_for(sender, message.demand)
        return job is not None

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
        obj = objects.gpulease_object(lease, self.pods.grant(lease))
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        if not self.kube.create("gpuleases", namespace, obj):
            self.kube.merge_patch(
                "gpuleases", namespace, name, {"spec": obj["spec"], "grant": obj["grant"]}
            )
        if release is not None:
            status = {"status": {"release": release.model_dump(mode="json")}}
            self.kube.merge_patch("gpuleases/status", namespace, name, status)

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
            "evicted_pods": len(self.pods.evicted),
            "evicted": self.pods.evicted[-20:],
            "misfit_pods": dict(self.pods.misfits),
            "reclaimed_pods": self.pods.reclaimed_pods,
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
