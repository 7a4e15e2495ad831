"""The market's start-up: a 403 right after its RBAC was applied is waited out, a lasting one is
raised (a real misconfiguration)."""

from __future__ import annotations

import pytest

from gpuparley.deploy.kube import Forbidden
from gpuparley.deploy.market_setup import until_authorised


def test_a_refusal_while_rbac_propagates_is_retried() -> None:
    left = [2]

    def step() -> str:
        if left[0] > 0:
            left[0] -= 1
            raise Forbidden(403, "Forbidden", 'nodes is forbidden: User "gpuparley:market"')
        return "nodes"

    assert until_authorised(step, seconds=5.0) == "nodes"
    assert left == [0]


def test_a_lasting_refusal_is_raised() -> None:
    calls = []

    def step() -> str:
        calls.append(1)
        raise Forbidden(403, "Forbidden", "nodes is forbidden")

    with pytest.raises(Forbidden, match="nodes is forbidden"):
        until_authorised(step, seconds=0.0)
    assert len(calls) == 1
