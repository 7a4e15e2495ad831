"""The generated parts of the Helm charts are up to date (no helm needed: a text comparison).

`python -m gpuparley.deploy.charts charts` must be rerun whenever the RBAC, the admission
policies or the CRDs change; the chart tests that run helm are in `tests/cluster/test_charts.py`.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gpuparley.deploy.charts import generated_files
from gpuparley.deploy.render import shared_objects

CHARTS = Path(__file__).resolve().parents[1] / "charts"


def test_generated_chart_files_are_up_to_date() -> None:
    for name, text in generated_files().items():
        path = CHARTS / name
        assert path.is_file(), f"{name} missing: run python -m gpuparley.deploy.charts charts"
        assert path.read_text() == text, (
            f"{name} is stale: run python -m gpuparley.deploy.charts charts"
        )


def test_the_host_chart_carries_every_shared_object_once() -> None:
    manifests = {name: text for name, text in generated_files().items() if name.endswith(".yaml")}
    docs = []
    for text in manifests.values():
        docs += [d for d in yaml.safe_load_all(text) if d]
    key = lambda d: (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, docs)) == sorted(map(key, shared_objects()))
    for text in generated_files().values():
        assert not re.search(r"[&*]id\d+", text) and "{{" not in text  # plain, no Helm actions
