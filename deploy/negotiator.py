"""The in-cluster negotiator: one agent's representative between its own control plane and the
shared host cluster.

It keeps no state of its own (a restart or a second replica picks up exactly where the first
left off): it follows what the clusters say through watches (`informer.py`: its market view,
leases, host pods and own `Negotiator` object on the host; its pods in its own plane) and
reconciles whenever one of them changes -- no polling, so an idle negotiator costs the
apiservers one watch request per set every few minutes:

* **demands**: pods in the agent's plane that carry the `gpuparley.io/job` label, grouped into
  jobs by it (`deploy/workload.py`); they name the negotiator as their scheduler
  (`schedulerName: gpuparley`, `objects.AGENT_SCHEDULER`), so nothing else binds them;
* **decisions**: each new market view (published only when the agent has something to decide)
  is encoded with the environment's encoder and answered by the policy (the exported ONNX model,
  or a scripted negotiator); the answer is recorded in the agent's `Negotiator` status, under the
  auction with the bid itself (the market is its only reader, and the status is the agent's own
  object, bounded by its schema); a bargaining message is sent as an `Offer` object into its
  receiver's inbox or, a proposal, the agent's own home (the agent's Offer quota bounds them),
  named after its id so a repeated send is a no-op. With a policy that is a function of its
  view (`deterministic`), the rest of an auction round is answered too, before it is asked, in
  that status (`answers_ahead.py`);
* **leases**: every change of its GPULeases, host pods or own pods is reconciled by its
  `LeaseSync` (`negotiator_leases.py`): the leases' pods synced to the host for the market to
  bind, its own pods following them, each lease's end applied once and listed as applied in its
  Negotiator status.

Message hygiene: the policy only ever acts on the market's view; a view that does not parse, or a
slot naming a job the agent has no pods for, is counted as a rejection and answered with a pass.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gpuparley.deploy import objects
from gpuparley.deploy.answers_ahead import answers_ahead
from gpuparley.deploy.informer import Informer, Wakeup
from gpuparley.deploy.kube import ApiError, Kube, retrying
from gpuparley.deploy.leader import LeaderElector
from gpuparley.deploy.negotiator_config import NegotiatorConfig
from gpuparley.deploy.negotiator_leases import LeaseSync, active_lease_of
from gpuparley.deploy.negotiator_messages import ACTIONS, Message, NoMessage, message_for
from gpuparley.deploy.telemetry import Telemetry
from gpuparley.deploy.workload import PodGroup, WorkloadError, group_pods
from gpuparley.envs.market.encoding import AgentView, Decision, decode, encode
from gpuparley.envs.market.messages import Bid, Demand, MessageError
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.market.wire import view_from_dict

log = logging.getLogger("gpuparley.negotiator")


def _no_demand() -> Demand:
    raise WorkloadError("an offer needs the job's pods")


class NegotiatorProcess:
    """One agent's negotiator; `step()` is one idempotent reconcile pass."""

    def __init__(
        self,
        config: NegotiatorConfig,
        host: Kube,
        plane: Kube,
        policy: Negotiator,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.config = config
        self.agent = objects.agent_name(config.agent)
        self.host = host
        self.plane = plane
        self.policy = policy
        self.telemetry = telemetry or Telemetry("negotiator")
        identity = config.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.elector = (
            LeaderElector(host, config.namespace, "gpuparley-negotiator", identity)
            if config.leader_elect
            else None
        )
        self._answered: tuple[int, int] | None = None
        self._view_version: str | None = None
        self._renewed_at = 0.0
        self.wakeup = Wakeup()
        home, agent_plane = config.namespace, config.workload_namespace
        view_field = f"metadata.name={objects.VIEW_CONFIGMAP}"
        self.views = Informer(host, "configmaps", home, field_selector=view_field)
        self.leases = Informer(host, "gpuleases", home)
        self.host_pods = Informer(host, "pods", home)
        named = f"metadata.name={self.agent}"
        self.mine = Informer(host, "negotiators", home, field_selector=named)
        self.agent_pods = Informer(plane, "pods", agent_plane)
        self.informers = [self.views, self.leases, self.host_pods, self.mine, self.agent_pods]
        for informer in self.informers:
            informer.notify = self.wakeup
        self.lease_sync = LeaseSync(
            self.agent, home, agent_plane, host, plane,
            host_pods=self.host_pods, agent_pods=self.agent_pods, mine=self.mine,
            telemetry=self.telemetry, reject=self._reject,
        )  # fmt: skip

    # ------------------------------------------------------------------ loop
    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        self._check_negotiator_object()
        for informer in self.informers:
            informer.start()
        try:
            while not should_stop():
                if not all(i.synced.is_set() for i in self.informers):
                    self.telemetry.heartbeat()
                    self.wakeup.wait(0.5)
                    continue
                try:
                    self.step()
                except ApiError as exc:
                    log.warning("reconcile failed; retrying", extra={"error": str(exc)})
                    self.telemetry.ready = False
                    self.wakeup.wait(0.5)
                    continue
                self.wakeup.wait(self._idle_seconds())
        finally:
            for informer in self.informers:
                informer.stop()
            if self.elector is not None:
                self.elector.release()

    def _idle_seconds(self) -> float:
        """How long to sleep when nothing changes: until the next leader-election renewal, or
        the resync interval (a reconcile from the caches, which sends nothing if all is well)."""
        if self.elector is None:
            return self.config.resync_interval
        renew_at = self._renewed_at + self.elector.duration / 3
        return max(0.05, min(self.config.resync_interval, renew_at - time.monotonic()))

    def step(self) -> None:
        """One reconcile from the caches: sync pods with the leases, answer a new view -- even
        if the sync failed (its error is raised after): pod writes the host refuses for a while
        (admission not ready after an apiserver restart) must not make the market time the
        agent out as a pass, which would change the market."""
        self.telemetry.heartbeat()
        if not self._lead():
            self.telemetry.ready = False
            return
        groups = group_pods(self.agent_pods.objects())
        leases = self.leases.objects()
        sync_failed: ApiError | None = None
        try:
            self.lease_sync.sync(groups, leases)
            self.lease_sync.acknowledge(leases)
        except ApiError as exc:
            sync_failed = exc
        document = self.views.get(self.config.namespace, objects.VIEW_CONFIGMAP)
        version = (document or {}).get("metadata", {}).get("resourceVersion")
        if document is not None and version != self._view_version:
            self._answer_view(document, groups, leases)
            self._view_version = version
        if sync_failed is not None:
            raise sync_failed
        self.telemetry.ready = True
        self.telemetry.apiserver_requests.labels("host").set(sum(self.host.requests.values()))
        self.telemetry.apiserver_requests.labels("agent").set(sum(self.plane.requests.values()))

    def _lead(self) -> bool:
        if self.elector is None:
            return True
        if time.monotonic() - self._renewed_at > self.elector.duration / 3:
            self.elector.try_acquire_or_renew()
            self._renewed_at = time.monotonic()
        self.telemetry.leader.set(1 if self.elector.is_leader else 0)
        return self.elector.is_leader

    def _check_negotiator_object(self) -> None:
        mine = retrying(lambda: self.host.get("negotiators", self.config.namespace, self.agent))
        if mine is None:
            raise SystemExit(
                f"no Negotiator {self.agent!r} in namespace {self.config.namespace!r} on the host: "
                f"apply the agent's bundle first (`gpuparley deploy apply --agent {self.agent}`)"
            )

    # ------------------------------------------------------------------ decisions
    def _answer_view(
        self, document: dict[str, Any], groups: dict[str, PodGroup], leases: list[dict[str, Any]]
    ) -> None:
        config = self.config
        started = time.perf_counter()
        data = document.get("data") or {}
        if objects.VIEW_KEY not in data:
            return  # the market opened the view; no question yet
        try:
            payload = json.loads(data[objects.VIEW_KEY])
            token = (int(payload["epoch"]), int(payload["substep"]))
            view = view_from_dict(payload["view"])
        except (KeyError, ValueError, TypeError) as exc:
            self._reject("malformed-view", str(exc))
            return
        if token == self._answered:
            return
        mine = self.mine.get(config.namespace, self.agent) or {}
        status = mine.get("status") or {}
        if (status.get("observedEpoch"), status.get("observedSubstep")) == token:
            self._answered = token  # answered before a restart
            return
        self.telemetry.epoch.set(token[0])
        decision, message, refused = self._decide(view, payload, groups, leases)
        if refused is not None:
            self._reject(*refused)
            decision, message = Decision("pass"), None
        ahead: list[dict[str, Any]] = []  # answers to the rest of the round, with their bids
        if getattr(self.policy, "deterministic", False):

            def answer(view: AgentView, document: dict[str, Any], message_id: str) -> Any:
                answered = self._decide(view, document, groups, leases, message_id)
                return None if answered[2] is not None else answered[:2]  # unsendable: stop

            ahead = answers_ahead(payload, view, decision, answer, self.agent)
        # An auction bid travels in the status with the answer (the market's only party);
        # a bargaining message is an Offer object in its receiver's inbox.
        bid = None
        if isinstance(message, Bid):
            bid = message.model_dump(mode="json")
            self._sent(message)
        elif message is not None:
            self._send(message)
        answered = self.host.merge_patch(
            "negotiators/status",
            config.namespace,
            self.agent,
            {
                "status": {
                    "phase": "Negotiating",
                    "observedEpoch": token[0],
                    "observedSubstep": token[1],
                    "action": "pass" if message is None else ACTIONS[message.kind],
                    "message": "" if message is None else message.id,
                    "bid": bid,
                    "ahead": ahead,
                }
            },
        )
        self.mine.observe(answered)
        self._answered = token
        self.telemetry.decision_seconds.observe(time.perf_counter() - started)

    def _decide(
        self,
        view: AgentView,
        payload: dict[str, Any],
        groups: dict[str, PodGroup],
        leases: list[dict[str, Any]],
        message_id: str | None = None,
    ) -> tuple[Decision, Message | None, tuple[str, str] | None]:
        """Ask the policy: its decision, the message it stands for (None: a pass), and why it
        cannot be sent (a rejection's reason and detail), if it cannot."""
        observation, mask = encode(view)
        action = int(self.policy.act(observation, mask, view))
        if not (0 <= action < len(mask) and mask[action]):
            return (
                Decision("pass"),
                None,
                ("illegal-action", f"policy chose masked action {action}"),
            )
        decision = decode(action, view, np.asarray(mask))
        if decision.kind == "pass":
            return decision, None, None
        group = groups.get(decision.job or "")
        if decision.kind == "bid" and (group is None or not group.complete):
            return decision, None, ("no-pods", f"job {decision.job!r} has no complete pod group")
        try:
            message = message_for(
                self.agent,
                decision,
                payload,
                lambda: group.demand() if group is not None else _no_demand(),
                active_lease_of(decision.job or "", leases),
                message_id,
            )
        except NoMessage as exc:
            return decision, None, (exc.reason, str(exc))
        except (WorkloadError, MessageError, ValueError) as exc:
            return decision, None, ("bad-demand", str(exc))
        return decision, message, None

    def _send(self, message: Message) -> None:
        namespace = objects.outbox_namespace(message)
        if namespace == objects.agent_namespace(self.agent):
            namespace = self.config.namespace  # a bid waits in the (configured) home
        self.host.create("offers", namespace, objects.offer_object(message, namespace=namespace))
        self._sent(message)

    def _sent(self, message: Message) -> None:
        self.telemetry.messages.labels(message.kind, "sent").inc()
        price = getattr(message, "price", None)
        if price is not None:
            self.telemetry.price.labels("bid").set(price)
        log.info(
            ACTIONS[message.kind], extra={"id": message.id, "price": price, "to": message.receiver}
        )

    def _reject(self, reason: str, detail: str) -> None:
        self.telemetry.rejections.labels(reason).inc()
        log.warning("rejected", extra={"reason": reason, "detail": detail})
