"""Certificates, keys and token files for a local control plane, made with ``cryptography``.

Why: every kube-apiserver needs a serving certificate, a service-account key pair and a way to
authenticate its admin. Each plane gets its *own* CA, so credentials of one agent's plane are
rejected by every other plane (a real 401 from the apiserver, which is what the isolation tests
check). The maintained ``cryptography`` package builds them in-process: no ``openssl`` command
to find, no temporary CSR/extension files, and errors are Python exceptions.

Keys are ECDSA P-256 (fast to generate; kube-apiserver accepts ES256 service-account keys).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_DAYS = 30
SERVING_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
SERVING_IPS = ("127.0.0.1", "10.0.0.1")


class PKIError(RuntimeError):
    """A certificate or key could not be written."""


def _write_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key, written as PEM (PKCS#8), readable by its owner only."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        path.write_bytes(pem)
        path.chmod(0o600)
    except OSError as exc:
        raise PKIError(f"cannot write key {path}: {exc}") from exc
    return key


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    usage: ExtendedKeyUsageOID | None = None,
    san: x509.SubjectAlternativeName | None = None,
) -> x509.Certificate:
    """One certificate valid for CERT_DAYS (from a minute ago: clocks of a fresh VM drift)."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    try:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise PKIError(f"cannot write certificate {path}: {exc}") from exc
    return path


@dataclass(frozen=True)
class _Authority:
    name: x509.Name
    key: ec.EllipticCurvePrivateKey


def _sign(
    directory: Path,
    name: str,
    subject: x509.Name,
    ca: _Authority,
    usage: ExtendedKeyUsageOID,
    san: x509.SubjectAlternativeName | None = None,
) -> tuple[Path, Path]:
    """Make ``name.key`` and ``name.crt`` signed by the plane's CA."""
    key_path = directory / f"{name}.key"
    key = _write_key(key_path)
    cert = _certificate(subject, key.public_key(), ca.name, ca.key, ca=False, usage=usage, san=san)
    return _write_cert(directory / f"{name}.crt", cert), key_path


@dataclass(frozen=True)
class ClientCert:
    """A client certificate identity (``CN`` = user, ``O`` = groups)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class PlanePKI:
    """Everything one kube-apiserver needs, plus the client identities made for it."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    admin: ClientCert
    scheduler: ClientCert
    controller_manager: ClientCert
    token_file: Path
    admin_token: str


def make_plane_pki(
    directory: Path, plane: str, tokens: dict[str, tuple[str, list[str]]]
) -> PlanePKI:
    """Create a fresh CA and all credentials for one plane in ``directory``.

    ``tokens`` maps a user name to ``(token, groups)``; they are written to the apiserver's static
    token file together with the plane's own admin token. Static tokens are how agents will
    authenticate to the host plane (a Role per agent limits them to their namespace).
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_key = _write_key(directory / "ca.key")
    ca_name = _name(f"gpuparley-{plane}-ca")
    ca_cert = _certificate(ca_name, ca_key.public_key(), ca_name, ca_key, ca=True)
    _write_cert(directory / "ca.crt", ca_cert)
    ca = _Authority(ca_name, ca_key)
    serving_san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in SERVING_NAMES]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
    )
    serving_crt, serving_key = _sign(
        directory,
        "apiserver",
        _name(f"gpuparley-{plane}-apiserver"),
        ca,
        ExtendedKeyUsageOID.SERVER_AUTH,
        serving_san,
    )
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    admin = ClientCert(*_sign(directory, "admin", _name("admin", ("system:masters",)), ca, client))
    scheduler = ClientCert(
        *_sign(directory, "scheduler", _name("system:kube-scheduler"), ca, client)
    )
    controller_manager = ClientCert(
        *_sign(directory, "controller-manager", _name("system:kube-controller-manager"), ca, client)
    )
    sa_key = directory / "sa.key"
    sa_private = _write_key(sa_key)
    sa_pub = directory / "sa.pub"
    sa_pub.write_bytes(
        sa_private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    admin_token = secrets.token_hex(16)
    lines = [f'{admin_token},admin,admin,"system:masters"']
    for user, (token, groups) in tokens.items():
        lines.append(f'{token},{user},{user},"{",".join(groups)}"')
    token_file = directory / "tokens.csv"
    token_file.write_text("\n".join(lines) + "\n")
    token_file.chmod(0o600)
    return PlanePKI(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=serving_crt,
        serving_key=serving_key,
        sa_key=sa_key,
        sa_pub=sa_pub,
        admin=admin,
        scheduler=scheduler,
        controller_manager=controller_manager,
        token_file=token_file,
        admin_token=admin_token,
    )


def write_kubeconfig(
    path: Path,
    server: str,
    ca_cert: Path,
    user: str,
    *,
    client: ClientCert | None = None,
    token: str | None = None,
    cluster: str = "gpuparley",
) -> Path:
    """Write a kubeconfig for one identity (client certificate or bearer token)."""
    import yaml

    user_entry: dict[str, str] = {}
    if client is not None:
        user_entry = {"client-certificate": str(client.cert), "client-key": str(client.key)}
    elif token is not None:
        user_entry = {"token": token}
    context = f"{user}@{cluster}"
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": cluster, "cluster": {"server": server, "certificate-authority": str(ca_cert)}}
        ],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path
