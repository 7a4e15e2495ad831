"""Fast checks of the deploy manifests (no cluster): render output, committed CRDs up to date,
schema conversion rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpuparley.deploy import admission, crds, objects, rbac
from gpuparley.deploy.cli import app
from gpuparley.deploy.render import AgentBundle, render_objects, shared_objects, to_yaml
from gpuparley.deploy.schema import SchemaConversionError, check_structural, structural
from gpuparley.envs.market import messages


def test_committed_crds_match_generator() -> None:
    """`python -m gpuparley.deploy.crds` must be rerun whenever messages.py changes."""
    expected = crds.rendered_files()
    on_disk = {p.name: p.read_text() for p in crds.MANIFEST_DIR.iterdir() if p.suffix == ".yaml"}
    assert set(on_disk) == set(expected)
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale: run python -m gpuparley.deploy.crds"


def test_render_cli_prints_every_kind() -> None:
    result = CliRunner().invoke(app, ["render", "--agent", "alpha", "--peer", "beta"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.output) if d]
    kinds = Counter(d["kind"] for d in docs)
    assert kinds == {
        "CustomResourceDefinition": 3,
        "ClusterRole": 7,
        "ClusterRoleBinding": 3,
        "ValidatingAdmissionPolicy": 5,
        "ValidatingAdmissionPolicyBinding": 4 + len(objects.LEASE_SHARDS),
        "Namespace": 3,
        "ServiceAccount": 2,
        "RoleBinding": 5,
        "ResourceQuota": 2,
        "ConfigMap": 1,
        "Negotiator": 1,
        "Deployment": 1,
    }
    assert docs[0]["kind"] == "CustomResourceDefinition"  # CRDs apply first
    names = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs}
    assert len(names) == len(docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("gpuparley-negotiator:")
    senders = {
        d["metadata"]["namespace"]: d
        for d in docs
        if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == rbac.SENDER_ROLE
    }
    assert {"kind": "ServiceAccount", "name": "negotiator", "namespace": "agent-beta"} in senders[
        "agent-alpha-inbox"
    ]["subjects"]
    assert set(senders) == {"agent-alpha-inbox"}  # bids wait in the sender's own namespace
    spec = next(d for d in docs if d["kind"] == "Negotiator")["spec"]
    assert (spec["mechanism"], spec["policy"]) == ("auction", "learned:default")  # what runs
    assert "&id" not in result.output and "*id" not in result.output  # plain YAML


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--policy", "torch:x.pt"], "--policy"),
        (["--mechanism", "poker"], "--mechanism"),
        (["--budget", "-1"], "--budget"),
        (["--namespace", "Team_A"], "--namespace"),
        (["--peer", "Bad_Peer"], "--peer"),  # rendered into RBAC before: the apiserver refused it
    ],
)
def test_render_errors_are_one_line_naming_the_option(args: list[str], option: str) -> None:
    result = CliRunner().invoke(app, ["render", "--agent", "alpha", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}:"), result.output
    assert "Traceback" not in result.output


def test_render_refuses_the_market_as_an_agent_in_one_line() -> None:
    result = CliRunner().invoke(app, ["render", "--agent", "market"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --agent: the name 'market' is reserved for the market; choose another name"
    ]


def test_yaml_has_no_anchors_even_for_shared_subobjects() -> None:
    shared = {"a": 1}
    text = to_yaml([{"x": shared, "y": shared}])
    assert "&" not in text and "*" not in text
    assert yaml.safe_load(text) == {"x": {"a": 1}, "y": {"a": 1}}


def test_namespace_override_moves_home_and_inbox() -> None:
    docs = render_objects(AgentBundle(agent="alpha", namespace="team-a"))
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert namespaces == {"team-a", "team-a-inbox", objects.MARKET_NAMESPACE}
    sa = {"kind": "ServiceAccount", "name": "negotiator", "namespace": "team-a"}
    own = [d for d in docs if d["kind"].endswith("Binding") and sa in d.get("subjects", [])]
    assert {(d["metadata"].get("namespace"), d["roleRef"]["name"]) for d in own} == {
        ("team-a", rbac.NEGOTIATOR_ROLE),
        ("team-a-inbox", rbac.INBOX_OWNER_ROLE),
        (None, rbac.NODE_READER_ROLE),
    }
    quotas = {d["metadata"]["namespace"] for d in docs if d["kind"] == "ResourceQuota"}
    assert quotas == {"team-a", "team-a-inbox"}
    assert yaml.safe_load_all(to_yaml(docs))


def test_no_role_lets_agents_write_leases() -> None:
    for role in rbac.cluster_roles():
        if role["metadata"]["name"] == rbac.MARKET_ROLE:
            continue
        for rule in role["rules"]:
            if any(r.startswith("gpuleases") for r in rule["resources"]):
                assert set(rule["verbs"]) <= set(rbac.READ), role


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for sub in node.get("properties", {}).values():
        out += _walk(sub)
    if "items" in node:
        out += _walk(node["items"])
    return out


def test_crd_schemas_are_structural() -> None:
    for crd in crds.crd_documents():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        check_structural(schema)
        for node in _walk(schema):
            assert "title" not in node


def test_conversion_rules() -> None:
    lease = structural(messages.Lease.model_json_schema())
    item = lease["properties"]["resources"]["items"]
    assert item["properties"]["mig_start"] == {
        "type": "integer",
        "minimum": 0,
        "maximum": 7,
        "nullable": True,
    }
    assert lease["properties"]["kind"]["enum"] == ["Lease"]
    with pytest.raises(SchemaConversionError):
        structural({"anyOf": [{"type": "string"}, {"type": "integer"}]})


def test_offer_object_addresses_receiver_inbox() -> None:
    accept = messages.Accept(
        id="m/1 with spaces", sender="alpha", receiver="beta", epoch=1, in_reply_to="x"
    )
    obj = objects.offer_object(accept)
    assert obj["metadata"]["namespace"] == "agent-beta-inbox"
    assert obj["metadata"]["labels"][objects.RECEIVER_LABEL] == "beta"
    assert objects.message_from_object(obj) == accept


def test_a_bid_waits_in_its_senders_home_namespace() -> None:
    demand = messages.Demand(
        job="j", pods=1, gpu_kind="whole", gpu_count=1, cpu_milli=1, memory_mib=1
    )
    bid = messages.Bid(
        id="alpha.0.0", sender="alpha", receiver=messages.MARKET, epoch=0, demand=demand,
        price=1.0, term_epochs=1,
    )  # fmt: skip
    obj = objects.offer_object(bid)
    assert obj["metadata"]["namespace"] == "agent-alpha"
    assert obj["metadata"]["labels"][objects.RECEIVER_LABEL] == messages.MARKET
    with pytest.raises(ValueError, match="no inbox"):
        objects.inbox_namespace(messages.MARKET)


# ------------------------------------------------------------------ bundles side by side


def _key(doc: dict[str, Any]) -> tuple[str, str | None, str]:
    return doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]


BUNDLES = (
    AgentBundle(agent="alpha", peers=("beta",)),
    AgentBundle(agent="beta", policy="learned:/models/b.onnx", mechanism="auction"),
    AgentBundle(agent="gamma", namespace="team-g", budget_per_epoch=5.0),
)


def test_shared_objects_are_identical_in_every_bundle() -> None:
    """Applying several bundles is safe: an object two bundles both carry is the same object
    (a shared one, rendered first); every other object is the agent's own."""
    shared = shared_objects()
    seen: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    for bundle in BUNDLES:
        docs = render_objects(bundle)
        assert docs[: len(shared)] == shared
        for doc in docs[len(shared) :]:
            assert _key(doc) not in seen, f"{_key(doc)} in two bundles"
        for doc in docs:
            assert seen.setdefault(_key(doc), doc) == doc, _key(doc)


