"""Answers given ahead (`deploy/answers_ahead.py`), without a cluster: the market's side
(`Questions`: view documents, answers taken by digest) and the negotiator's side
(`answers_ahead` on the document as it arrives, through JSON) over a burst's rounds. The
market must take an answer given ahead at every later sub-step of a round -- one question per
agent per round -- and end up exactly where the simulator does when every agent is asked."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import yaml

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.deploy.answers_ahead import (
    LOOKAHEAD_KEY,
    ahead_id,
    answer_for,
    answers_ahead,
    view_digest,
)
from gpuparley.deploy.market_questions import Questions
from gpuparley.envs.market.encoding import Decision, decode, encode
from gpuparley.envs.market.parallel_env import GPUMarketEnv, has_decision
from gpuparley.envs.market.wire import view_from_dict
from gpuparley.envs.scenario import scenarios_dir


def _burst(tmp_path: Path, jobs: int = 24) -> str:
    """cluster-e2e with its jobs arriving within a clearing interval: rounds of several
    sub-steps (as in `benchmarks/negotiation_e2e.py`)."""
    doc = yaml.safe_load((scenarios_dir() / "cluster-e2e.yaml").open())
    doc["workload"]["generator"].update({"jobs": jobs, "hours": 0.01, "rate_per_hour": 1e6})
    doc["market"]["clearing_interval"] = 60.0
    path = tmp_path / "burst.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class _Statuses:
    """The Negotiator watch's cache, as `Questions` reads it."""

    def __init__(self, agents: list[str]) -> None:
        self.status: dict[str, dict[str, Any]] = {a: {} for a in agents}

    def objects(self) -> list[dict[str, Any]]:
        return [
            {"metadata": {"namespace": f"agent-{a}"}, "spec": {"agent": a}, "status": s}
            for a, s in self.status.items()
        ]


def _decide(view) -> Decision:
    observation, mask = encode(view)
    return decode(int(Truthful().act(observation, mask, view)), view, np.asarray(mask))


def _run_with_answers_ahead(scenario: str, max_epochs: int) -> tuple[GPUMarketEnv, list[int]]:
    """The market asking as the controller does; per sub-step, how many agents it asked."""
    env = GPUMarketEnv(scenario=scenario, max_epochs=max_epochs)
    env.reset(seed=0)
    market = env.market
    statuses = _Statuses(market.agents)
    questions = Questions(None, env, statuses)  # type: ignore[arg-type]  # nothing is written
    planned: dict[tuple[str, int], Decision] = {}
    asked_per_substep, seq = [], 0
    while env.agents:
        token = (market.epoch, seq)
        deciders = [a for a in market.agents if has_decision(env.views[a])]
        documents = questions.documents(deciders, token)
        ahead = questions.answered_ahead(documents, token)
        asked = [a for a in deciders if a not in ahead]
        for agent in asked:  # the negotiator's side, on the document as it arrives
            payload = json.loads(json.dumps(documents[agent]))
            view = view_from_dict(payload["view"])
            planned[agent, seq] = decision = _decide(view)

            def decide(view, document, message_id, agent=agent):
                planned[agent, document["substep"]] = decided = _decide(view)
                if decided.kind == "pass":
                    return decided, None
                return decided, SimpleNamespace(kind="Bid", model_dump=lambda mode: {})

            entries = answers_ahead(payload, view, decision, decide, agent)
            statuses.status[agent] = {"ahead": json.loads(json.dumps(entries))}
        for agent in deciders:
            market.decide(agent, planned[agent, seq])
        env.advance()
        asked_per_substep.append(len(asked))
        seq += 1
    return env, asked_per_substep


def test_one_question_per_agent_and_round_and_the_simulators_outcome(tmp_path):
    scenario = _burst(tmp_path)
    env, asked = _run_with_answers_ahead(scenario, max_epochs=3)
    assert asked[0] == 3 and len(asked) >= 6  # a burst: every agent asked at first ...
    assert sum(asked[1:7]) == 0  # ... and answering the rest of the round ahead
    plain = GPUMarketEnv(scenario=scenario, max_epochs=3)
    plain.reset(seed=0)
    while plain.agents:
        actions = {}
        for agent in plain.agents:
            view = plain.views[agent]
            observation, mask = encode(view)
            actions[agent] = int(Truthful().act(observation, mask, view))
        plain.step(actions)
    ours, theirs = env.market, plain.market
    assert len(ours.leases) >= 5
    assert [ours.leases[k] for k in sorted(ours.leases)] == [
        theirs.leases[k] for k in sorted(theirs.leases)
    ]
    assert ours.ledger.balances == theirs.ledger.balances
    assert ours.clearings == theirs.clearings


def test_the_digest_covers_the_question_not_the_lookahead():
    document = {"epoch": 1, "substep": 4, "view": {"committed": 0.5}, LOOKAHEAD_KEY: {"q": 1}}
    same = {**document, LOOKAHEAD_KEY: {"q": 2}}
    assert view_digest(document) == view_digest(same)
    assert view_digest(document) != view_digest({**document, "view": {"committed": 0.25}})
    assert view_digest(document) != view_digest({**document, "substep": 5})


def test_an_answer_given_ahead_is_found_by_its_sub_step_and_view():
    message_id = ahead_id("team.a", 3, 17, "abc")
    assert message_id != "team.a.3.17"  # an asked view's answer has an id of its own
    entry = {"substep": 17, "view": "abc", "action": "bid", "message": message_id, "bid": {}}
    status = {"ahead": ["junk", entry]}
    assert answer_for(status, 17, "abc") == entry
    assert answer_for(status, 17, "abd") is None  # another view of that sub-step
    assert answer_for(status, 18, "abc") is None
