"""The deploy manifests against a real host apiserver: CRDs become Established, the apiserver's
own OpenAPI/CEL validation accepts real messages and rejects bad ones (422), the RBAC confines
agents and the market (403) and the admission policies bind an offer's sender to its creator the
way `deploy/README.md` says.

Identities: the rig's agents are static-token users `agent-<a>` (group `gpuparley:agents`). The
rig itself grants them a Role in their home namespace (pods, configmaps, events, leases: `*`;
`deploy/cluster/host_plane.py`), so the bundle's own RBAC for a negotiator is checked as its
ServiceAccount `agent-<a>/negotiator`, and the market as `gpuparley:market` and
`gpuparley-system/market` -- all by impersonation from the admin client."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from typer.testing import CliRunner

from gpuparley.deploy import admission, crds, objects, rbac
from gpuparley.deploy.cluster import planes
from gpuparley.deploy.render import AgentBundle, render_objects
from gpuparley.envs.market import messages

from .helpers import outcome, status_of

pytestmark = pytest.mark.cluster


_status_of, _outcome = status_of, outcome


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


def _bid(sender: str, tag: str) -> messages.Bid:
    return messages.Bid(
        id=f"{tag}-bid",
        sender=sender,
        receiver=messages.MARKET,
        epoch=3,
        demand=_demand(),
        price=4.5,
        term_epochs=5,
    )


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


def test_deploy_apply_cli_is_idempotent(cluster: planes.LocalPlanes, deployed: Any) -> None:
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


NEGOTIATOR_SA = "system:serviceaccount:agent-alpha:negotiator"
MARKET_SA = "system:serviceaccount:gpuparley-system:market"


def test_offer_sender_is_the_creator(
    deployed: Any, agent_custom: Callable[[str], Any], as_user: Callable[[str], Any]
) -> None:
    """The admission policy: alpha may only send as alpha, only the market as `market`."""
    from kubernetes import client

    g, v, home = crds.GROUP, crds.VERSION, "agent-alpha"
    alpha = agent_custom("alpha")
    bid = objects.offer_object(_bid("alpha", "vap-alpha"))
    assert bid["metadata"]["namespace"] == home  # a bid waits in its sender's home
    assert _outcome(lambda: _create(alpha, bid, "offers")) == (200, "")

    # Forged sender, in alpha's home: 403 from the policy, naming sender and user.
    forged = objects.offer_object(_bid("beta", "vap-forged"), namespace=home)
    status, message = _outcome(lambda: _create(alpha, forged, "offers"))
    assert status == 403, message
    assert f"ValidatingAdmissionPolicy '{admission.OFFER_SENDER_POLICY}'" in message
    assert "spec.sender beta cannot be sent by agent-alpha" in message
    # ... and alpha cannot post into beta's home at all (RBAC).
    into_beta = objects.offer_object(_bid("alpha", "vap-into-beta"), namespace="agent-beta")
    assert _status_of(lambda: _create(alpha, into_beta, "offers")) == 403

    # In beta's inbox: as itself yes; as beta or as the market no.
    to_beta = messages.Offer(
        id="vap-off", sender="alpha", receiver="beta", epoch=3, demand=_demand(), price=3.0,
        term_epochs=5, round=1,
    )  # fmt: skip
    assert _status_of(lambda: _create(alpha, objects.offer_object(to_beta), "offers")) == 200
    for sender in ("beta", messages.MARKET):
        fake = to_beta.model_copy(update={"id": f"vap-as-{sender}", "sender": sender})
        obj = objects.offer_object(fake)
        assert obj["metadata"]["namespace"] == "agent-beta-inbox"
        status, message = _outcome(lambda obj=obj: _create(alpha, obj, "offers"))
        assert status == 403, message
        assert f"spec.sender {sender} cannot be sent by agent-alpha" in message

    # The sender label must agree with spec.sender (receivers select by it): 422.
    mislabelled = objects.offer_object(_bid("alpha", "vap-label"))
    mislabelled["metadata"]["labels"][objects.SENDER_LABEL] = "beta"
    status, message = _outcome(lambda: _create(alpha, mislabelled, "offers"))
    assert status == 422, message
    assert "label gpuparley.io/sender=beta does not match spec.sender alpha" in message
    # Cluster admins are exempt (tests inject what the market must refuse on its own).
    admin = client.CustomObjectsApi(deployed)
    assert _status_of(lambda: _create(admin, mislabelled, "offers", dry_run="All")) == 200
    assert _status_of(lambda: _create(admin, forged, "offers", dry_run="All")) == 200
    # An agent's home holds only its own offers, even from an admitted sender (the admin
    # posting as beta into alpha's home passes; beta itself has no RBAC there).
    misplaced = objects.offer_object(_bid("beta", "vap-misplaced"), namespace=home)
    sa_beta = client.CustomObjectsApi(as_user("system:serviceaccount:agent-beta:negotiator"))
    assert _status_of(lambda: _create(sa_beta, misplaced, "offers", dry_run="All")) == 403

    # UPDATE too: alpha cannot rewrite its own outbox record into a message from beta.
    outbox = objects.offer_object(_bid("alpha", "vap-outbox"), namespace="agent-alpha")
    _create(alpha, outbox, "offers")
    rewrite = {
        "metadata": {"labels": {objects.SENDER_LABEL: "beta"}},
        "spec": {"sender": "beta"},
    }
    oname = outbox["metadata"]["name"]
    status, message = _outcome(
        lambda: alpha.patch_namespaced_custom_object(g, v, "agent-alpha", "offers", oname, rewrite)
    )
    assert status == 403, message
    assert "spec.sender beta cannot be sent by agent-alpha" in message

    # Beta cannot read, change or withdraw alpha's bids.
    bname = bid["metadata"]["name"]
    beta = agent_custom("beta")
    assert _status_of(lambda: beta.list_namespaced_custom_object(g, v, home, "offers")) == 403
    assert (
        _status_of(lambda: beta.delete_namespaced_custom_object(g, v, home, "offers", bname)) == 403
    )

    # The negotiator ServiceAccount: same rule, bound by the bundle's per-agent RoleBinding.
    sa = client.CustomObjectsApi(as_user(NEGOTIATOR_SA))
    own = objects.offer_object(_bid("alpha", "vap-sa"))
    assert _outcome(lambda: _create(sa, own, "offers")) == (200, "")
    forged_sa = objects.offer_object(_bid("beta", "vap-sa-forged"), namespace="agent-alpha")
    status, message = _outcome(lambda: _create(sa, forged_sa, "offers"))
    assert status == 403, message
    assert f"cannot be sent by {NEGOTIATOR_SA}" in message

    # The market reads the bids where they wait (by receiver label, across namespaces) and
    # consumes them, and sends only as `market`.
    selector = f"{objects.RECEIVER_LABEL}={messages.MARKET}"
    for user in (rbac.MARKET_USER, MARKET_SA):
        market = client.CustomObjectsApi(as_user(user))
        got = market.list_cluster_custom_object(g, v, "offers", label_selector=selector)
        assert bname in {o["metadata"]["name"] for o in got["items"]}
    market = client.CustomObjectsApi(as_user(rbac.MARKET_USER))
    assert (
        _status_of(lambda: market.delete_namespaced_custom_object(g, v, home, "offers", bname))
        == 200
    )
    assert (
        _status_of(lambda: market.get_namespaced_custom_object(g, v, home, "offers", bname)) == 404
    )
    from_market = to_beta.model_copy(update={"id": "vap-market", "sender": messages.MARKET})
    assert _status_of(lambda: _create(market, objects.offer_object(from_market), "offers")) == 200
    as_alpha = to_beta.model_copy(update={"id": "vap-market-as-alpha"})
    status, message = _outcome(lambda: _create(market, objects.offer_object(as_alpha), "offers"))
    assert status == 403, message


def test_market_reads_negotiators_and_nodes(
    deployed: Any, agent_custom: Callable[[str], Any], as_user: Callable[[str], Any]
) -> None:
    from kubernetes import client

    g, v = crds.GROUP, crds.VERSION
    for user in (rbac.MARKET_USER, MARKET_SA):
        api = as_user(user)
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        listed = custom.list_cluster_custom_object(g, v, "negotiators")
        assert {("agent-alpha", "alpha"), ("agent-beta", "beta")} <= {
            (o["metadata"]["namespace"], o["metadata"]["name"]) for o in listed["items"]
        }
        assert (
            _status_of(
                lambda custom=custom: custom.get_namespaced_custom_object_status(
                    g, v, "agent-beta", "negotiators", "beta"
                )
            )
            == 200
        )
        assert (
            _status_of(
                lambda custom=custom: custom.patch_namespaced_custom_object_status(
                    g, v, "agent-beta", "negotiators", "beta", {"status": {"phase": "x"}}
                )
            )
            == 403
        )
        assert _status_of(lambda core=core: core.list_node()) == 200
        assert _status_of(lambda core=core: core.list_namespaced_pod("agent-beta")) == 200
    # Agents do not see each other's negotiators.
    alpha = agent_custom("alpha")
    assert (
        _status_of(lambda: alpha.list_namespaced_custom_object(g, v, "agent-beta", "negotiators"))
        == 403
    )
