"""The pieces every gpuparley admission policy shares: who is exempt, and the object shapes.

Why a module of its own: the policies on messages (`admission.py`) and on pods
(`admission_pods.py`) name the same identities -- cluster admins, the market, Kubernetes'
own controllers -- and must agree on them exactly, or one policy would let through what the
other refuses.
"""

from __future__ import annotations

from typing import Any

from gpuparley.deploy.objects import MARKET_NAMESPACE
from gpuparley.deploy.rbac import MARKET_SERVICE_ACCOUNT, MARKET_USER

ADMISSION_API = "admissionregistration.k8s.io/v1"
ADMIN_GROUP = "system:masters"
# Kubernetes' controllers create pods from templates an operator wrote (the negotiator's own
# Deployment lives in its agent's namespace); agents can neither be these identities nor create
# workload objects for them (no RBAC on deployments, replicasets, jobs).
CONTROLLER_PREFIX = "system:serviceaccount:kube-system:"
CONTROLLER_MANAGER = "system:kube-controller-manager"

_MARKET_IDENTITIES = (
    f"['{MARKET_USER}', 'system:serviceaccount:{MARKET_NAMESPACE}:{MARKET_SERVICE_ACCOUNT}']"
)
IDENTITY_VARIABLES: list[dict[str, str]] = [
    {"name": "user", "expression": "request.userInfo.username"},
    {
        "name": "admin",
        "expression": f"has(request.userInfo.groups) && '{ADMIN_GROUP}' in request.userInfo.groups",
    },
    {"name": "market", "expression": f"request.userInfo.username in {_MARKET_IDENTITIES}"},
    {
        "name": "controller",
        "expression": (
            f"request.userInfo.username.startsWith('{CONTROLLER_PREFIX}')"
            f" || request.userInfo.username == '{CONTROLLER_MANAGER}'"
        ),
    },
]
_RAW = {v["name"]: v["expression"] for v in IDENTITY_VARIABLES}
# The same test without `variables` (match conditions run before variables exist).
TRUSTED_REQUEST = " || ".join(f"({_RAW[name]})" for name in ("admin", "market", "controller"))
# An object's finalizers may only shrink (nothing added) unless the requester is trusted: a
# finalizer keeps an object -- and a pod's node resources -- alive after whoever owns the
# capacity deleted it.
NO_NEW_FINALIZERS = (
    "!has(object.metadata.finalizers) || size(object.metadata.finalizers) == 0"
    " || (oldObject != null && has(oldObject.metadata.finalizers)"
    " && object.metadata.finalizers.all(f, f in oldObject.metadata.finalizers))"
)


def resource_rule(group: str, resource: str, operations: list[str]) -> dict[str, Any]:
    """What a policy (or one of its bindings) matches: `operations` on one resource."""
    return {
        "apiGroups": [group],
        "apiVersions": ["*"] if group else ["v1"],
        "operations": operations,
        "resources": [resource],
    }


def policy(
    name: str,
    group: str,
    resource: str,
    operations: list[str],
    spec: dict[str, Any],
    namespace_selector: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ValidatingAdmissionPolicy on one resource that fails closed."""
    constraints: dict[str, Any] = {"resourceRules": [resource_rule(group, resource, operations)]}
    if namespace_selector:
        constraints["namespaceSelector"] = namespace_selector
    return {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail", "matchConstraints": constraints, **spec},
    }


def binding(name: str, param_ref: dict[str, Any] | None = None) -> dict[str, Any]:
    """The binding that makes policy `name` deny (a policy alone does nothing)."""
    spec: dict[str, Any] = {"policyName": name, "validationActions": ["Deny"]}
    if param_ref is not None:
        spec["paramRef"] = param_ref
    return {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": spec,
    }
