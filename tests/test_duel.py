"""Negotiator duels: paired games, same opponents for the tested and the rival seat."""

import pytest

from gpuparley.agents.negotiators.simple import Truthful
from gpuparley.experiments.duel import duel, mean_ci


def test_mean_ci_matches_a_hand_computation():
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    assert half == pytest.approx(2.776 * (2.5**0.5) / 5**0.5, rel=5e-3)


def test_a_negotiator_duelling_itself_ties_exactly():
    result = duel(Truthful, "tiny", "auction", seeds=[0, 1], max_epochs=30, rivals=["truthful"])
    row = result["rivals"]["truthful"]
    assert row["tested"][0] == pytest.approx(row["rival"][0])
    assert row["difference"][0] == pytest.approx(0.0)
