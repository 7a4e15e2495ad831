"""Policy specs: the one string a researcher writes to name what allocates the GPUs.

* `<scheduler>` - a central scheduler from `agents.registry.SCHEDULERS`;
* `market:<negotiator>[@bargain|@auction]` - a market where every seat plays the scripted
  negotiator (mechanism: the scenario's unless given);
* `learned:<checkpoint dir>[@bargain|@auction]` - a market where every seat plays the trained
  policy.

Specs are parsed (and checkpoints checked) before anything runs, so a typo costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuparley.agents.negotiators.learned import LearnedNegotiator
from gpuparley.agents.negotiators.registry import NEGOTIATORS, make_negotiator
from gpuparley.agents.registry import SCHEDULERS
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.resources import checkpoints_dir

MECHANISMS = ("auction", "bargain")
Kind = Literal["scheduler", "market", "learned"]


@dataclass(frozen=True)
class Policy:
    """A parsed spec. `spec` is kept verbatim: it is the policy's name in every table."""

    spec: str
    kind: Kind
    name: str  # scheduler or negotiator name, or the checkpoint dir as written
    mechanism: str | None = None
    checkpoint: Path | None = None

    @property
    def is_market(self) -> bool:
        return self.kind != "scheduler"

    def negotiator(self, seed: int) -> Negotiator:
        """A fresh negotiator for one market run (one instance plays every seat)."""
        if self.kind == "market":
            return make_negotiator(self.name, seed)
        if self.kind == "learned":
            assert self.checkpoint is not None
            try:
                return LearnedNegotiator.from_checkpoint(self.checkpoint, name=self.spec)
            except Exception as error:  # a broken checkpoint is a user error, not a crash
                raise ValueError(f"cannot load checkpoint {self.checkpoint}: {error}") from None
        raise ValueError(f"{self.spec!r} is a central scheduler, not a market")


def policy_choices() -> list[str]:
    """Every valid spec form, for error messages and `--help`."""
    markets = [f"market:{name}" for name in NEGOTIATORS]
    return [*SCHEDULERS, *markets, "learned:<checkpoint dir>"]


def _choices_message(spec: str, detail: str | None = None) -> str:
    reason = f" ({detail})" if detail else ""
    return (
        f"unknown policy {spec!r}{reason}; choose one of: {', '.join(policy_choices())} "
        f"(a market may add @{' or @'.join(MECHANISMS)})"
    )


def _checkpoint_dir(text: str) -> Path:
    """The checkpoint directory: a path (relative to the cwd), else a shipped checkpoint, so
    `learned:checkpoints/default` (or `learned:default`) works from anywhere."""
    path = Path(text).expanduser()
    shipped = Path(*path.parts[1:]) if path.parts[:1] == ("checkpoints",) else path
    for candidate in (path, checkpoints_dir() / shipped):
        if candidate.is_dir():
            return candidate
    raise ValueError(f"checkpoint directory {text!r} does not exist (policy 'learned:{text}')")


def parse_policy(spec: str) -> Policy:
    """Parse one spec; ValueError names every valid choice (or the missing checkpoint)."""
    spec = spec.strip()
    if spec in SCHEDULERS:
        return Policy(spec, "scheduler", spec)
    kind, _, rest = spec.partition(":")
    if kind == "learned" and rest:
        path, at, mechanism = rest.rpartition("@")
        if not at or mechanism not in MECHANISMS:
            path, mechanism = rest, ""
        return Policy(
            spec, "learned", path, checkpoint=_checkpoint_dir(path), mechanism=mechanism or None
        )
    if kind == "market" and rest:
        name, _, mechanism = rest.partition("@")
        if name not in NEGOTIATORS:
            raise ValueError(_choices_message(spec, f"no negotiator {name!r}"))
        if mechanism and mechanism not in MECHANISMS:
            raise ValueError(_choices_message(spec, f"no mechanism {mechanism!r}"))
        return Policy(spec, "market", name, mechanism=mechanism or None)
    raise ValueError(_choices_message(spec))


def parse_policies(text: str) -> list[Policy]:
    """A comma-separated list of specs, in order; empty or repeated specs are errors."""
    specs = [part.strip() for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError(f"no policies given; choose from: {', '.join(policy_choices())}")
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise ValueError(f"policy listed more than once: {', '.join(repeated)}")
    return [parse_policy(spec) for spec in specs]
