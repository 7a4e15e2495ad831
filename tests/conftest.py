"""Shared test fixtures."""

import pytest

from gpuparley.envs.topology import ClusterSpec

from builders import mixed_cluster


@pytest.fixture
def cluster_spec() -> ClusterSpec:
    return mixed_cluster()
