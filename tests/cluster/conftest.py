"""Session fixtures: one real local cluster (etcd, host plane with kube-scheduler and KWOK, two
agent planes) for all ``@pytest.mark.cluster`` tests, torn down at the end of the session.

If the component binaries are missing the fixture *fails* (it does not skip): CI runs
``gpuparley cluster build`` first, and a silent skip would hide a broken build. When a test that
uses the cluster fails, the tail of every component's log is attached to its report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from gpuparley.deploy.cluster import build, nodes, planes, processes
from gpuparley.deploy.kube import connect

AGENTS = ("alpha", "beta")
_state: planes.LocalPlanes | None = None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[planes.LocalPlanes]:
    """Bring the planes up once per session; always tear them down (and check nothing is left)."""
    global _state
    missing = build.missing_binaries()
    if missing:
        pytest.fail(
            f"cluster component binaries not built: {', '.join(missing)} (looked in "
            f"{build.bin_dir()}). Run `{build.BUILD_COMMAND}` first "
            f"(or set ${build.CACHE_ENV} to the cache holding them).",
            pytrace=False,
        )
    state_dir = tmp_path_factory.mktemp("cluster-state")
    try:
        _state = planes.up(
            state_dir, nodes.default_fake_nodes(), AGENTS, scenario="default", die_with_parent=True
        )
    except processes.ClusterError as exc:
        pytest.fail(f"cluster did not come up: {exc}", pytrace=False)
    try:
        yield _state
    finally:
        _stopped, remaining = planes.down(state_dir)
        _state = None
        assert not remaining, f"processes survived `down`: {remaining}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach component log tails to the report of a failed cluster test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and _state is not None and "cluster" in getattr(item, "fixturenames", ()):
        for proc in _state.processes:
            alive = "alive" if processes.is_alive(proc) else "DEAD"
            report.sections.append(
                (f"{proc.name} log ({alive}, {proc.log})", processes.log_tail(proc.log, 50))
            )


@pytest.fixture(scope="session")
def host_core(cluster: planes.LocalPlanes) -> Iterator[Any]:
    """CoreV1Api for the host plane, as its admin."""
    from kubernetes import client

    with connect(cluster.host.kubeconfig) as api:
        yield client.CoreV1Api(api)
