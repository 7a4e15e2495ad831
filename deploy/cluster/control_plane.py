"""One local control plane: a kube-apiserver with its own etcd prefix, CA and credentials.

Why its own module: every plane -- the host and each agent's -- is made the same way, and what
makes it one is files before it is a process: its PKI (``pki.py``), the kubeconfigs of everyone
who may talk to it (admin by certificate and by token, the scheduler, and on the host every agent
and the market by static token), and the apiserver flags that tie them to one storage prefix.
Keeping that here lets ``planes.py`` treat planes as interchangeable, and ``host_plane.py`` add
only what the host has on top.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpuparley.deploy.cluster import build, pki
from gpuparley.deploy.cluster.processes import free_port
from gpuparley.deploy.cluster.profiles import Profile, apiserver_flags
from gpuparley.deploy.objects import agent_namespace
from gpuparley.deploy.rbac import MARKET_USER

AGENT_GROUP = "gpuparley:agents"
SERVICE_CIDR = "10.0.0.0/24"


@dataclass
class Plane:
    """One kube-apiserver (and, for the host, its scheduler and KWOK)."""

    name: str
    kind: str  # "host" | "agent"
    port: int
    etcd_prefix: str
    kubeconfig: str  # admin (client certificate, group system:masters)
    token_kubeconfig: str  # admin again, by bearer token (for tools that dislike client certs)
    pki_dir: str
    # host only: user -> kubeconfig/token, for every agent and for the market (`gpuparley:market`)
    agent_kubeconfigs: dict[str, str] = field(default_factory=dict)
    agent_tokens: dict[str, str] = field(default_factory=dict)  # host only: agent -> token

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> str:
        return str(Path(self.pki_dir) / "ca.crt")


def plane_files(plane_dir: Path, name: str, kind: str, agents: Sequence[str]) -> Plane:
    """Make the PKI and kubeconfigs of one plane in ``plane_dir`` (before its apiserver starts).

    The host plane (``kind == "host"``) also gets a static token and kubeconfig for each agent
    (user ``agent-<a>``, group ``gpuparley:agents``) and for the market (``gpuparley:market``).
    """
    plane_dir.mkdir(parents=True, exist_ok=True)
    tokens: dict[str, tuple[str, list[str]]] = {}
    if kind == "host":
        for agent in agents:
            user = agent_namespace(agent)
            tokens[user] = (os.urandom(16).hex(), [AGENT_GROUP])
        # The market controller's own identity (its RBAC comes with the deploy bundle).
        tokens[MARKET_USER] = (os.urandom(16).hex(), [])
    cred = pki.make_plane_pki(plane_dir / "pki", name, tokens)
    port = free_port()
    server = f"https://127.0.0.1:{port}"
    plane = Plane(
        name=name,
        kind=kind,
        port=port,
        etcd_prefix=f"/{name}",
        kubeconfig=str(plane_dir / "admin.kubeconfig"),
        token_kubeconfig=str(plane_dir / "admin-token.kubeconfig"),
        pki_dir=str(cred.directory),
    )
    pki.write_kubeconfig(
        Path(plane.kubeconfig), server, cred.ca_cert, "admin", client=cred.admin, cluster=name
    )
    pki.write_kubeconfig(
        Path(plane.token_kubeconfig),
        server,
        cred.ca_cert,
        "admin",
        token=cred.admin_token,
        cluster=name,
    )
    pki.write_kubeconfig(
        plane_dir / "scheduler.kubeconfig",
        server,
        cred.ca_cert,
        "system:kube-scheduler",
        client=cred.scheduler,
        cluster=name,
    )
    if kind == "host":
        pki.write_kubeconfig(
            plane_dir / "controller-manager.kubeconfig",
            server,
            cred.ca_cert,
            "system:kube-controller-manager",
            client=cred.controller_manager,
            cluster=name,
        )
    for user, (token, _groups) in tokens.items():
        # ":" separates files in a kubeconfig path list, so it may not appear in the name.
        path = plane_dir / f"{user.replace(':', '-')}.kubeconfig"
        pki.write_kubeconfig(path, server, cred.ca_cert, user, token=token, cluster=name)
        plane.agent_kubeconfigs[user] = str(path)
        plane.agent_tokens[user] = token
    return plane


def apiserver_command(
    plane: Plane, etcd_url: str, cache: str | None, profile: Profile = "full"
) -> list[str]:
    """kube-apiserver flags for one plane (what envtest/kwokctl use, minus what needs a kubelet
    or a controller-manager), plus those of its profile (`profiles.py`: agent planes are slim
    by default)."""
    d = Path(plane.pki_dir)
    return [
        str(build.binary_path("kube-apiserver", cache)),
        f"--etcd-servers={etcd_url}",
        f"--etcd-prefix={plane.etcd_prefix}",
        f"--secure-port={plane.port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--tls-cert-file={d / 'apiserver.crt'}",
        f"--tls-private-key-file={d / 'apiserver.key'}",
        f"--client-ca-file={d / 'ca.crt'}",
        f"--token-auth-file={d / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer=https://{plane.name}.gpuparley.local",
        f"--service-account-key-file={d / 'sa.pub'}",
        f"--service-account-signing-key-file={d / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        *apiserver_flags(profile),
        "--enable-garbage-collector=false",
        # The apiserver listens on 127.0.0.1, which may not appear in the `kubernetes` Endpoints.
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--event-ttl=30m",
        "--v=0",
    ]


def _ssl_context(ca_cert: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_cert)
    ctx.check_hostname = True
    return ctx


def readyz(plane: Plane, timeout: float = 2.0) -> tuple[bool, str]:
    """GET /readyz on a plane's apiserver (anonymous access is allowed for health endpoints)."""
    try:
        with urllib.request.urlopen(
            f"{plane.server}/readyz", timeout=timeout, context=_ssl_context(plane.ca_cert)
        ) as resp:
            body = resp.read().decode(errors="replace").strip()
            return resp.status == 200 and body == "ok", body
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}: {exc.read().decode(errors='replace')[-300:]}"
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)
