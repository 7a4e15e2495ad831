"""Negotiator duels: paired games, same opponents for the tested and the rival seat."""

import pytest

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.evaluation.duel import duel


def test_a_negotiator_duelling_itself_ties_exactly():
    result = duel(Truthful, "tiny", "auction", seeds=[0, 1], max_epochs=30, rivals=["truthful"])
    row = result["rivals"]["truthful"]
    assert row["tested"][0] == pytest.approx(row["rival"][0])
    assert row["difference"][0] == pytest.approx(0.0)
