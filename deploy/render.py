"""Everything one agent needs on the host cluster, as a list of Kubernetes objects.

Rendered from Python data (no templating of YAML text), in apply order: the shared cluster-scoped
objects (CRDs, ClusterRoles and cluster-wide bindings, admission policies), the market's
namespaces / ServiceAccount / inbox binding, then the agent's own namespaces / ServiceAccount /
bindings, ConfigMap, `Negotiator` object and Deployment. Shared objects are identical in every
agent's bundle (`shared_objects()`), so applying several bundles is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import yaml

from gpuparley.deploy import admission, quotas, rbac
from gpuparley.deploy.crds import API_VERSION, PlainDumper, crd_documents, dump_yaml
from gpuparley.deploy.negotiator_config import NegotiatorSpec
from gpuparley.deploy.objects import AGENT_LABEL, agent_name, agent_namespace

IMAGE_REPOSITORY = "gpuparley-negotiator"
CONFIG_FILE = "negotiator.yaml"

AGENT_PLANE_MOUNT = "/etc/gpuparley/agent-plane"
POLICY_MOUNT = "/etc/gpuparley/policy"  # where a policy from a ConfigMap is mounted
AGENT_PLANE_SECRET = "gpuparley-agent-plane"
METRICS_PORT = 9464


def package_version() -> str:
    """The image tag: the installed package's version (image and package ship together)."""
    try:
        return metadata.version("gpuparley")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


@dataclass(frozen=True)
class AgentBundle:
    """Inputs of one agent's manifests. Defaults are what the in-cluster market runs: the
    auction and the shipped learned policy."""

    agent: str
    namespace: str | None = None
    policy: str = "learned:default"
    mechanism: str = "auction"
    budget_per_epoch: float = 100.0
    peers: tuple[str, ...] = ()
    image: str | None = None
    replicas: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    offer_quota: int = quotas.DEFAULT_OFFERS
    pod_quota: int = quotas.DEFAULT_PODS
    # A ConfigMap holding the ONNX policy under `policy_key`; the Deployment mounts it and the
    # policy becomes learned:<POLICY_MOUNT>/<key> (the image holds only the shipped policies).
    policy_configmap: str | None = None
    policy_key: str = "policy.onnx"

    @property
    def policy_spec(self) -> str:
        """The policy the negotiator runs (the mounted file when it comes from a ConfigMap)."""
        if self.policy_configmap:
            return f"learned:{POLICY_MOUNT}/{self.policy_key}"
        return self.policy

    @property
    def name(self) -> str:
        return agent_name(self.agent)

    @property
    def home(self) -> str:
        return self.namespace or agent_namespace(self.agent)

    def spec(self) -> NegotiatorSpec:
        """Validated here, so a bad policy string fails at render time, not in the pod."""
        return NegotiatorSpec(
            agent=self.name,
            budget_per_epoch=self.budget_per_epoch,
            mechanism=self.mechanism,  # type: ignore[arg-type]
            policy=self.policy_spec,
            peers=tuple(agent_name(p) for p in self.peers),
        )


def _labels(bundle: AgentBundle) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "gpuparley-negotiator",
        "app.kubernetes.io/instance": bundle.name,
        AGENT_LABEL: agent_namespace(bundle.agent),
    }


def _meta(name: str, bundle: AgentBundle) -> dict[str, Any]:
    return {"name": name, "namespace": bundle.home, "labels": _labels(bundle)}


def negotiator_object(bundle: AgentBundle) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Negotiator",
        "metadata": _meta(bundle.name, bundle),
        "spec": bundle.spec().model_dump(mode="json"),
    }


