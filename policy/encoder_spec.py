"""Which encoder a policy was trained for, and the refusal of any other.

A policy acts on the feature vector of `envs.market.encoding`; one trained on another layout
would act on misread features without any error. So every exported model (ONNX metadata) and
every training checkpoint (`spec.json`) records the encoder's `SPEC_VERSION` and `spec_hash()`,
and loading compares both with the code doing the loading.
"""

from __future__ import annotations

from gpuparley.envs.market.encoding import SPEC_VERSION, spec_hash

SPEC_VERSION_KEY = "gpuparley.spec_version"
SPEC_HASH_KEY = "gpuparley.spec_hash"


class SpecMismatchError(ValueError):
    """A model or checkpoint was trained on a different observation/action encoding."""


def check_encoder_spec(version: str | None, digest: str | None, source: str) -> None:
    """Refuse `source` unless it was built for exactly the current encoder.

    The message names both sides so the user can tell whether to retrain or check out the code
    the model was trained with.
    """
    if version == SPEC_VERSION and digest == spec_hash():
        return
    if version is None and digest is None:  # an empty or foreign file, not an older policy
        raise SpecMismatchError(
            f"{source} records no observation spec: it is not a policy or checkpoint that"
            " gpuparley wrote (`gpuparley export` writes one)"
        )
    raise SpecMismatchError(
        f"{source} was built for observation spec {version!r} (hash {digest!r}), but this code "
        f"encodes spec {SPEC_VERSION!r} (hash {spec_hash()!r}); retrain or re-export it with "
        "the current encoder, or run the code version it was trained with"
    )
