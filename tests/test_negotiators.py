"""Scripted negotiators that need a hand-made view to show what they do."""

from __future__ import annotations

import dataclasses

from gpuparley.agents.negotiators.registry import SCRIPTED, make_negotiator
from gpuparley.envs.market.encoding import PRICE_LEVELS, AgentView, JobSlot, bid_action, encode

SLOT = JobSlot(
    job="job-1",
    gpus=1.0,
    gpu_kind="whole",
    pods=1,
    epoch_value=3.0,
    value_density=1.0,
    waited_hours=0.5,
    slack_hours=10.0,
    renewal=False,
    fits_now=True,
    within_quota=True,
)


def view(*slots: JobSlot) -> AgentView:
    values = {f.name: 0 for f in dataclasses.fields(AgentView) if f.init and f.name != "extras"}
    values.update(
        balance=100.0, budget_per_epoch=10.0, mechanism="auction", slots=slots, inbox=None
    )
    values["passed"] = False
    return AgentView(**values)


def act(name: str, current: AgentView) -> int:
    observation, mask = encode(current)
    return make_negotiator(name).act(observation, mask, current)


def test_deadline_aware_outbids_only_for_a_waiting_job_about_to_miss_its_deadline() -> None:
    urgent = dataclasses.replace(SLOT, job="job-2", slack_hours=1.0)
    top, truthful = len(PRICE_LEVELS) - 1, PRICE_LEVELS.index(1.0)
    assert act("deadline-aware", view(SLOT, urgent)) == bid_action(0, truthful)
    assert act("deadline-aware", view(urgent, SLOT)) == bid_action(0, top)
    renewal = dataclasses.replace(urgent, renewal=True)
    assert act("deadline-aware", view(renewal)) == bid_action(0, truthful)
    assert act("truthful", view(urgent)) == bid_action(0, truthful)
    assert "deadline-aware" in SCRIPTED
