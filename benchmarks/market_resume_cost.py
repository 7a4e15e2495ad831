"""What does a market restart cost as its journal grows? (`deploy/market_state.py`)

The market keeps no snapshot: a restarted controller (or a standby taking over) reads the whole
journal from the host apiserver, replays every sub-step through the simulator's own market, and
reconciles the GPULease objects with the state it gets. So its start-up grows with the run. A
run is one scenario's workload, so the journal is bounded by that scenario's episode; this
measures the largest scenario shipped, `openb` (1,213 nodes, 5,706 pods, 8 agents), restarted
half-way through and at its end.

The journal is the one the truthful negotiators write: the episode is played in this process
(the baseline: the time the simulator takes for those sub-steps), each sub-step's inputs are
recorded as the market controller journals them, and the journal is committed to a real host
plane with the agents' bundles applied, beside the GPULeases the killed market had written.
Then a new market controller, as the market's user, starts on it as a restarted one does: its
watches synced, `resume` (the journal read, replayed and checked against the stored summary,
the GPULeases reconciled: only differences written). Each point on a fresh plane.

    python benchmarks/market_resume_cost.py [--scenario openb] [--points 0.5,1.0]

Prints, per point, the sub-steps, the seconds of each part and the ratio of the restart to
simulating the same sub-steps; saves benchmarks/results/market_resume_cost.json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.deploy import rbac
from gpuparley.deploy.apply import apply_objects
from gpuparley.deploy.cluster import nodes, planes
from gpuparley.deploy.kube import Kube, connect
from gpuparley.deploy.market_controller import MarketController
from gpuparley.deploy.market_state import MarketState, Record
from gpuparley.deploy.render import AgentBundle, render_objects
from gpuparley.envs.market.core import Market
from gpuparley.envs.market.encoding import Decision
from gpuparley.envs.market.episode import play_episode
from gpuparley.envs.market.parallel_env import GPUMarketEnv
from gpuparley.envs.scenario import Scenario, load_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save

SEED = 0


class JournalRecorder:
    """Watches an episode and writes down each sub-step as the market controller journals it:
    every message the market received (a bid, as its negotiator would have sent it: replayed,
    it is validated again) or, where the controller journals decisions (bargaining) or no
    message was made, the decision handed to `Market.decide`; with its sender and whether it
    was accepted; and the agents that passed."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.seconds: list[float] = []  # the episode's time when each record was closed
        self._open = Record()
        self._market: Market | None = None
        self._started = time.perf_counter()

    def __call__(self, env: GPUMarketEnv) -> None:
        if self._market is None:  # just reset: start recording this episode's market
            self._market = env.market
            assert self._market is not None
            self._record(self._market)
            self._started = time.perf_counter()
            return
        self.records.append(self._open)
        self.seconds.append(time.perf_counter() - self._started)
        self._open = Record()

    def _record(self, market: Market) -> None:
        decide, receive = market.decide, market.receive
        received: list[Any] = []
        messages = market.mechanism.name == "auction"

        def receiving(data: Any) -> Any:
            received.append(data)
            return receive(data)

        def recorded(agent: str, decision: Decision) -> Any:
            received.clear()
            receipt = decide(agent, decision)
            if decision.kind == "pass":
                self._open.passed.append(agent)
                return receipt
            source = f"{agent}.{len(self.records)}.{len(self._open.messages)}"
            entry: dict[str, Any] = {"source": source, "sender": agent}
            if messages and received:
                entry["message"] = received[-1].model_dump(mode="json")
            else:
                entry["decision"] = asdict(decision)
            self._open.messages.append({**entry, "accepted": receipt.accepted})
            return receipt

        market.receive = receiving  # type: ignore[method-assign]
        market.decide = recorded  # type: ignore[method-assign]


@contextlib.contextmanager
def _host(agents: list[str]) -> Iterator[Kube]:
    """A fresh host plane with every agent's bundle applied; the market user's client."""
    with tempfile.TemporaryDirectory(prefix="gpuparley-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        state = planes.up(
            state_dir, nodes.default_fake_nodes(), agents[:1], scenario="default",
            die_with_parent=True,
        )  # fmt: skip
        try:
            with connect(state.host.kubeconfig) as api:
                for agent in agents:
                    apply_objects(api, render_objects(AgentBundle(agent=agent)))
            kube = Kube(state.host.agent_kubeconfigs[rbac.MARKET_USER])
            try:
                yield kube
            finally:
                kube.close()
        finally:
            planes.down(state_dir)