def test_apply_order() -> None:
    """Cluster-scoped shared objects, then the market's, then the agent's; a namespace before
    anything in it, a policy before its binding, a role before anything bound to it."""
    docs = render_objects(BUNDLES[0])
    shared = shared_objects()
    scoped = ["namespace" in d["metadata"] or d["kind"] == "Namespace" for d in shared]
    first_market = scoped.index(True)
    assert not any(scoped[:first_market]) and all(scoped[first_market:])
    market = {None, objects.MARKET_NAMESPACE}
    assert all(d["metadata"].get("namespace") in market for d in shared[first_market:])
    created: set[tuple[str, str | None, str]] = set()
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        if ns:
            assert ("Namespace", None, ns) in created, _key(doc)
        if doc["kind"].endswith("Binding") and "roleRef" in doc:
            assert ("ClusterRole", None, doc["roleRef"]["name"]) in created, _key(doc)
        if doc["kind"] == "ValidatingAdmissionPolicyBinding":
            assert ("ValidatingAdmissionPolicy", None, doc["spec"]["policyName"]) in created
        created.add(_key(doc))


def test_agent_named_market_is_refused() -> None:
    with pytest.raises(ValueError, match="reserved"):
        render_objects(AgentBundle(agent="market"))


def test_admission_policies_deny_and_cover_offers_and_view() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in render_objects(BUNDLES[0])}
    policies = {
        admission.OFFER_SENDER_POLICY: ("gpuparley.io", "offers", {"CREATE", "UPDATE"}),
        admission.MARKET_VIEW_POLICY: ("", "configmaps", {"CREATE", "UPDATE", "DELETE"}),
        admission.LEASE_SCHEDULER_POLICY: ("", "pods", {"CREATE", "UPDATE"}),
        admission.LEASE_FIT_POLICY: ("", "pods", {"CREATE", "UPDATE"}),
    }
    bindings = [d for d in docs.values() if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    for name, (group, resource, operations) in policies.items():
        policy = docs["ValidatingAdmissionPolicy", name]
        assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert policy["spec"]["failurePolicy"] == "Fail"
        its = [b for b in bindings if b["spec"]["policyName"] == name]
        assert its and all(b["apiVersion"] == policy["apiVersion"] for b in its)
        assert all(b["spec"]["validationActions"] == ["Deny"] for b in its)
        (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
        assert (rule["apiGroups"], rule["resources"]) == ([group], [resource])
        assert set(rule["operations"]) == operations
        assert "resourceNames" not in rule  # deletecollection admits items with an empty name
        for check in policy["spec"]["validations"]:
            assert check["reason"] in ("Forbidden", "Invalid")
            assert check["message"]  # the fallback if the messageExpression cannot be evaluated
            assert "+" in check["messageExpression"]  # names the object or the requester
    # The fit policy: one binding per lease shard, each for the pods of its shard and with the
    # unreleased leases of that shard as parameters; together they cover every shard once.
    fit = [b["spec"] for b in bindings if b["spec"]["policyName"] == admission.LEASE_FIT_POLICY]
    shards = []
    for spec in fit:
        (shard,) = spec["matchResources"]["objectSelector"]["matchLabels"].values()
        assert spec["paramRef"]["selector"]["matchLabels"] == {objects.LEASE_SHARD_LABEL: shard}
        assert spec["paramRef"]["selector"]["matchExpressions"] == [
            {"key": objects.RELEASED_LABEL, "operator": "DoesNotExist"}
        ]
        assert spec["matchResources"]["namespaceSelector"] == {
            "matchLabels": {rbac.ROLE_LABEL: "agent"}
        }
        shards.append(shard)
    assert sorted(shards) == sorted(objects.LEASE_SHARDS)
    pods = docs["ValidatingAdmissionPolicy", admission.LEASE_SCHEDULER_POLICY]["spec"]
    assert pods["matchConstraints"]["namespaceSelector"] == {
        "matchLabels": {rbac.ROLE_LABEL: "agent"}
    }
    homes = [d for d in docs.values() if d["kind"] == "Namespace"]
    assert {
        d["metadata"]["name"] for d in homes if d["metadata"]["labels"][rbac.ROLE_LABEL] == "agent"
    } == {"agent-alpha"}
    sender = docs["ValidatingAdmissionPolicy", admission.OFFER_SENDER_POLICY]["spec"]
    text = "\n".join(c["expression"] for c in sender["variables"] + sender["validations"])
    for needle in (
        "'agent-' + variables.sender",
        "'system:serviceaccount:agent-' + variables.sender + ':negotiator'",
        rbac.MARKET_USER,
        "system:serviceaccount:gpuparley-system:market",
        "'system:masters' in request.userInfo.groups",
        f"object.metadata.labels['{objects.SENDER_LABEL}']",
        "has(object.metadata.labels)",
    ):
        assert needle in text, needle


def test_a_policy_outside_the_image_needs_a_mount() -> None:
    """`learned:/models/a.onnx` would point at a file the image does not hold: refused in one
    line naming the fix; with --policy-configmap the Deployment mounts it and runs it."""
    refused = CliRunner().invoke(app, ["render", "--agent", "a", "--policy", "learned:/m/a.onnx"])
    assert refused.exit_code == 2
    assert refused.output.strip().startswith("error: --policy: the image holds no /m/a.onnx")
    ok = CliRunner().invoke(app, ["render", "--agent", "a", "--policy-configmap", "pol:v3.onnx"])
    assert ok.exit_code == 0, ok.output
    docs = [d for d in yaml.safe_load_all(ok.output) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "policy"]
    assert volume["configMap"] == {"name": "pol", "items": [{"key": "v3.onnx", "path": "v3.onnx"}]}
    args = pod["containers"][0]["args"]
    assert args[args.index("--policy") + 1] == "learned:/etc/gpuparley/policy/v3.onnx"
    spec = next(d for d in docs if d["kind"] == "Negotiator")["spec"]
    assert spec["policy"] == "learned:/etc/gpuparley/policy/v3.onnx"


def test_apply_to_an_unreachable_cluster_is_one_line_exit_2(tmp_path: Any) -> None:
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    result = CliRunner().invoke(app, ["apply", "--kubeconfig", str(kubeconfig), "--agent", "a"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --kubeconfig: cannot reach the cluster")
