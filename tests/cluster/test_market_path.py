"""The in-cluster message path without a cluster (fast; not marked `cluster`): the market
controller's view documents, the negotiator's decision-to-message code and the market's intake,
sub-step by sub-step, reproduce the simulator's lease trace for the continuous auction and for
bargaining -- and a controller that replays the journal of such a run ends in the same state.

What the end-to-end tests add on real apiservers (watches, RBAC, admission, pods, crashes) is
not here; this pins the protocol's logic, so a divergence names itself in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gpuparley.deploy.market_controller import MarketController
from gpuparley.deploy.market_state import Record
from gpuparley.deploy.negotiator_messages import message_for
from gpuparley.envs.market.encoding import decode, encode
from gpuparley.envs.market.episode import reset_players
from gpuparley.envs.market.parallel_env import has_decision
from gpuparley.envs.market.wire import view_from_dict
from gpuparley.envs.scenario import load_scenario
from gpuparley.policy.specs import parse_negotiator

from .market_runs import POLICY_FILE, SCENARIO, SEED, bargaining_scenario, simulated


class NoHost:
    """The host as far as this test needs it: nothing stored, every delete succeeds."""

    def list(self, *_args: Any, **_kwargs: Any) -> list[dict[str, Any]]:
        return []

    def delete(self, *_args: Any) -> bool:
        return True


def _run(scenario: str) -> tuple[MarketController, list[Record]]:
    """A market run through the cluster's message path, every seat the default policy."""
    policy = parse_negotiator(f"learned:{POLICY_FILE}").negotiator(backend="onnxruntime")
    controller = MarketController(NoHost(), load_scenario(scenario), SEED)  # type: ignore[arg-type]
    market = controller.market
    reset_players(controller.agents, dict.fromkeys(controller.agents, policy), SEED)
    records = []
    while not controller.done:
        specs = []
        deciders = [a for a in controller.agents if has_decision(controller.env.views[a])]
        asked = controller.questions.documents(deciders, (market.epoch, controller.seq))
        for agent, document in asked.items():
            document = json.loads(json.dumps(document))  # as the negotiator reads it
            view = view_from_dict(document["view"])
            observation, mask = encode(view)
            decision = decode(policy.act(observation, mask, view), view, np.asarray(mask))
            if decision.kind == "pass":
                continue
            job = market.jobs_by_name[decision.job] if decision.job else None
            message = message_for(agent, decision, document, lambda j=job: market.demand(j), None)
            specs.append(json.loads(message.model_dump_json()))
        entries = [controller.bids.take(spec)[0] for spec in specs]
        acted = {spec["sender"] for spec in specs}
        record = Record(entries, [a for a in controller.agents if a not in acted])
        records.append(Record.from_json(json.loads(json.dumps(record.to_json()))))
        controller._close(record)
    return controller, records


def _trace(controller: MarketController) -> list[dict[str, Any]]:
    return json.loads(json.dumps([e.to_json() for e in controller.trace]))


@pytest.mark.parametrize("mechanism", ["auction", "bargain"])
def test_the_cluster_message_path_is_the_simulators(mechanism: str, tmp_path: Path) -> None:
    scenario = SCENARIO if mechanism == "auction" else str(bargaining_scenario(tmp_path))
    controller, records = _run(scenario)
    trace = _trace(controller)
    assert any(e["event"] == "signed" for e in trace)
    assert trace == simulated(scenario, mechanism)
    # A second controller fed the journal reaches the same state, lease for lease.
    replayed = MarketController(NoHost(), load_scenario(scenario), SEED)  # type: ignore[arg-type]
    for record in records:
        replayed._replay(record)
    assert _trace(replayed) == trace
    assert replayed._summary() == controller._summary()
