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


def test_plane_pki_chains_to_its_own_ca_with_the_right_usages(tmp_path: Path) -> None:
    """Certificates made in-process (cryptography): the serving one names 127.0.0.1, clients
    carry their user (CN) and groups (O), everything is signed by the plane's CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from gpuparley.deploy.cluster import pki

    made = pki.make_plane_pki(tmp_path / "pki", "host", {"agent-a": ("t0k3n", ["g1", "g2"])})
    ca = x509.load_pem_x509_certificate(made.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    serving = x509.load_pem_x509_certificate(made.serving_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    admin = x509.load_pem_x509_certificate(made.admin.cert.read_bytes())
    admin.verify_directly_issued_by(ca)
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:masters"
    )
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    manager = x509.load_pem_x509_certificate(made.controller_manager.cert.read_bytes())
    assert manager.subject.rfc4514_string() == "CN=system:kube-controller-manager"
    public = made.sa_pub.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert isinstance(
        load_pem_private_key(made.sa_key.read_bytes(), None), ec.EllipticCurvePrivateKey
    )
    assert made.sa_key.stat().st_mode & 0o777 == 0o600
    tokens = made.token_file.read_text().splitlines()
    assert tokens[1] == 't0k3n,agent-a,agent-a,"g1,g2"'


def test_process_figures_come_from_psutil() -> None:
    import os

    from gpuparley.deploy.cluster import processes

    me = processes.Proc("me", os.getpid(), processes.proc_start_time(os.getpid()) or 0, "", [])
    assert processes.is_alive(me)
    assert not processes.is_alive(processes.Proc("me", os.getpid(), 1.0, "", []))
    assert processes.rss_bytes(os.getpid()) > 10 * 2**20
    assert 0 < processes.pss_bytes(os.getpid()) <= processes.rss_bytes(os.getpid())
    assert processes.cpu_seconds(os.getpid()) > 0
    assert processes.rss_bytes(2**22 + 12345) == 0  # no such process


def test_agent_planes_are_slim_by_default_and_full_on_request(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gpuparley.deploy.cluster import profiles
    from gpuparley.deploy.cluster.cli import app

    slim = profiles.apiserver_flags("slim")
    assert "--runtime-config=api/all=false,v1=true," in ",".join(slim) + ","
    assert "apps/v1=true" not in ",".join(slim)
    assert "--watch-cache=false" in slim and "--enable-priority-and-fairness=false" in slim
    disabled = next(f for f in slim if f.startswith("--disable-admission-plugins="))
    assert "ValidatingAdmissionPolicy" in disabled and "NamespaceLifecycle" not in disabled
    assert profiles.apiserver_env("slim") == {
        "GOGC": "30",
        "GOMEMLIMIT": "160MiB",
        "GOMAXPROCS": "1",
    }
    full = profiles.apiserver_flags("full")
    assert full == ["--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"]
    assert profiles.apiserver_env("full") == {}
    with pytest.raises(ValueError, match="unknown control-plane profile"):
        profiles.apiserver_flags("tiny")  # type: ignore[arg-type]
    result = CliRunner().invoke(app, ["up", "--profile", "tiny", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--profile" in result.output