def _controller(kube: Kube, scenario: Scenario) -> MarketController:
    return MarketController(kube, scenario, SEED, substep_timeout=1.0)


def _store(kube: Kube, scenario: Scenario, records: list[Record]) -> float:
    """Leave the host as the market that closed `records` would have when it was killed: its
    journal, with the summary of the state it held when it committed the last of them (its
    messages taken, the sub-step not closed yet), and the GPULeases of that state -- every
    lease it signed, the ended ones released (none collected: no negotiator runs here to
    acknowledge a release). The seconds the replay took in memory: the part of a restart
    that is the simulator's work."""
    writer = _controller(kube, scenario)
    started = time.perf_counter()
    for record in records[:-1]:
        writer._replay(record)
    for entry in records[-1].messages:
        writer.bids.replay(entry)
    replayed = time.perf_counter() - started
    writer.state.commit(records, writer._summary())
    with _watching(writer):
        writer.leases.publish()
    return replayed


@contextlib.contextmanager
def _watching(controller: MarketController) -> Iterator[None]:
    """The controller's watches started and synced (as `MarketController.run` has them before
    `resume`), stopped after."""
    for informer in controller.informers:
        informer.start()
    try:
        for informer in controller.informers:
            informer.wait_synced(60.0)
        yield
    finally:
        for informer in controller.informers:
            informer.stop()


def restart(kube: Kube, scenario: Scenario) -> dict[str, float]:
    """Seconds of each part of a restarted controller's start-up on the stored journal."""
    controller = _controller(kube, scenario)
    started = time.perf_counter()
    loaded = MarketState(kube, controller.state.run)
    loaded.load()  # timed apart: `resume` reads the journal again
    read = time.perf_counter() - started
    started = time.perf_counter()
    with _watching(controller):
        synced = time.perf_counter() - started
        started = time.perf_counter()
        controller.resume()
        resumed = time.perf_counter() - started
    return {
        "journal_read_s": read,
        "watches_synced_s": synced,
        "resume_s": resumed,
        "restart_s": synced + resumed,
        "live_leases": len(controller.market.leases),
        "chunks": len(loaded.chunks),
    }


def measure(scenario_name: str, points: list[float]) -> dict[str, Any]:
    scenario = load_scenario(scenario_name)
    recorder = JournalRecorder()
    env = GPUMarketEnv(scenario=scenario)
    play_episode(env, Truthful(), SEED, watch=recorder)
    total = len(recorder.records)
    print(
        f"{scenario_name}: {total} sub-steps, simulated in {recorder.seconds[-1]:.2f} s",
        flush=True,
    )
    rows = []
    for point in points:
        length = max(1, round(total * point))
        records = recorder.records[:length]
        simulated = recorder.seconds[length - 1]
        with _host(env.possible_agents) as kube:
            replayed = _store(kube, scenario, records)
            row = {"point": point, "substeps": length, "simulated_s": simulated}
            row["replay_in_memory_s"] = replayed
            row |= restart(kube, scenario)
        row["ratio"] = row["restart_s"] / simulated
        rows.append(row)
        print(
            f"restart after {length} sub-steps ({point:.0%}), {row['live_leases']} live leases:"
            f" journal read {row['journal_read_s']:.2f} s ({row['chunks']} chunks), watches"
            f" {row['watches_synced_s']:.2f} s, resume {row['resume_s']:.2f} s (of which the"
            f" replay in memory {replayed:.2f} s); simulating"
            f" those sub-steps {simulated:.2f} s: x{row['ratio']:.2f}",
            flush=True,
        )
    return {"scenario": scenario_name, "seed": SEED, "substeps": total, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="openb")
    parser.add_argument("--points", default="0.5,1.0")
    args = parser.parse_args()
    points = [float(p) for p in args.points.split(",")]
    figures = measure(args.scenario, points)
    print(f"saved {save('market_resume_cost', figures)}")


if __name__ == "__main__":
    main()
