"""A negotiator run by an attacker: the real one, with its host client swapped for a hostile one.

It replays, during a live market run, what the issue's attacker did with one agent's
credentials, and records every answer the apiserver gave as JSON lines (`--attack-log`):

* **oversized pods**: before each honest host pod it creates a copy with one more GPU (whole,
  gang, time-slice replica or MIG instance alike) under the same lease and slot;
* **a second bid per decision**: after each honest bid (in its Negotiator status), the same bid
  again under a fresh id, as an Offer;
* **once per process**: a 60-core / 500 GiB CPU-only pod bound straight to a GPU node, the same
  pod unbound for the market but naming no lease, a leased pod with a finalizer, 40 Offers of
  1.4 MB, and an Offer with a finalizer.

Everything else is the honest negotiator (`deploy/negotiator.py`), so the run goes on: what the
apiserver refuses changes nothing, and what the market refuses (a duplicate bid, or an oversized
pod that slipped past an admission cache that had not yet seen its lease) must change no
allocation. Run as a script by the market rig (`market_rig.py`) in place of `negotiator run`.
"""

from __future__ import annotations

import argparse
import copy
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from gpuparley.deploy import objects
from gpuparley.deploy.kube import ApiError, Kube
from gpuparley.deploy.negotiator import NegotiatorProcess
from gpuparley.deploy.negotiator_config import NegotiatorConfig
from gpuparley.deploy.telemetry import Telemetry, setup_logging
from gpuparley.envs.market.messages import Bid
from gpuparley.policy.specs import parse_negotiator


class HostileKube:
    """`Kube` for the host that attacks around every create it is asked for."""

    def __init__(self, kube: Kube, log: Path) -> None:
        self._kube = kube
        self._log = log
        self._once_done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    def _record(self, attack: str, **fields: Any) -> None:
        with self._log.open("a") as out:
            out.write(json.dumps({"attack": attack, **fields}) + "\n")

    def _try(self, attack: str, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        try:
            created = self._kube.create(resource, namespace, obj)
            self._record(attack, name=obj["metadata"]["name"], status=201 if created else 409)
        except ApiError as exc:
            self._record(
                attack, name=obj["metadata"]["name"], status=exc.status, message=exc.message
            )

    def create(self, resource: str, namespace: str | None, obj: dict[str, Any]) -> bool:
        ns = namespace or ""
        if resource == "pods":
            if not self._once_done:
                self._once_done = True
                self._once(ns, obj)
            bigger = copy.deepcopy(obj)
            bigger["metadata"]["name"] = f"{obj['metadata']['name']}-big"
            resources = bigger["spec"]["containers"][0]["resources"]
            for part in ("requests", "limits"):
                for key in list(resources[part]):
                    if key.startswith("nvidia.com/"):
                        resources[part][key] = str(int(resources[part][key]) + 1)
            self._try("oversized-pod", "pods", ns, bigger)
        return self._kube.create(resource, namespace, obj)

    def merge_patch(
        self, resource: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> Any:
        answered = self._kube.merge_patch(resource, namespace, name, patch)
        bid = (patch.get("status") or {}).get("bid") if resource == "negotiators/status" else None
        if bid:  # the honest bid went out in the status: the same bid again, as an Offer
            again = dict(bid, id=f"{bid['id']}.again")
            offer = objects.offer_object(Bid.model_validate(again), namespace=namespace)
            self._try("second-bid", "offers", namespace or "", offer)
        return answered

    def _once(self, namespace: str, leased_pod: dict[str, Any]) -> None:
        node = leased_pod["spec"]["nodeSelector"]["kubernetes.io/hostname"]
        squatter = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "squatter"},
            "spec": {
                "nodeName": node,
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.invalid/squat",
                        "resources": {"limits": {"cpu": "60", "memory": "500Gi"}},
                    }
                ],
            },
        }
        self._try("cpu-only-pod", "pods", namespace, squatter)
        queued = copy.deepcopy(squatter)
        queued["metadata"]["name"] = "squatter-waiting"
        del queued["spec"]["nodeName"]
        queued["spec"]["schedulerName"] = objects.MARKET_SCHEDULER
        self._try("cpu-only-waiting-pod", "pods", namespace, queued)
        held = copy.deepcopy(leased_pod)
        held["metadata"]["name"] = f"{leased_pod['metadata']['name']}-held"
        held["metadata"]["finalizers"] = ["example.com/keep"]
        self._try("pod-finalizer", "pods", namespace, held)
        huge = {
            "apiVersion": "gpuparley.io/v1alpha1",
            "kind": "Offer",
            "metadata": {"labels": {objects.SENDER_LABEL: "alpha"}},
            "spec": {"kind": "Accept", "id": "x", "sender": "alpha", "receiver": "beta",
                     "epoch": 0, "in_reply_to": "r" * 1_400_000},
        }  # fmt: skip
        for i in range(40):
            big = copy.deepcopy(huge)
            big["metadata"]["name"] = f"huge-{i}"
            self._try("huge-offer", "offers", namespace, big)
        held_offer = copy.deepcopy(huge)
        held_offer["metadata"]["name"] = "held-offer"
        held_offer["metadata"]["finalizers"] = ["example.com/keep"]
        held_offer["spec"]["in_reply_to"] = "r"
        self._try("offer-finalizer", "offers", namespace, held_offer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agent", required=True)
    parser.add_argument("--policy", required=True)
    parser.add_argument("--host-kubeconfig", required=True)
    parser.add_argument("--agent-kubeconfig", required=True)
    parser.add_argument("--attack-log", required=True, type=Path)
    args = parser.parse_args()
    setup_logging("info")
    telemetry = Telemetry("negotiator")
    server = telemetry.serve(0)
    print(json.dumps({"metrics_port": server.server_address[1]}), file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    policy = parse_negotiator(args.policy).negotiator(backend="onnxruntime")
    host = HostileKube(Kube(args.host_kubeconfig), args.attack_log)
    config = NegotiatorConfig(agent=args.agent, policy=args.policy)
    process = NegotiatorProcess(config, host, Kube(args.agent_kubeconfig), policy, telemetry)  # type: ignore[arg-type]
    process.run(stop.is_set)


if __name__ == "__main__":
    main()
