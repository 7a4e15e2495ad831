"""Pydantic JSON schema -> Kubernetes *structural* OpenAPI v3 schema.

The apiserver only accepts structural schemas for CRDs: every node has a `type`, no `$ref` /
`$defs`, no `const`, no `anyOf` carrying types, and `additionalProperties` may not sit next to
`properties`. Pydantic emits all of those, so this module rewrites them (and refuses what it cannot
express faithfully, rather than silently weakening validation):

* `$ref` -> the referenced `$defs` entry, inlined (recursive models are refused);
* `anyOf: [X, {type: null}]` -> X with `nullable: true` (an `Optional` field);
* `const: v` -> `enum: [v]` (pydantic `Literal` with one value);
* `additionalProperties: false` (pydantic `extra="forbid"`) -> dropped: a structural schema
  *prunes* unknown fields on storage, and clients that ask for `fieldValidation=Strict` get them
  rejected (400); it cannot be a 422, which is a limit of CRDs, not of this conversion;
* `title` -> dropped (noise), `default: null` -> dropped (absent and null mean the same here).
"""

from __future__ import annotations

import copy
from typing import Any

_DROP = frozenset({"title", "additionalProperties", "$defs"})
_KEEP = frozenset(
    {
        "type",
        "description",
        "properties",
        "required",
        "items",
        "enum",
        "default",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "format",
        "nullable",
    }
)


class SchemaConversionError(ValueError):
    """A pydantic schema feature with no faithful structural-schema equivalent."""


def _resolve(ref: str, defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaConversionError(f"unresolvable $ref {ref!r}")
    name = ref[len(prefix) :]
    if name in seen:
        raise SchemaConversionError(f"recursive model {name!r} cannot be inlined")
    return _convert(defs[name], defs, (*seen, name))


def _convert(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        inlined = _resolve(node["$ref"], defs, seen)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**inlined, **_convert_keywords(extra, defs, seen)} if extra else inlined
    if "anyOf" in node:
        branches = node["anyOf"]
        typed = [b for b in branches if b.get("type") != "null"]
        if len(typed) != 1 or len(branches) != 2:
            raise SchemaConversionError(f"anyOf other than Optional[X] is not structural: {node}")
        inner = _convert(typed[0], defs, seen)
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return {**inner, **_convert_keywords(rest, defs, seen), "nullable": True}
    return _convert_keywords(node, defs, seen)


def _convert_keywords(
    node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "default" and value is None:
            continue
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, seen) for name, sub in value.items()}
        elif key == "items":
            if not isinstance(value, dict):
                raise SchemaConversionError("tuple-typed (prefixItems) arrays are not structural")
            out[key] = _convert(value, defs, seen)
        elif key == "default" and isinstance(value, list | tuple):
            out[key] = list(value)
        elif key in _KEEP:
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaConversionError(f"JSON-schema keyword {key!r} has no structural form")
    if "enum" in out and "type" not in out:
        out["type"] = _json_type(out["enum"][0])
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise SchemaConversionError(f"cannot type enum value {value!r}")


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic `model_json_schema()` to a structural OpenAPI v3 schema."""
    out = _convert(schema, schema.get("$defs", {}), ())
    check_structural(out)
    return out


def check_structural(node: dict[str, Any], where: str = "$") -> None:
    """Fail loudly on anything the apiserver would reject as non-structural (cheap pre-check, so a
    generator bug shows up in the unit tests rather than as a 422 on the CRD itself)."""
    if "type" not in node:
        raise SchemaConversionError(f"{where}: no type")
    for key in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "const"):
        if key in node:
            raise SchemaConversionError(f"{where}: {key} left in a structural schema")
    extra = node.get("additionalProperties")
    if extra is not None:
        # A map (schema for every value) is structural; beside `properties`, or as a boolean
        # (pydantic's extra="forbid"), it is not.
        if not isinstance(extra, dict) or "properties" in node:
            raise SchemaConversionError(
                f"{where}: additionalProperties left in a structural schema"
            )
        check_structural(extra, f"{where}{{}}")
    for name, sub in node.get("properties", {}).items():
        check_structural(sub, f"{where}.{name}")
    if "items" in node:
        check_structural(node["items"], f"{where}[]")


def strip_defaults(node: dict[str, Any]) -> dict[str, Any]:
    """The same schema without any top-level property defaults (used for the message union, where
    a default of one kind's field would inject that field into every other kind)."""
    out = dict(node)
    out["properties"] = {
        name: {k: v for k, v in sub.items() if k != "default"}
        for name, sub in node["properties"].items()
    }
    return out