def config_map(bundle: AgentBundle) -> dict[str, Any]:
    """The same spec as the Negotiator object, as a file and as env, for a process that cannot (or
    should not yet) read the Negotiator resource."""
    spec = bundle.spec().model_dump(mode="json")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("gpuparley-negotiator", bundle),
        "data": {
            CONFIG_FILE: dump_yaml(spec),
            "GPUPARLEY_AGENT": bundle.name,
            "GPUPARLEY_MECHANISM": spec["mechanism"],
            "GPUPARLEY_POLICY": spec["policy"],
            # %g, as the Helm chart prints it (Go's %v): 100, 2.5.
            "GPUPARLEY_BUDGET_PER_EPOCH": f"{spec['budget_per_epoch']:g}",
        },
    }


def _policy_volume(bundle: AgentBundle) -> list[dict[str, Any]]:
    if not bundle.policy_configmap:
        return []
    key = bundle.policy_key
    source = {"name": bundle.policy_configmap, "items": [{"key": key, "path": key}]}
    return [{"name": "policy", "configMap": source}]


def deployment(bundle: AgentBundle) -> dict[str, Any]:
    """The negotiator process (`gpuparley negotiator run`) on the host, as the agent's
    ServiceAccount; it reaches the agent's own control plane with the kubeconfig in the Secret
    `gpuparley-agent-plane` (key `kubeconfig`), which the operator creates. With more than one
    replica the replicas elect a leader (a `coordination.k8s.io` Lease) and only it acts."""
    labels = _labels(bundle)
    spec = bundle.spec()
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": k, "value": v} for k, v in sorted(bundle.extra_env.items())),
    ]
    probe = {"httpGet": {"port": "metrics"}, "periodSeconds": 10, "failureThreshold": 3}
    container = {
        "name": "negotiator",
        "image": bundle.image or f"{IMAGE_REPOSITORY}:{package_version()}",
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "negotiator",
            "run",
            "--agent",
            bundle.name,
            "--policy",
            spec.policy,
            "--namespace",
            bundle.home,
            "--agent-kubeconfig",
            f"{AGENT_PLANE_MOUNT}/kubeconfig",
            "--leader-elect",
            "--identity",
            "$(POD_NAME)",
            "--metrics-address",
            "0.0.0.0",
            "--metrics-port",
            str(METRICS_PORT),
        ],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "livenessProbe": {**probe, "httpGet": {"path": "/healthz", "port": "metrics"}},
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "metrics"}},
        "volumeMounts": [
            {"name": "agent-plane", "mountPath": AGENT_PLANE_MOUNT, "readOnly": True},
            *(
                [{"name": "policy", "mountPath": POLICY_MOUNT, "readOnly": True}]
                if bundle.policy_configmap
                else []
            ),
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta("gpuparley-negotiator", bundle),
        "spec": {
            "replicas": bundle.replicas,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": rbac.NEGOTIATOR_SERVICE_ACCOUNT,
                    "containers": [container],
                    "volumes": [
                        {"name": "agent-plane", "secret": {"secretName": AGENT_PLANE_SECRET}},
                        *_policy_volume(bundle),
                    ],
                },
            },
        },
    }


def shared_objects() -> list[dict[str, Any]]:
    """The objects every agent's bundle carries unchanged, in apply order: cluster-scoped ones,
    then the market's namespaces, ServiceAccount and inbox binding."""
    return [
        *crd_documents(),
        *rbac.cluster_roles(),
        *rbac.cluster_bindings(),
        *admission.admission_objects(),
        *rbac.market_rbac(),
    ]


def render_objects(bundle: AgentBundle) -> list[dict[str, Any]]:
    """All objects of one agent's bundle, in apply order."""
    home, inbox = rbac.agent_namespaces(bundle.agent, bundle.namespace)
    return [
        *shared_objects(),
        *rbac.agent_rbac(bundle.agent, bundle.peers, bundle.namespace),
        *quotas.agent_quotas(bundle.agent, home, inbox, bundle.offer_quota, bundle.pod_quota),
        config_map(bundle),
        negotiator_object(bundle),
        deployment(bundle),
    ]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML (`---` separated), as `kubectl apply -f -` takes it; plain (no
    anchors)."""
    return yaml.dump_all(
        objects, Dumper=PlainDumper, sort_keys=False, default_flow_style=False, width=10_000
    )
