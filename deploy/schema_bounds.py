"""Size limits for every field of the custom resources, added where the message models leave one
open.

Why: a field without a bound is storage an agent can fill. The message models bound what the
market needs bounded (prices, ids, names), but left `renewal_of`, `allowed_models` and most
counters open; an attacker then posted 40 Offers of 1.4 MB that grew the shared etcd (on tmpfs,
i.e. RAM) from 1.2 to 126 MiB and slowed every market sub-step for good. The apiserver enforces
`maxLength`, `maxItems` and `maximum` before anything is stored (422), so the CRD generator
adds one to every string, list and number that has none -- here, on the deployment side, so the
simulator's models stay as they are (pydantic still checks the message itself; a bound here is
never looser than the model's own).

Bounds are chosen per field (`FIELD_BOUNDS`: generous for any real job, tiny next to the 1.5 MB
an object may otherwise take), then by type (`DEFAULTS`); `check_bounded` fails the generator,
and so the unit tests, if any field is still open.
"""

from __future__ import annotations

import copy
from typing import Any

from gpuparley.deploy.schema import SchemaConversionError

DEFAULTS: dict[str, dict[str, Any]] = {
    "string": {"maxLength": 256},
    "array": {"maxItems": 64},
    "integer": {"maximum": 2**31 - 1},
    "number": {"maximum": 1e12},
}
_EPOCH = {"maximum": 1_000_000_000}
# By property name; "name[]" is the schema of the items of list `name`.
FIELD_BOUNDS: dict[str, dict[str, Any]] = {
    "renewal_of": {"maxLength": 128},  # a lease id (ids are at most 128 characters)
    "allowed_models": {"maxItems": 32},  # the GPU catalogue has 11 models
    "allowed_models[]": {"maxLength": 64},
    "mig_profile": {"maxLength": 16},
    "gpus": {"maxItems": 16},  # a pod asks for at most 16 whole GPUs
    "gpus[]": {"maximum": 1023},
    "resources": {"maxItems": 1024},  # one item per pod; a job has at most 1024 pods
    "pod": {"maximum": 1023},
    "cpu_milli": {"maximum": 100_000_000},  # 100,000 cores
    "memory_mib": {"maximum": 1 << 30},  # 1 EiB
    "quota_milli": {"maximum": 100_000_000},
    "reclaim_notice_epochs": {"maximum": 10_000},
    "epoch": _EPOCH,
    "start_epoch": _EPOCH,
    "expires_epoch": _EPOCH,
    "observedEpoch": _EPOCH,
    "ahead": {"maxItems": 64},  # answers given ahead: at most a round's sub-steps
    "view": {"maxLength": 64},  # a digest
    "peers": {"maxItems": 64},
    "peers[]": {"maxLength": 63},
    "phase": {"maxLength": 64},
    "message": {"maxLength": 1024},
}
_KEYS = {"string": "maxLength", "array": "maxItems", "integer": "maximum", "number": "maximum"}


def _bound_node(node: dict[str, Any], name: str) -> dict[str, Any]:
    out = dict(node)
    kind = out.get("type")
    key = _KEYS.get(str(kind))
    if key is not None and key not in out and "enum" not in out:
        out.update(FIELD_BOUNDS.get(name) or DEFAULTS[str(kind)])
        if key not in out:
            raise SchemaConversionError(f"bound for {name!r} does not set {key}")
    if "properties" in out:
        out["properties"] = {k: _bound_node(v, k) for k, v in out["properties"].items()}
    if "items" in out:
        out["items"] = _bound_node(out["items"], f"{name}[]")
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _bound_node(out["additionalProperties"], f"{name}{{}}")
    return out


def bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a structural schema with a size limit on every string, list and number."""
    return _bound_node(copy.deepcopy(schema), "")


def open_fields(node: dict[str, Any], where: str = "$") -> list[str]:
    """Paths of strings, lists and numbers without a bound (an enum bounds a string)."""
    found = []
    key = _KEYS.get(str(node.get("type")))
    if key is not None and key not in node and "enum" not in node:
        found.append(where)
    for name, sub in (node.get("properties") or {}).items():
        found += open_fields(sub, f"{where}.{name}")
    if "items" in node:
        found += open_fields(node["items"], f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += open_fields(node["additionalProperties"], f"{where}{{}}")
    return found


def check_bounded(schema: dict[str, Any], what: str) -> None:
    """Refuse a schema that still has an open field (a generator bug, caught by the tests)."""
    missing = open_fields(schema)
    if missing:
        raise SchemaConversionError(f"{what}: fields without a size limit: {missing[:10]}")
