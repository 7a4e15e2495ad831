"""Configuration documents as YAML text people can read: what `scenario show` prints and
`scenario sample` writes.

Block style, keys in the order given, except that lists of scalars (MIG instances, model lists,
ranges) stay on one line. The same data always gives the same text.
"""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Block style, except lists of scalars stay on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(data: Any) -> str:
    """`data` (plain dicts, lists and scalars) as YAML text."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100)
