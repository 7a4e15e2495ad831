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


@pytest.fixture(scope="session")
def deployed(cluster: planes.LocalPlanes) -> Iterator[Any]:
    """Every session agent's bundle applied once, as the host admin, with the admission policies
    in force and the quotas counted; yields the admin ApiClient."""
    from gpuparley.deploy import admission, objects
    from gpuparley.deploy.apply import apply_objects
    from gpuparley.deploy.kube import Kube
    from gpuparley.deploy.render import AgentBundle, render_objects

    from .helpers import wait_denied_by, wait_quotas_counted

    with connect(cluster.host.kubeconfig) as api:
        for agent in AGENTS:
            apply_objects(api, render_objects(AgentBundle(agent=agent)))
        alpha = Kube(cluster.host.agent_kubeconfigs["agent-alpha"])
        admin = Kube(cluster.host.kubeconfig)
        try:
            forged = {"apiVersion": "gpuparley.io/v1alpha1", "kind": "Offer",
                      "metadata": {"name": "probe", "labels": {objects.SENDER_LABEL: "beta"}},
                      "spec": {"kind": "Accept", "id": "p", "sender": "beta",
                               "receiver": "alpha", "epoch": 0, "in_reply_to": "x"}}  # fmt: skip
            dry = {"dryRun": "All"}
            wait_denied_by(
                admission.OFFER_SENDER_POLICY,
                lambda: alpha.call(
                    "POST", "/apis/gpuparley.io/v1alpha1/namespaces/agent-beta-inbox/offers",
                    forged, dry,
                ),
            )  # fmt: skip
            view = {"metadata": {"name": objects.VIEW_CONFIGMAP}, "data": {}}
            wait_denied_by(
                admission.MARKET_VIEW_POLICY,
                lambda: alpha.call("POST", "/api/v1/namespaces/agent-alpha/configmaps", view, dry),
            )
            # The scheduler policy probed with a request only it denies: an agent's pod for
            # kube-scheduler. (The fit policy has no parameter to act on until a lease exists;
            # its tests wait for their own.)
            pod = {"metadata": {"name": "probe"},
                   "spec": {"containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
            wait_denied_by(
                admission.LEASE_SCHEDULER_POLICY,
                lambda: alpha.call("POST", "/api/v1/namespaces/agent-alpha/pods", pod, dry),
            )
            homes = [objects.agent_namespace(a) for a in AGENTS]
            wait_quotas_counted(admin, homes + [f"{h}-inbox" for h in homes])
        finally:
            alpha.close()
            admin.close()
        yield api


@pytest.fixture(scope="session")
def as_user(cluster: planes.LocalPlanes, deployed: Any) -> Iterator[Any]:
    """An ApiClient impersonating a user (e.g. `gpuparley:market`, or a ServiceAccount as
    `system:serviceaccount:<ns>:<name>`), via the admin's credentials."""
    opened: dict[str, Any] = {}

    def make(user: str) -> Any:
        if user not in opened:
            api = connect(cluster.host.kubeconfig)
            api.set_default_header("Impersonate-User", user)
            opened[user] = api
        return opened[user]

    yield make
    for api in opened.values():
        api.close()


@pytest.fixture(scope="session")
def agent_custom(cluster: planes.LocalPlanes) -> Iterator[Any]:
    """CustomObjectsApi as an agent's own host-plane identity (`.api_client` for others)."""
    from kubernetes import client

    from gpuparley.deploy.objects import agent_namespace

    opened: dict[str, Any] = {}

    def make(agent: str) -> Any:
        if agent not in opened:
            opened[agent] = connect(cluster.host.agent_kubeconfigs[agent_namespace(agent)])
        return opened[agent]

    yield lambda agent: client.CustomObjectsApi(make(agent))
    for api in opened.values():
        api.close()
