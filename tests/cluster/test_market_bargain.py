"""Bargaining on real apiservers: agents lend each other quota through messages in their inboxes,
brokered and validated by the market as in the simulator, with sim-to-real parity.

The scenario is `cluster-e2e` with `mechanism: bargain` and uneven quota shares (alpha and beta
own a fifth each, gamma three fifths), so the agents borrow from each other: a proposal goes to
the market, which addresses it to a lender at the proposer's turn; the lender answers (accept,
counter or reject) into the proposer's inbox, and so on; agreements become `GPULease` objects
with the lender named, a lender reclaims quota for its own waiting job, and jobs that fit their
owner's own quota run under quota grants (`quota-<job>-<clearing>` GPULeases, price 0).

The negotiators are truthful ones (`BARGAINERS`): the shipped learned policy is trained for the
auction (the deployment's default mechanism) and finishes 20 of this scenario's 22 jobs when it
bargains (truthful finishes all 22; README, generalisation), and this test is about the
protocol, which must see every job through.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .market_runs import (
    Run,
    assert_one_lease_at_a_time,
    bargaining_scenario,
    market_run,
    simulated,
)

pytestmark = pytest.mark.cluster

BARGAINERS = "scripted:truthful"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    state_dir = tmp_path_factory.mktemp("market-bargain")
    scenario = bargaining_scenario(state_dir)
    with market_run(
        state_dir, lambda _run: None, scenario=str(scenario), policy=BARGAINERS
    ) as result:
        result.faults["scenario"] = str(scenario)
        yield result


def test_bargained_leases_match_the_simulator(run: Run) -> None:
    assert run.status["finished"], run.status
    expected = simulated(run.faults["scenario"], "bargain", BARGAINERS)
    assert any(e["event"] == "signed" for e in expected), "the scenario must trade quota"
    assert run.trace == expected
    assert_one_lease_at_a_time(run.trace)
    assert run.status["ledger_imbalance"] == pytest.approx(0.0, abs=1e-9)
    # Nothing forged, doubled, malformed or late; a proposal nobody has room for, or an answer
    # the market refuses, is refused in the simulator as well (the traces are equal).
    assert set(run.status["rejected"]) <= {"invalid"}, run.status["rejected"]


def test_every_job_ran_under_a_grant_and_nothing_was_overcommitted(run: Run) -> None:
    assert run.seen is not None
    for pods in run.final_agent_pods.values():
        assert all(p["status"].get("phase") == "Succeeded" for p in pods)
    bound = {name for (_ns, name) in run.seen.bound}
    every_pod = {p["metadata"]["name"] for pods in run.final_agent_pods.values() for p in pods}
    assert every_pod <= bound, sorted(every_pod - bound)
    assert not run.seen.outside_lease, run.seen.outside_lease[:5]
    assert not run.seen.overcommit, run.seen.overcommit[:5]
    assert not run.seen.gang_splits, run.seen.gang_splits[:5]
    assert run.status["evicted"] == []
    assert any(e["event"] == "signed" for e in run.trace)
