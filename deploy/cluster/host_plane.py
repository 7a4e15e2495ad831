"""What makes the host plane the shared GPU cluster: kube-scheduler, KWOK, the fake GPU nodes,
kube-controller-manager's resourcequota controller, and each agent's namespace and access.

Why its own module: an agent's plane is a bare kube-apiserver (``control_plane.py``); the host is
that plus the parts that schedule pods onto GPUs and let agents in. Starting those components and
creating what they act on belong together -- KWOK only takes over nodes carrying the annotation
``nodes.py`` puts on them, and the agents' RBAC here is what the isolation tests check.
"""

from __future__ import annotations

import ssl
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from gpuparley.deploy.cluster import build
from gpuparley.deploy.cluster.control_plane import AGENT_GROUP, Plane
from gpuparley.deploy.cluster.nodes import FAKE_NODE_ANNOTATION, FakeNode, create_nodes
from gpuparley.deploy.cluster.processes import ClusterError, Proc, Supervisor, free_port
from gpuparley.deploy.kube import connect
from gpuparley.deploy.objects import agent_namespace

STAGE_FILES = (
    "node-initialize.yaml",
    "node-heartbeat.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)
POD_CIDR = "10.128.0.0/16"
SCHEDULER_QPS = 200


def start_scheduler(
    sup: Supervisor, plane: Plane, cache: str | None, qps: int = SCHEDULER_QPS
) -> Proc:
    """kube-scheduler on the plane, as ``system:kube-scheduler``, without leader election."""
    plane_dir = Path(plane.kubeconfig).parent
    kubeconfig = plane_dir / "scheduler.kubeconfig"
    config = plane_dir / "scheduler-config.yaml"
    config.write_text(
        "apiVersion: kubescheduler.config.k8s.io/v1\n"
        "kind: KubeSchedulerConfiguration\n"
        "clientConnection:\n"
        f"  kubeconfig: {kubeconfig}\n"
        f"  qps: {qps}\n"
        f"  burst: {qps * 2}\n"
        "leaderElection:\n"
        "  leaderElect: false\n"
    )
    port = free_port()
    cmd = [
        str(build.binary_path("kube-scheduler", cache)),
        f"--config={config}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        # No front-proxy is configured; do not look for its CA in kube-system (log noise only).
        "--authentication-skip-lookup=true",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--v=1",
    ]
    health = f"https://127.0.0.1:{port}/healthz"
    return sup.start(f"{plane.name}-kube-scheduler", cmd, plane.name, health)


def start_controller_manager(sup: Supervisor, plane: Plane, cache: str | None) -> Proc:
    """kube-controller-manager on the host, running only the resourcequota controller.

    Why: the per-agent ResourceQuotas (`deploy/quotas.py`) bound how many Offers and pods an
    agent can store; the apiserver refuses creates over a quota, but only this controller keeps
    the quotas' usage (without it every create in a quota'd namespace is refused). Each
    controller runs as its own ServiceAccount in kube-system, as on a real cluster; there is no
    kubelet, so nothing else of the controller-manager is needed.
    """
    plane_dir = Path(plane.kubeconfig).parent
    kubeconfig = plane_dir / "controller-manager.kubeconfig"
    port = free_port()
    cmd = [
        str(build.binary_path("kube-controller-manager", cache)),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",
        "--controllers=resourcequota",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--v=1",
    ]
    health = f"https://127.0.0.1:{port}/healthz"
    return sup.start(f"{plane.name}-kube-controller-manager", cmd, plane.name, health)


def start_kwok(sup: Supervisor, plane: Plane, cache: str | None) -> Proc:
    """KWOK on the plane: it keeps the fake nodes Ready and plays the pods' lifecycle
    (the Stages in ``kwok/``)."""
    cmd = [
        str(build.binary_path("kwok", cache)),
        f"--kubeconfig={plane.kubeconfig}",
        f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
        f"--cidr={POD_CIDR}",
        "--node-lease-duration-seconds=40",
        *(f"--config={build.KWOK_STAGE_DIR / f}" for f in STAGE_FILES),
    ]
    return sup.start(f"{plane.name}-kwok", cmd, plane.name)


def component_healthz(url: str) -> tuple[bool, str]:
    """GET a component's /healthz (served with a self-signed certificate, so not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
            body = resp.read().decode(errors="replace").strip()
            return resp.status == 200 and body == "ok", body
    except (OSError, ssl.SSLError) as exc:
        return False, str(exc)


def install_crds(host: Plane) -> None:
    """The gpuparley CRDs, before kube-controller-manager starts: its quota controller discovers
    resource types at start-up (then only every 30 s), and the agents' quotas count Offers."""
    from gpuparley.deploy.apply import apply_objects
    from gpuparley.deploy.crds import crd_documents

    with connect(host.kubeconfig) as api:
        apply_objects(api, crd_documents())


def add_fake_nodes(host: Plane, fake_nodes: Sequence[FakeNode]) -> list[str]:
    """Create the fake GPU nodes on the host, as its admin; their names."""
    from kubernetes import client

    with connect(host.kubeconfig) as api:
        return create_nodes(client.CoreV1Api(api), fake_nodes)


def setup_agent_access(host: Plane, agents: Sequence[str]) -> None:
    """In the host plane: one namespace per agent, a Role limited to it, and read-only access to
    nodes for every agent (they must see the GPU inventory they negotiate over)."""
    from kubernetes import client

    with connect(host.kubeconfig) as api:
        core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
        rbac.create_cluster_role(
            {
                "metadata": {"name": "gpuparley-agent-nodes-reader"},
                "rules": [
                    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}
                ],
            }
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "gpuparley-agents-nodes-reader"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "gpuparley-agent-nodes-reader",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": AGENT_GROUP}
                ],
            }
        )
        for agent in agents:
            ns = agent_namespace(agent)
            core.create_namespace({"metadata": {"name": ns, "labels": {"gpuparley.io/agent": ns}}})
            rbac.create_namespaced_role(
                ns,
                {
                    "metadata": {"name": "gpuparley-agent"},
                    "rules": [
                        {
                            "apiGroups": [""],
                            "resources": ["pods", "configmaps", "events"],
                            "verbs": ["*"],
                        },
                        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["get"]},
                        {
                            "apiGroups": ["coordination.k8s.io"],
                            "resources": ["leases"],
                            "verbs": ["*"],
                        },
                    ],
                },
            )
            rbac.create_namespaced_role_binding(
                ns,
                {
                    "metadata": {"name": "gpuparley-agent"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "gpuparley-agent",
                    },
                    "subjects": [
                        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": ns}
                    ],
                },
            )


def wait_nodes_ready(host: Plane, names: Sequence[str], timeout: float) -> None:
    """Block until KWOK has marked every named node Ready (ClusterError after ``timeout``)."""
    from kubernetes import client

    want = set(names)
    deadline = time.monotonic() + timeout
    with connect(host.kubeconfig) as api:
        core = client.CoreV1Api(api)
        while True:
            ready = set()
            for node in core.list_node().items:
                for cond in node.status.conditions or []:
                    if cond.type == "Ready" and cond.status == "True":
                        ready.add(node.metadata.name)
            if want <= ready:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"KWOK did not make nodes Ready: {sorted(want - ready)[:10]}")
            time.sleep(0.3)
