"""The deploy manifests against a real host apiserver: CRDs become Established, the apiserver's
own OpenAPI/CEL validation accepts real messages and rejects bad ones (422), and the RBAC confines
agents (403) the way `deploy/README.md` says."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuparley.deploy import crds, objects
from gpuparley.deploy.apply import apply_objects
from gpuparley.deploy.cluster import planes
from gpuparley.deploy.render import AgentBundle, render_objects
from gpuparley.envs.market import messages

pytestmark = pytest.mark.cluster
AGENTS = ("alpha", "beta")


def _status_of(call: Callable[[], Any]) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def _demand() -> messages.Demand:
    return messages.Demand(
        job="job-7", pods=2, gpu_kind="mig", mig_profile="1g.10gb", cpu_milli=500, memory_mib=1024
    )


def _negotiation(sender: str, receiver: str, tag: str) -> list[Any]:
    common = {"sender": sender, "receiver": receiver, "epoch": 3}
    return [
        messages.Bid(id=f"{tag}-bid", demand=_demand(), price=4.5, term_epochs=5, **common),
        messages.Offer(
            id=f"{tag}-off", demand=_demand(), price=3.0, term_epochs=5, round=1, **common
        ),
        messages.CounterOffer(
            id=f"{tag}-co", in_reply_to=f"{tag}-off", price=3.5, round=2, **common
        ),
        messages.Accept(id=f"{tag}-acc", in_reply_to=f"{tag}-co", **common),
        messages.Reject(id=f"{tag}-rej", in_reply_to=f"{tag}-co", reason="too dear", **common),
    ]


def _lease(holder: str, lease_id: str) -> messages.Lease:
    return messages.Lease(
        id=f"msg-{lease_id}",
        sender=messages.MARKET,
        receiver=holder,
        epoch=3,
        lease_id=lease_id,
        holder=holder,
        lender=messages.MARKET,
        job="job-7",
        resources=(
            messages.ResourceItem(
                pod=0, node="gpu-node-0", gpu_kind="mig", mig_profile="1g.10gb", mig_start=2
            ),
            messages.ResourceItem(pod=1, node="gpu-node-1", gpu_kind="whole", gpus=(0, 1)),
        ),
        start_epoch=3,
        expires_epoch=8,
        price=4.5,
    )


@pytest.fixture(scope="module")
def deployed(cluster: planes.ClusterState) -> Iterator[Any]:
    """Both agents' bundles applied once, as the host admin; yields the admin ApiClient."""
    with planes.api_client(cluster.host.kubeconfig) as api:
        for agent in AGENTS:
            apply_objects(api, render_objects(AgentBundle(agent=agent)))
        yield api


@pytest.fixture(scope="module")
def agent_custom(cluster: planes.ClusterState) -> Iterator[Callable[[str], Any]]:
    """CustomObjectsApi (and CoreV1Api) as an agent's own host-plane identity."""
    from kubernetes import client

    opened: dict[str, Any] = {}

    def make(agent: str) -> Any:
        if agent not in opened:
            path = cluster.host.agent_kubeconfigs[objects.agent_namespace(agent)]
            opened[agent] = planes.api_client(path)
        return opened[agent]

    yield lambda agent: client.CustomObjectsApi(make(agent))
    for api in opened.values():
        api.close()


def _create(custom: Any, obj: dict[str, Any], plural: str, **kw: Any) -> Any:
    ns = obj["metadata"]["namespace"]
    return custom.create_namespaced_custom_object(crds.GROUP, crds.VERSION, ns, plural, obj, **kw)


def test_crds_established(deployed: Any) -> None:
    from kubernetes import client

    ext = client.ApiextensionsV1Api(deployed)
    for crd in crds.crd_documents():
        got = ext.read_custom_resource_definition(crd["metadata"]["name"])
        conditions = {c.type: c.status for c in got.status.conditions}
        assert conditions.get("Established") == "True", conditions
        assert conditions.get("NamesAccepted") == "True", conditions


