"""Proof that each agent really has its own control plane, and that agent credentials are
confined: real 401/403 answers from real apiservers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuparley.deploy.cluster import planes
from gpuparley.deploy.kube import connect

pytestmark = pytest.mark.cluster


def _core(api: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api)


def _configmap(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {"offer": "4x A100 for 2h"}}


def _status_of(call: Any) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


@pytest.fixture
def raw_client() -> Iterator[Any]:
    """Factory for a client pointed at ``server`` with arbitrary credentials."""
    from kubernetes import client

    made: list[Any] = []

    def make(server: str, ca: str, *, cert: Path | None = None, token: str | None = None) -> Any:
        cfg = client.Configuration()
        cfg.host = server
        cfg.ssl_ca_cert = ca
        if cert is not None:
            cfg.cert_file = str(cert / "admin.crt")
            cfg.key_file = str(cert / "admin.key")
        if token is not None:
            cfg.api_key = {"authorization": f"Bearer {token}"}
        api = client.ApiClient(cfg)
        made.append(api)
        return _core(api)

    yield make
    for api in made:
        api.close()


def test_each_agent_has_its_own_storage_prefix_and_ca(cluster: planes.LocalPlanes) -> None:
    a, b = cluster.agent("alpha"), cluster.agent("beta")
    assert len({a.etcd_prefix, b.etcd_prefix, cluster.host.etcd_prefix}) == 3
    assert len({a.port, b.port, cluster.host.port}) == 3
    assert Path(a.ca_cert).read_bytes() != Path(b.ca_cert).read_bytes()


def test_objects_in_one_agent_plane_are_invisible_elsewhere(
    cluster: planes.LocalPlanes,
) -> None:
    name = f"plan-{uuid.uuid4().hex[:6]}"
    with (
        connect(cluster.agent("alpha").kubeconfig) as a_api,
        connect(cluster.agent("beta").kubeconfig) as b_api,
        connect(cluster.host.kubeconfig) as h_api,
    ):
        a, b, h = _core(a_api), _core(b_api), _core(h_api)
        a.create_namespaced_config_map("default", _configmap(name))
        assert a.read_namespaced_config_map(name, "default").data["offer"]
        assert _status_of(lambda: b.read_namespaced_config_map(name, "default")) == 404
        assert _status_of(lambda: h.read_namespaced_config_map(name, "default")) == 404
        assert name not in [c.metadata.name for c in b.list_config_map_for_all_namespaces().items]
        # Namespaces made in the host for agents do not exist in the agents' own planes.
        assert _status_of(lambda: a.read_namespace("agent-alpha")) == 404
        assert h.read_namespace("agent-alpha").metadata.name == "agent-alpha"


def test_agent_credentials_are_rejected_by_another_plane(
    cluster: planes.LocalPlanes, raw_client: Any
) -> None:
    a, b = cluster.agent("alpha"), cluster.agent("beta")
    a_pki = Path(a.pki_dir)
    # Sanity: alpha's admin certificate works on alpha's own plane.
    own = raw_client(a.server, a.ca_cert, cert=a_pki)
    assert own.list_namespaced_config_map("default") is not None
    # alpha's admin client certificate (signed by alpha's CA) presented to beta's apiserver.
    with_cert = raw_client(b.server, b.ca_cert, cert=a_pki)
    assert (
        _status_of(lambda: with_cert.create_namespaced_config_map("default", _configmap("x")))
        == 401
    )
    # alpha's admin bearer token presented to beta's apiserver and to the host's.
    token = (a_pki / "tokens.csv").read_text().split(",", 1)[0]
    for target in (b, cluster.host):
        with_token = raw_client(target.server, target.ca_cert, token=token)
        assert _status_of(lambda c=with_token: c.list_namespaced_config_map("default")) == 401


def test_agent_identity_in_host_is_confined_to_its_namespace(
    cluster: planes.LocalPlanes, raw_client: Any
) -> None:
    host = cluster.host
    token = host.agent_tokens["agent-alpha"]
    alpha = raw_client(host.server, host.ca_cert, token=token)
    name = f"offer-{uuid.uuid4().hex[:6]}"
    alpha.create_namespaced_config_map("agent-alpha", _configmap(name))  # its own namespace: ok
    assert len(alpha.list_node().items) >= 3  # may read the GPU inventory
    assert (
        _status_of(lambda: alpha.create_namespaced_config_map("agent-beta", _configmap(name)))
        == 403
    )
    assert _status_of(lambda: alpha.list_namespaced_pod("agent-beta")) == 403
    assert (
        _status_of(lambda: alpha.create_namespaced_config_map("default", _configmap(name))) == 403
    )
    assert _status_of(lambda: alpha.create_namespace({"metadata": {"name": "evil"}})) == 403
    assert _status_of(lambda: alpha.delete_node("gpu-a100-excl-0")) == 403
    # The kubeconfig written for the agent carries the same identity.
    with connect(host.agent_kubeconfigs["agent-alpha"]) as api:
        assert _status_of(lambda: _core(api).list_namespaced_pod("agent-beta")) == 403
        assert _core(api).list_namespaced_pod("agent-alpha") is not None


def test_agent_planes_serve_only_what_an_agent_needs(cluster: planes.LocalPlanes) -> None:
    """The default (slim) agent plane serves pods but not the groups an agent never uses; the
    host serves everything."""
    from gpuparley.deploy.kube import Kube

    from .helpers import status_of

    assert cluster.profile == "slim"
    agent, host = Kube(cluster.agent("alpha").kubeconfig), Kube(cluster.host.kubeconfig)
    try:
        for kube, path, want in (
            (agent, "/api/v1/namespaces/default/pods", 200),
            (agent, "/apis/coordination.k8s.io/v1/namespaces/default/leases", 200),
            (agent, "/apis/apps/v1/namespaces/default/deployments", 404),
            (agent, "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", 404),
            (host, "/apis/apps/v1/namespaces/default/deployments", 200),
        ):
            status = status_of(lambda kube=kube, path=path: kube.call("GET", path))
            assert status == want, (path, status)
    finally:
        agent.close()
        host.close()
