"""The market's private view of each agent (ConfigMap `gpuparley-market-view`) against the
real host apiserver: written by the market only (the `gpuparley-market-view` admission policy
where RBAC alone cannot say it), readable by its agent only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gpuparley.deploy import objects, rbac

from .helpers import outcome as _outcome
from .helpers import status_of as _status_of

pytestmark = pytest.mark.cluster
NEGOTIATOR_SA = "system:serviceaccount:agent-alpha:negotiator"


def _view(data: str) -> dict[str, Any]:
    return {
        "metadata": {"name": objects.VIEW_CONFIGMAP, "labels": {"gpuparley.io/test": "view"}},
        "data": {"view.json": data},
    }


def test_market_view_is_written_by_the_market_only(
    deployed: Any, agent_custom: Callable[[str], Any], as_user: Callable[[str], Any]
) -> None:
    from kubernetes import client

    home, view = "agent-alpha", objects.VIEW_CONFIGMAP
    alpha = client.CoreV1Api(agent_custom("alpha").api_client)
    market = client.CoreV1Api(as_user(rbac.MARKET_USER))
    admin = client.CoreV1Api(deployed)
    try:
        assert _status_of(lambda: market.create_namespaced_config_map(home, _view("{}"))) == 200
        patch = {"data": {"view.json": '{"step": 1}'}}
        assert _status_of(lambda: market.patch_namespaced_config_map(view, home, patch)) == 200
        assert alpha.read_namespaced_config_map(view, home).data == patch["data"]
        # The rig's Role lets agent-alpha write configmaps: the policy stops it (403).
        forged = {"data": {"view.json": '{"price": 0}'}}
        for call in (
            lambda: alpha.patch_namespaced_config_map(view, home, forged),
            lambda: alpha.delete_namespaced_config_map(view, home),
            # A collection delete is admitted object by object (the policy matches on the
            # old object's name: the request's name is empty).
            lambda: alpha.delete_collection_namespaced_config_map(
                home, label_selector="gpuparley.io/test=view"
            ),
        ):
            status, message = _outcome(call)
            assert status == 403, message
            assert f"ConfigMap {view} is written by the market only, not by agent-alpha" in message
        # As the negotiator ServiceAccount, RBAC already says no.
        sa = client.CoreV1Api(as_user(NEGOTIATOR_SA))
        assert sa.read_namespaced_config_map(view, home).data == patch["data"]
        assert _status_of(lambda: sa.patch_namespaced_config_map(view, home, forged)) == 403
        other = {"metadata": {"name": "negotiator-scratch"}}
        assert _status_of(lambda: sa.create_namespaced_config_map(home, other)) == 403
        assert alpha.read_namespaced_config_map(view, home).data == patch["data"]
        # Nor may alpha read or write beta's view.
        assert _status_of(lambda: alpha.read_namespaced_config_map(view, "agent-beta")) == 403
        assert (
            _status_of(lambda: alpha.create_namespaced_config_map("agent-beta", _view("{}"))) == 403
        )
        # The market writes views in agent homes only, and no other configmap there.
        assert (
            _status_of(
                lambda: market.create_namespaced_config_map("default", _view("{}"), dry_run="All")
            )
            == 403
        )
        assert (
            _status_of(
                lambda: market.patch_namespaced_config_map("gpuparley-negotiator", home, forged)
            )
            == 403
        )
    finally:
        admin.delete_namespaced_config_map(view, home)