def test_real_messages_round_trip(deployed: Any) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(deployed)
    for message in _negotiation("alpha", "beta", "rt"):
        stored = _create(custom, objects.offer_object(message), "offers")
        assert objects.message_from_object(stored) == message
    lease = _lease("alpha", "lease-rt")
    stored = _create(custom, objects.gpulease_object(lease), "gpuleases")
    assert objects.message_from_object(stored) == lease
    release = messages.Release(
        id="rel-rt",
        sender="market",
        receiver="alpha",
        epoch=8,
        lease_id="lease-rt",
        reason="expired",
    )
    stored["status"] = {"release": release.model_dump(mode="json")}
    patched = custom.replace_namespaced_custom_object_status(
        crds.GROUP, crds.VERSION, "agent-alpha", "gpuleases", stored["metadata"]["name"], stored
    )
    assert messages.parse_message(patched["status"]["release"]) == release


def _bad_offers() -> dict[str, dict[str, Any]]:
    bid, _offer, _co, accept, _rej = _negotiation("alpha", "beta", "bad")
    base = objects.offer_object(bid)
    cases: dict[str, dict[str, Any]] = {}

    def case(name: str, edit: Callable[[dict[str, Any]], None], src: dict[str, Any] = base) -> None:
        obj = copy.deepcopy(src)
        obj["metadata"]["name"] = f"bad-{name}"
        edit(obj["spec"])
        cases[name] = obj

    case("negative-price", lambda s: s.update(price=-1.0))
    case("unknown-kind", lambda s: s.update(kind="Haggle"))
    case("wrong-api-version", lambda s: s.update(api_version="gpuparley.io/v2"))
    case("bad-sender-name", lambda s: s.update(sender="Alpha_Agent"))
    case("string-price", lambda s: s.update(price="cheap"))
    case("bid-without-demand", lambda s: s.pop("demand"))
    case("zero-pods", lambda s: s["demand"].update(pods=0))
    case("accept-with-price", lambda s: s.update(price=1.0), objects.offer_object(accept))
    return cases


@pytest.mark.parametrize("name", sorted(_bad_offers()))
def test_apiserver_rejects_invalid_offer(deployed: Any, name: str) -> None:
    from kubernetes import client

    obj = _bad_offers()[name]
    with pytest.raises(messages.MessageError):  # the simulator's parser agrees
        messages.parse_message(obj["spec"])
    custom = client.CustomObjectsApi(deployed)
    assert _status_of(lambda: _create(custom, obj, "offers")) == 422


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("negative-price", lambda s: s.update(price=-0.5)),
        ("mig-start-out-of-range", lambda s: s["resources"][0].update(mig_start=9)),
        ("unknown-gpu-kind", lambda s: s["resources"][1].update(gpu_kind="tpu")),
        ("kind-not-lease", lambda s: s.update(kind="Bid")),
    ],
)
def test_apiserver_rejects_invalid_lease(
    deployed: Any, name: str, edit: Callable[[dict[str, Any]], None]
) -> None:
    from kubernetes import client

    obj = objects.gpulease_object(_lease("alpha", f"lease-{name}"))
    edit(obj["spec"])
    custom = client.CustomObjectsApi(deployed)
    assert _status_of(lambda: _create(custom, obj, "gpuleases")) == 422


def test_unknown_fields_rejected_with_strict_field_validation(deployed: Any) -> None:
    """Unknown fields are pruned by structural schemas; Strict clients get a 400 (not 422)."""
    from kubernetes import client

    obj = objects.offer_object(_negotiation("alpha", "beta", "strict")[3])
    obj["spec"]["bribe"] = 100
    custom = client.CustomObjectsApi(deployed)
    assert _status_of(lambda: _create(custom, obj, "offers", field_validation="Strict")) == 400


