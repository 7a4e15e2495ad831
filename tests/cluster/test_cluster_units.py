"""Fast checks of the pieces that need no running cluster: node translation and build errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuparley.deploy.cluster import build
from gpuparley.deploy.cluster.nodes import (
    FakeNode,
    default_fake_nodes,
    fake_nodes_from_scenario,
    mig_uniform,
    node_manifest,
)


def test_exclusive_node_advertises_whole_gpus() -> None:
    node = node_manifest(FakeNode("n", 8000, 64_000, "A100-80GB", 8))
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "8"
    assert node["status"]["allocatable"]["cpu"] == "8000m"
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"


def test_timeslice_node_advertises_replicas() -> None:
    node = node_manifest(FakeNode("n", 8000, 64_000, "T4", 4, "timeslice", replicas=4))
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "16"
    assert node["metadata"]["labels"]["nvidia.com/gpu.replicas"] == "4"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"].endswith("-SHARED")


def test_mig_node_advertises_one_resource_per_profile() -> None:
    layout = ((("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb", 6)),) * 2
    node = node_manifest(FakeNode("n", 8000, 64_000, "A100-80GB", 2, "mig", mig_layout=layout))
    cap = node["status"]["capacity"]
    assert cap["nvidia.com/mig-3g.40gb"] == "2"
    assert cap["nvidia.com/mig-1g.10gb"] == "2"
    assert "nvidia.com/gpu" not in cap
    assert node["metadata"]["labels"]["nvidia.com/mig.config"] == "custom"
    assert (
        node_manifest(
            FakeNode("m", 1, 1, "A100-80GB", 1, "mig", mig_layout=mig_uniform("1g.10gb", 7, 1))
        )["metadata"]["labels"]["nvidia.com/mig.config"]
        == "all-1g.10gb"
    )


def test_mig_layout_must_cover_every_gpu() -> None:
    with pytest.raises(ValueError, match="mig_layout"):
        FakeNode("n", 1, 1, "A100-80GB", 2, "mig", mig_layout=mig_uniform("1g.10gb", 7, 1))


def test_default_and_scenario_topologies() -> None:
    assert {s.sharing for s in default_fake_nodes()} == {"exclusive", "mig", "timeslice"}
    specs = fake_nodes_from_scenario("mig-mixed")
    assert any(s.sharing == "mig" for s in specs)
    for spec in specs:
        node_manifest(spec)  # every scenario node translates
    with pytest.raises(ValueError, match="unknown scenario"):
        fake_nodes_from_scenario("no-such-scenario")


def test_missing_binary_names_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(build.MissingBinaryError, match="gpuparley cluster build"):
        build.binary_path("kube-apiserver", tmp_path)
    assert build.missing_binaries(cache=tmp_path) == list(build.DEFAULT_COMPONENTS)


def test_pinned_versions_come_from_the_wrapper_modules() -> None:
    versions = {n: build.module_version(c) for n, c in build.COMPONENTS.items()}
    assert versions["kube-apiserver"] == versions["kube-scheduler"] == "v1.36.3"
    assert versions["etcd"] == "v3.6.16"
    assert versions["kwok"] == "v0.8.0"
