"""Certificates, keys and token files for a local control plane, made with the ``openssl`` CLI.

Why: every kube-apiserver needs a serving certificate, a service-account key pair and a way to
authenticate its admin. Each plane gets its *own* CA, so credentials of one agent's plane are
rejected by every other plane (a real 401 from the apiserver, which is what the isolation tests
check). The ``openssl`` command is used instead of the ``cryptography`` package to avoid a new
Python dependency; it ships with every Debian/Ubuntu base image.

Keys are ECDSA P-256 (fast to generate; kube-apiserver accepts ES256 service-account keys).
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CERT_DAYS = 30


class PKIError(RuntimeError):
    """openssl is missing or failed."""


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise PKIError(
            "the `openssl` command is needed to make certificates (apt-get install openssl)"
        )
    proc = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PKIError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _key(path: Path) -> None:
    _openssl(
        "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path), cwd=path.parent
    )
    path.chmod(0o600)


def _sign(
    directory: Path, name: str, subject: str, extensions: str, ca_name: str = "ca"
) -> tuple[Path, Path]:
    """Make ``name.key`` and ``name.crt`` signed by ``ca_name`` with the given v3 extensions."""
    key, csr, crt = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext_file = directory / f"{name}.ext"
    _key(key)
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=directory)
    ext_file.write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        f"{ca_name}.crt",
        "-CAkey",
        f"{ca_name}.key",
        "-CAcreateserial",
        "-days",
        str(CERT_DAYS),
        "-sha256",
        "-extfile",
        str(ext_file),
        "-out",
        str(crt),
        cwd=directory,
    )
    csr.unlink()
    ext_file.unlink()
    return crt, key


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
    _key(directory / "ca.key")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        f"/CN=gpuparley-{plane}-ca",
        "-days",
        str(CERT_DAYS),
        "-sha256",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    serving_crt, serving_key = _sign(
        directory,
        "apiserver",
        f"/CN=gpuparley-{plane}-apiserver",
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1\n",
    )
    client_ext = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n"
    )
    admin = ClientCert(*_sign(directory, "admin", "/O=system:masters/CN=admin", client_ext))
    scheduler = ClientCert(*_sign(directory, "scheduler", "/CN=system:kube-scheduler", client_ext))
    sa_key = directory / "sa.key"
    _key(sa_key)
    sa_pub = directory / "sa.pub"
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    admin_token = secrets.token_hex(16)
    lines = [f'{admin_token},admin,admin,"system:masters"']
    for user, (token, groups) in tokens.items():
        lines.append(f'{token},{user},{user},"{",".join(groups)}"')
    token_file = directory / "tokens.csv"
    token_file.write_text("\n".join(lines) + "\n")
    token_file.chmod(0o600)
    (directory / "ca.srl").unlink(missing_ok=True)
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
