"""The gpuparley CustomResourceDefinitions, generated from the message models.

Three CRDs in `gpuparley.io/v1alpha1`, all namespaced:

* `Offer` (plural `offers`): any *negotiation* message (Bid, Offer, CounterOffer, Accept,
  Reject) verbatim in `spec`, discriminated by `spec.kind` -- bargaining's messages; under the
  auction a negotiator's bids travel in its `Negotiator` status instead (the market judges a
  Bid posted as an Offer like any other, and deletes it). One CRD rather than five so an inbox
  is read with one list or watch (the market controller watches every message addressed to it or
  brokered by it and takes them in agent order, then by object name), RBAC has one resource to
  grant, and
  `kubectl get offers` shows a whole negotiation. The price is a
  union schema: the generator proves that a field shared by kinds has the same schema in each, and
  per-kind "required / not allowed" rules become CEL `x-kubernetes-validations` (the apiserver
  enforces them; pydantic's `extra="forbid"` for kinds that lack a field included).
* `GPULease`: the market's `Lease` message in `spec`; a lease ends in two phases, both holding
  the `Release` message that ends it: `status.ending` (its pods may no longer run: the holder
  stops syncing them and the market deletes them), then, once they are gone, `status.release`
  (status subresource, so only the market's status writes can end a lease).
* `Negotiator`: a negotiator's configuration (`negotiator_config.NegotiatorSpec`); its status
  is the negotiator's answer to the market's last question (under the auction with the bid),
  and its answers given ahead (`answers_ahead.py`).

`python -m gpuparley.deploy.crds` rewrites `deploy/manifests/crds/`; a unit test regenerates and
compares, so the committed YAML cannot drift from `envs/market/messages.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from gpuparley.deploy.negotiator_config import NegotiatorSpec
from gpuparley.deploy.negotiator_messages import ACTIONS
from gpuparley.deploy.schema import SchemaConversionError, strip_defaults, structural
from gpuparley.deploy.schema_bounds import bounded, check_bounded
from gpuparley.envs.market import messages

GROUP = "gpuparley.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "gpuparley"
NEGOTIATION_TYPES: tuple[type[messages._Message], ...] = (
    messages.Bid,
    messages.Offer,
    messages.CounterOffer,
    messages.Accept,
    messages.Reject,
)
MANIFEST_DIR = Path(__file__).parent / "manifests" / "crds"
_IGNORED_WHEN_MERGING = ("description", "default")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    # json_schemas() is the messages' published schema; the Negotiator config is not a message.
    published = messages.json_schemas()
    source = published.get(model.__name__) if model in messages.MESSAGE_TYPES else None
    return structural(source or model.model_json_schema())


def _comparable(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k not in _IGNORED_WHEN_MERGING}


def message_union_schema() -> dict[str, Any]:
    """One structural schema accepting exactly the negotiation messages, kind by kind."""
    per_kind = {model.__name__: _schema(model) for model in NEGOTIATION_TYPES}
    properties: dict[str, Any] = {}
    for kind, schema in per_kind.items():
        for name, sub in schema["properties"].items():
            if name == "kind":
                continue
            if name in properties and _comparable(properties[name]) != _comparable(sub):
                raise SchemaConversionError(
                    f"field {name!r} has different schemas across message kinds ({kind}); "
                    "one Offer CRD cannot carry them"
                )
            properties.setdefault(name, sub)
    properties["kind"] = {"type": "string", "enum": list(per_kind)}
    required_sets = [set(s.get("required", ())) for s in per_kind.values()]
    common = set.intersection(*required_sets) | {"kind"}
    rules = []
    for kind, schema in per_kind.items():
        own = set(schema["properties"]) - {"kind"}
        needs = sorted(set(schema.get("required", ())) - common)
        forbidden = sorted(set(properties) - own - {"kind"})
        terms = [f"has(self.{f})" for f in needs] + [f"!has(self.{f})" for f in forbidden]
        if not terms:
            continue
        message = f"{kind}: " + "; ".join(
            part
            for part in (
                f"requires {', '.join(needs)}" if needs else "",
                f"does not allow {', '.join(forbidden)}" if forbidden else "",
            )
            if part
        )
        rules.append(
            {"rule": f"self.kind != '{kind}' || ({' && '.join(terms)})", "message": message}
        )
    union = {
        "type": "object",
        "description": "A negotiation message (envs/market/messages.py), verbatim; "
        "`kind` says which.",
        "properties": dict(sorted(properties.items())),
        "required": sorted(common),
        "x-kubernetes-validations": rules,
    }
    return strip_defaults(union)


def _crd(
    kind: str,
    plural: str,
    spec: dict[str, Any],
    *,
    status: dict[str, Any] | None = None,
    short_names: list[str] | None = None,
    columns: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # Every field an agent or the market writes gets a size limit (`schema_bounds.py`).
    data = {"spec": spec, **(extra or {}), **({"status": status} if status is not None else {})}
    data = {name: bounded(schema) for name, schema in data.items()}
    for name, schema in data.items():
        check_bounded(schema, f"{kind}.{name}")
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        **data,
    }
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if status is not None:
        version["subresources"] = {"status": {}}
    version["schema"] = {
        "openAPIV3Schema": {"type": "object", "properties": properties, "required": ["spec"]}
    }
    if columns:
        version["additionalPrinterColumns"] = columns
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "categories": [CATEGORY],
    }
    if short_names:
        names["shortNames"] = short_names
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {"group": GROUP, "scope": "Namespaced", "names": names, "versions": [version]},
    }


def _column(name: str, path: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "jsonPath": path}


def offer_crd() -> dict[str, Any]:
    return _crd(
        "Offer",
        "offers",
        message_union_schema(),
        short_names=["gpoffer"],
        columns=[
            _column("Message", ".spec.kind"),
            _column("Sender", ".spec.sender"),
            _column("Receiver", ".spec.receiver"),
            _column("Price", ".spec.price", "number"),
            _column("Epoch", ".spec.epoch", "integer"),
        ],
    )


# What each pod of a lease may use (`lease_grant.py`): written by the market beside the message.
GRANT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Per pod: the resource limits it may use (all pods alike) and, by pod slot, "
    "its node. Written by the market; admission and the market hold pods to it.",
    "properties": {
        "limits": {
            "type": "object",
            "maxProperties": 16,
            "additionalProperties": {
                "type": "string",
                "maxLength": 64,
                "x-kubernetes-validations": [
                    {"rule": "isQuantity(self)", "message": "must be a resource quantity"}
                ],
            },
        },
        "nodes": {
            "type": "array",
            "maxItems": 1024,
            "items": {"type": "string", "maxLength": 253},
        },
    },
    "required": ["limits", "nodes"],
}


def gpulease_crd() -> dict[str, Any]:
    release = _schema(messages.Release)
    status = {"type": "object", "properties": {"ending": release, "release": release}}
    return _crd(
        "GPULease",
        "gpuleases",
        _schema(messages.Lease),
        status=status,
        extra={"grant": GRANT_SCHEMA},
        short_names=["gplease"],
        columns=[
            _column("Holder", ".spec.holder"),
            _column("Lender", ".spec.lender"),
            _column("Job", ".spec.job"),
            _column("Price", ".spec.price", "number"),
            _column("Expires", ".spec.expires_epoch", "integer"),
            _column("Ending", ".status.ending.reason"),
            _column("Released", ".status.release.reason"),
        ],
    )


ANSWERS = [*ACTIONS.values(), "pass"]  # what a Negotiator's status may say it did
APPLIED_RELEASES = 256  # released leases a Negotiator's status may list as applied


def negotiator_crd() -> dict[str, Any]:
    status = {
        "type": "object",
        "properties": {
            "phase": {"type": "string"},
            "message": {"type": "string"},
            "observedEpoch": {"type": "integer", "minimum": 0},
            # The market sub-step the negotiator answered last, and how (the kind of message
            # it sent, or "pass"): the market waits for the asked agents' answers before it
            # closes a sub-step.
            "observedSubstep": {"type": "integer", "minimum": 0},
            "action": {"type": "string", "enum": ANSWERS},
            # Under the auction the bid answering that sub-step itself (no Offer object).
            "bid": _schema(messages.Bid),
            # The answers given ahead to the rest of an auction round (`answers_ahead.py`):
            # per sub-step, the digest of the view answered, the action, and a bid's id and bid.
            "ahead": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "substep": {"type": "integer", "minimum": 0},
                        "view": {"type": "string"},
                        "action": {"type": "string", "enum": ANSWERS},
                        "message": {"type": "string"},
                        "bid": _schema(messages.Bid),
                    },
                },
            },
            # The released GPULeases (object names) whose end the negotiator has applied: the
            # market deletes those it no longer keeps (`market_collection.py`).
            "appliedReleases": {
                "type": "array",
                "maxItems": APPLIED_RELEASES,
                "items": {"type": "string", "maxLength": 253},
            },
        },
    }
    return _crd(
        "Negotiator",
        "negotiators",
        _schema(NegotiatorSpec),
        status=status,
        columns=[
            _column("Mechanism", ".spec.mechanism"),
            _column("Policy", ".spec.policy"),
            _column("Budget", ".spec.budget_per_epoch", "number"),
        ],
    )


def crd_documents() -> list[dict[str, Any]]:
    """All CRDs, in a stable order."""
    return [offer_crd(), gpulease_crd(), negotiator_crd()]


class PlainDumper(yaml.SafeDumper):
    """Never writes anchors and aliases (`&id001`/`*id001`): objects sharing a sub-dict are
    written out in full, because some Kubernetes tools reject YAML aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(doc: dict[str, Any]) -> str:
    """One YAML document, deterministic (key order preserved, no line wrapping), plain."""
    return yaml.dump(
        doc, Dumper=PlainDumper, sort_keys=False, default_flow_style=False, width=10_000
    )


def rendered_files() -> dict[str, str]:
    """File name -> content of the committed CRD directory (kustomization included)."""
    files = {f"{d['metadata']['name']}.yaml": dump_yaml(d) for d in crd_documents()}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    header = "# Generated by `python -m gpuparley.deploy.crds`; do not edit.\n"
    out = {name: header + text for name, text in files.items()}
    out["kustomization.yaml"] = header + dump_yaml(kustomization)
    return out


def write(directory: Path = MANIFEST_DIR) -> list[Path]:
    """Regenerate the committed CRD YAML."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered_files().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else MANIFEST_DIR):
        print(written_path)
