"""Policy specs: the one way to name what decides who gets the GPUs, everywhere.

Evaluation (`--policies`), training (opponent mixes) and the in-cluster negotiator (`--policy`)
all parse the same strings here:

* `<scheduler>` - a central scheduler (`agents.registry.SCHEDULERS`); evaluation only;
* `scripted:<name>` - a scripted negotiator (`agents.negotiators.registry.NEGOTIATORS`);
* `learned:<source>` - a learned negotiator: `<source>` is a checkpoint directory (it holds
  `policy.onnx`), an exported `.onnx` file, or a shipped checkpoint by name (`default`); a
  relative path is tried from the working directory, then among the shipped checkpoints, so
  `learned:checkpoints/default` works from anywhere.

In evaluation a negotiator spec means "a market where every seat plays it", and may end in
`@<mechanism>` (`@auction`, `@bargain`) and/or `@<clearing>` (`@continuous`, `@epoch`), in
either order (default: the scenario's), e.g. `scripted:truthful@auction@epoch`. Specs are
parsed (and checkpoints found) before anything runs, so a typo costs nothing; the spec string is
kept verbatim as the policy's name in every table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gpuparley.agents.negotiators.registry import NEGOTIATORS, make_negotiator
from gpuparley.agents.registry import SCHEDULERS
from gpuparley.envs.market.mechanisms import CLEARINGS, MECHANISMS
from gpuparley.envs.market.negotiator import Negotiator
from gpuparley.envs.resources import checkpoints_dir
from gpuparley.policy.learned import ONNX_FILE, LearnedNegotiator
from gpuparley.policy.runtime import Backend

Kind = Literal["scheduler", "scripted", "learned"]


@dataclass(frozen=True)
class PolicySpec:
    """A parsed spec. `spec` is kept verbatim: it is the policy's name in every table."""

    spec: str
    kind: Kind
    name: str  # scheduler or negotiator name, or the learned source as written
    mechanism: str | None = None
    source: Path | None = None  # the ONNX file a learned spec loads
    clearing: str | None = None

    @property
    def is_market(self) -> bool:
        return self.kind != "scheduler"

    def negotiator(self, seed: int = 0, backend: Backend = "numpy") -> Negotiator:
        """A fresh negotiator (one instance can play every seat of a market)."""
        if self.kind == "scripted":
            return make_negotiator(self.name, seed)
        if self.kind == "learned":
            assert self.source is not None
            try:
                return LearnedNegotiator.from_onnx(self.source, backend=backend, name=self.spec)
            except (OSError, ValueError, ImportError) as error:  # a user error, not a crash
                raise ValueError(f"cannot load {self.spec!r}: {error}") from None
        raise ValueError(f"{self.spec!r} is a central scheduler, not a negotiator")


def negotiator_choices() -> list[str]:
    """Every valid negotiator spec form."""
    scripted = [f"scripted:{name}" for name in NEGOTIATORS]
    return [*scripted, "learned:<checkpoint dir, .onnx file or shipped name>"]


def policy_choices() -> list[str]:
    """Every valid spec form, for error messages and `--help`."""
    return [*SCHEDULERS, *negotiator_choices()]


def _choices_message(spec: str, detail: str | None = None, negotiators_only: bool = False) -> str:
    reason = f" ({detail})" if detail else ""
    choices = negotiator_choices() if negotiators_only else policy_choices()
    return (
        f"unknown policy {spec!r}{reason}; choose one of: {', '.join(choices)} "
        f"(a negotiator may add @{' or @'.join(MECHANISMS)} and @{' or @'.join(CLEARINGS)})"
    )


def learned_source(text: str) -> Path:
    """The ONNX file of a learned spec's source (module docstring); ValueError if none."""
    path = Path(text).expanduser()
    shipped = Path(*path.parts[1:]) if path.parts[:1] == ("checkpoints",) else path
    for candidate in (path, checkpoints_dir() / shipped):
        if candidate.is_file() and candidate.suffix == ".onnx":
            return candidate
        if candidate.is_dir():
            if not (candidate / ONNX_FILE).is_file():
                raise ValueError(
                    f"checkpoint {candidate} has no {ONNX_FILE} (policy 'learned:{text}'); "
                    f"write one with `gpuparley export {candidate} --out "
                    f"{candidate / ONNX_FILE}`"
                )
            return candidate / ONNX_FILE
    raise ValueError(
        f"no checkpoint directory or .onnx file {text!r} (policy 'learned:{text}'); "
        f"shipped checkpoints: {', '.join(shipped_checkpoints()) or 'none'}"
    )


def shipped_checkpoints() -> list[str]:
    return sorted(p.name for p in checkpoints_dir().iterdir() if (p / ONNX_FILE).is_file())


def parse_policy(spec: str, negotiators_only: bool = False) -> PolicySpec:
    """Parse one spec; ValueError names every valid choice (or the missing checkpoint)."""
    spec = spec.strip()
    if spec in SCHEDULERS:
        if negotiators_only:
            raise ValueError(
                f"{spec!r} is a central scheduler; a negotiator is one of: "
                + ", ".join(negotiator_choices())
            )
        return PolicySpec(spec, "scheduler", spec)
    kind, _, rest = spec.partition(":")
    if kind not in ("scripted", "learned") or not rest:
        raise ValueError(_choices_message(spec, None, negotiators_only))
    name, *suffixes = rest.split("@")
    options: dict[str, str] = {}
    for suffix in suffixes:
        option = "mechanism" if suffix in MECHANISMS else "clearing" if suffix in CLEARINGS else ""
        if not option or option in options:
            detail = f"no mechanism or clearing {suffix!r}" if not option else f"two {option}s"
            raise ValueError(_choices_message(spec, detail, negotiators_only))
        options[option] = suffix
    mechanism, clearing = options.get("mechanism"), options.get("clearing")
    if kind == "learned":
        return PolicySpec(spec, "learned", name, mechanism, learned_source(name), clearing)
    if name not in NEGOTIATORS:
        raise ValueError(_choices_message(spec, f"no negotiator {name!r}", negotiators_only))
    return PolicySpec(spec, "scripted", name, mechanism, None, clearing)


def parse_negotiator(spec: str) -> PolicySpec:
    """A spec that names a negotiator (scripted or learned); a scheduler is an error."""
    return parse_policy(spec, negotiators_only=True)


def parse_policies(text: str) -> list[PolicySpec]:
    """A comma-separated list of specs, in order; empty or repeated specs are errors."""
    specs = [part.strip() for part in text.split(",") if part.strip()]
    if not specs:
        raise ValueError(f"no policies given; choose from: {', '.join(policy_choices())}")
    repeated = sorted({s for s in specs if specs.count(s) > 1})
    if repeated:
        raise ValueError(f"policy listed more than once: {', '.join(repeated)}")
    return [parse_policy(spec) for spec in specs]
