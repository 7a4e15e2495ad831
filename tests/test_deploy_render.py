"""Fast checks of the deploy manifests (no cluster): render output, committed CRDs up to date,
schema conversion rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from gpuparley.deploy import crds, objects, rbac
from gpuparley.deploy.cli import app
from gpuparley.deploy.render import AgentBundle, render_objects, to_yaml
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
        "ClusterRole": 4,
        "ClusterRoleBinding": 1,
        "Namespace": 2,
        "ServiceAccount": 1,
        "RoleBinding": 3,
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
    senders = next(
        d for d in docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"] == rbac.SENDER_ROLE
    )
    assert senders["metadata"]["namespace"] == "agent-alpha-inbox"
    assert {"kind": "ServiceAccount", "name": "negotiator", "namespace": "agent-beta"} in senders[
        "subjects"
    ]


def test_render_rejects_bad_policy() -> None:
    result = CliRunner().invoke(app, ["render", "--agent", "alpha", "--policy", "torch:x.pt"])
    assert result.exit_code == 2


def test_namespace_override_moves_home_and_inbox() -> None:
    docs = render_objects(AgentBundle(agent="alpha", namespace="team-a"))
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert namespaces == {"team-a", "team-a-inbox"}
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
