"""A negotiator's configuration: the `spec` of the `Negotiator` custom resource, and how one
negotiator process runs.

The spec is kept as a pydantic model (like the messages) so the CRD's OpenAPI schema is
generated from the same definition the negotiator process validates its configuration with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
POLICY_PATTERN = r"^(learned:.+|scripted:[a-z0-9][a-z0-9_-]*)$"
AgentName = Annotated[str, Field(min_length=1, max_length=63, pattern=_NAME_PATTERN)]


class NegotiatorSpec(BaseModel):
    """How one agent's in-cluster negotiator behaves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent: AgentName
    budget_per_epoch: float = Field(ge=0, le=1e12, allow_inf_nan=False)
    mechanism: Literal["auction", "bargain"]
    policy: str = Field(
        min_length=1,
        max_length=512,
        pattern=POLICY_PATTERN,
        description="`learned:<exported model or checkpoint>` or `scripted:<negotiator name>`.",
    )
    max_rounds: int = Field(default=10, ge=1, le=100)
    peers: tuple[AgentName, ...] = Field(
        default=(), description="Agents this negotiator bargains with (empty: any)."
    )


@dataclass
class NegotiatorConfig:
    """How one negotiator process runs (its command line)."""

    agent: str
    policy: str
    workload_namespace: str = "default"
    home: str | None = None  # the agent's host namespace (default agent-<agent>)
    resync_interval: float = 5.0  # reconcile from the caches at least this often (no requests)
    identity: str = ""
    leader_elect: bool = False

    @property
    def namespace(self) -> str:
        # Imported here: `objects` needs the CRDs, whose schema needs `NegotiatorSpec` above.
        from gpuparley.deploy.objects import agent_namespace

        return self.home or agent_namespace(self.agent)
