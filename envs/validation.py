"""One way to validate a configuration document and explain what is wrong with it, and the
base every configuration model shares (`StrictConfig`).

Scenarios and training configs are pydantic models loaded from YAML. A bad file must fail with a
message that names the file, the field path (`cluster.nodes[1].mig_layout`) and what is allowed
there (for an unknown key: the valid keys and the closest one), never with a traceback from deep
inside. Both loaders call `validate_document`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

Model = TypeVar("Model", bound=BaseModel)


class StrictConfig(BaseModel):
    """The base of every configuration file's models: an unknown key is an error (a typo is not
    silently dropped), a loaded configuration is frozen, and `inf` and `nan` are refused (YAML's
    `.inf` passes every lower bound, and no field of a scenario, generator or training config
    means infinity: an unbounded one is left out)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def validate_document(model: type[Model], raw: Any, what: str, error: type[Exception]) -> Model:
    """Validate parsed YAML against `model`; raise `error` naming `what` and each bad field."""
    if not isinstance(raw, Mapping):
        raise error(f"{what}: the file must hold a YAML mapping of sections")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(model, e) for e in exc.errors(include_url=False)]
        raise error(f"{what} is invalid:\n" + "\n".join(lines)) from None


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("cluster", "nodes", 1, "mig_layout")` -> `cluster.nodes[1].mig_layout`."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(model: type[BaseModel], error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(model, loc)
        hint = difflib.get_close_matches(key, allowed, n=1)
        message = f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if allowed:
            message += f"; allowed keys: {', '.join(allowed)}"
    elif error["type"] == "missing":
        message = "required field is missing"
    # Cross-field checks on the whole document carry their own field path in the message.
    return f"  {field_path(loc)}: {message}" if loc else f"  {message}"


def _allowed_keys(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The keys the mapping at `loc[:-1]` accepts, for an unknown-key message."""
    annotation: Any = model
    for part in loc[:-1]:
        annotation = _step(annotation, part)
    annotation = _unwrap(annotation)
    return list(annotation.model_fields) if _is_model(annotation) else []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Union (preferring a model or container) and Annotated wrappers."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = next(
                (a for a in options if typing.get_origin(a) or _is_model(a)), options[0]
            )
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _step(annotation: Any, part: int | str) -> Any:
    """The annotation one location step below `annotation` (for naming allowed keys)."""
    annotation = _unwrap(annotation)
    if _is_model(annotation):
        field = annotation.model_fields.get(part) if isinstance(part, str) else None
        return field.annotation if field else None
    origin = typing.get_origin(annotation)
    if origin is list:
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    return None


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