def test_rbac_confines_agents(deployed: Any, agent_custom: Callable[[str], Any]) -> None:
    from kubernetes import client

    alpha, beta = agent_custom("alpha"), agent_custom("beta")
    g, v = crds.GROUP, crds.VERSION
    to_beta = objects.offer_object(_negotiation("alpha", "beta", "rbac")[1])
    name = to_beta["metadata"]["name"]
    # alpha may post into beta's inbox, and nothing else there.
    assert _status_of(lambda: _create(alpha, to_beta, "offers")) == 200
    assert (
        _status_of(lambda: alpha.list_namespaced_custom_object(g, v, "agent-beta-inbox", "offers"))
        == 403
    )
    assert (
        _status_of(
            lambda: alpha.get_namespaced_custom_object(g, v, "agent-beta-inbox", "offers", name)
        )
        == 403
    )
    assert (
        _status_of(
            lambda: alpha.delete_namespaced_custom_object(g, v, "agent-beta-inbox", "offers", name)
        )
        == 403
    )
    assert (
        _status_of(
            lambda: alpha.patch_namespaced_custom_object(
                g, v, "agent-beta-inbox", "offers", name, {"spec": {"price": 0.0}}
            )
        )
        == 403
    )
    # beta reads (and consumes) what was addressed to it.
    inbox = beta.list_namespaced_custom_object(g, v, "agent-beta-inbox", "offers")
    assert name in {o["metadata"]["name"] for o in inbox["items"]}
    assert (
        _status_of(
            lambda: beta.delete_namespaced_custom_object(g, v, "agent-beta-inbox", "offers", name)
        )
        == 200
    )
    # alpha keeps its own outbox copy in its namespace.
    assert (
        _status_of(
            lambda: _create(
                alpha,
                {**to_beta, "metadata": {**to_beta["metadata"], "namespace": "agent-alpha"}},
                "offers",
            )
        )
        == 200
    )
    # Leases: the market writes, the holder only reads.
    lease = objects.gpulease_object(_lease("alpha", "lease-rbac"))
    assert _status_of(lambda: _create(alpha, lease, "gpuleases")) == 403
    admin = client.CustomObjectsApi(deployed)
    _create(admin, lease, "gpuleases")
    lname = lease["metadata"]["name"]
    assert (
        _status_of(
            lambda: alpha.get_namespaced_custom_object(g, v, "agent-alpha", "gpuleases", lname)
        )
        == 200
    )
    assert (
        _status_of(
            lambda: alpha.patch_namespaced_custom_object(
                g, v, "agent-alpha", "gpuleases", lname, {"spec": {"price": 0.0}}
            )
        )
        == 403
    )
    assert (
        _status_of(
            lambda: alpha.delete_namespaced_custom_object(g, v, "agent-alpha", "gpuleases", lname)
        )
        == 403
    )
    assert (
        _status_of(
            lambda: alpha.patch_namespaced_custom_object_status(
                g, v, "agent-alpha", "gpuleases", lname, {"status": {}}
            )
        )
        == 403
    )
    assert (
        _status_of(
            lambda: beta.get_namespaced_custom_object(g, v, "agent-alpha", "gpuleases", lname)
        )
        == 403
    )
    # Nothing of beta's own namespace.
    alpha_core = client.CoreV1Api(alpha.api_client)
    assert _status_of(lambda: alpha_core.list_namespaced_pod("agent-beta")) == 403
    assert (
        _status_of(lambda: alpha.list_namespaced_custom_object(g, v, "agent-beta", "offers")) == 403
    )


def test_deploy_apply_cli_is_idempotent(cluster: planes.ClusterState, deployed: Any) -> None:
    from gpuparley.deploy.cli import app

    runner = CliRunner()
    args = ["apply", "--kubeconfig", cluster.host.kubeconfig, "--agent", "alpha"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    lines = second.output.strip().splitlines()
    assert len(lines) == len(render_objects(AgentBundle(agent="alpha")))
    assert all(line.endswith(" unchanged") for line in lines), second.output
