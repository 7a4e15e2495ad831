"""Shared test fixtures."""

import logging
from collections.abc import Iterator

import pytest

from gpuparley.envs.topology import ClusterSpec

from builders import mixed_cluster


@pytest.fixture
def cluster_spec() -> ClusterSpec:
    return mixed_cluster()


@pytest.fixture
def root_logging_restored() -> Iterator[None]:
    """The processes' commands set the root logger's handlers to JSON on the stderr of the
    moment (under `CliRunner`, the runner's, closed after its invoke): put pytest's back for the
    tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
