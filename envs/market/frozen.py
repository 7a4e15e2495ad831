"""Fast construction of frozen slots dataclasses, for the few the environment builds per step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


def quick_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A faster constructor for the frozen slots dataclass `cls`: same arguments, equal result.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`, about a
    microsecond per field in CPython, and the environment builds a view (22 fields) per agent
    and slots for its jobs at every sub-step: more than encoding them costs. The constructor is a
    mutable twin of `cls` (same fields, defaults and slot layout) whose `__init__` stores fields
    directly and then re-types the new instance as `cls`, which Python allows between classes of
    one layout; from then on it is an ordinary, frozen instance of `cls`.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or not all(f.init for f in fields):
        return cls  # the twin would skip part of what `cls.__init__` does

    def become(self: object) -> None:
        self.__class__ = cls

    return dataclasses.make_dataclass(
        f"{cls.__name__}Builder",
        [
            (
                f.name,
                f.type,
                dataclasses.field(default=f.default, default_factory=f.default_factory),
            )
            for f in fields
        ],
        namespace={"__post_init__": become},
        slots=True,
    )
