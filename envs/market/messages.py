"""The negotiation messages: one typed, versioned definition for the simulator and the clusters.

Every message an agent sends (bid, offer, counter-offer, accept, reject) and every record the
market issues (lease, release) is a pydantic model here. The simulator's market exchanges exactly
these objects; the in-cluster negotiators serialise them into custom resources whose OpenAPI
schemas are generated from these models (`json_schemas()`), so a policy sees and says the same
thing in simulation and in a cluster.

Parsing never raises past `parse_message`: malformed input becomes a `MessageError` whose text
names the field and the problem, and the caller rejects the message without touching any state.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

API_VERSION: Literal["gpuparley.io/v1alpha1"] = "gpuparley.io/v1alpha1"
ReleaseReason = Literal["expired", "reclaimed", "returned", "finished", "lost", "preempted"]
MARKET = "market"
"""The sender/receiver name of the market itself (auction clearing, lease issuing)."""

_NAME = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_ID = Field(min_length=1, max_length=128)
_CREDITS = Field(ge=0, le=1e12, allow_inf_nan=False)


class MessageError(ValueError):
    """A message that does not parse or does not validate; the text is the reason."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Demand(_Frozen):
    """What a job needs: `pods` identical pods each with one GPU request and CPU/memory."""

    job: str = _ID
    pods: int = Field(ge=1, le=1024)
    gpu_kind: Literal["none", "whole", "mig", "share"]
    gpu_count: int = Field(default=0, ge=0, le=16)
    mig_profile: str | None = Field(default=None, max_length=16)
    gpu_milli: int = Field(default=0, ge=0, le=1000)
    cpu_milli: int = Field(ge=0)
    memory_mib: int = Field(ge=0)
    allowed_models: tuple[str, ...] = ()

    @property
    def milli_gpu(self) -> int:
        """Total milli-GPU of the demand (whole GPU = 1000; MIG by compute share)."""
        if self.gpu_kind == "whole":
            return 1000 * self.gpu_count * self.pods
        if self.gpu_kind == "mig":
            slices = int((self.mig_profile or "0g").split("g")[0])
            return round(1000 * slices / 7) * self.pods
        return self.gpu_milli * self.pods


class ResourceItem(_Frozen):
    """One pod's share of a node: the GPUs (node-local indices), or a MIG instance, or a share."""

    pod: int = Field(ge=0)
    node: str = Field(min_length=1, max_length=253)
    gpu_kind: Literal["none", "whole", "mig", "share"]
    gpus: tuple[int, ...] = ()
    mig_profile: str | None = None
    mig_start: int | None = Field(default=None, ge=0, le=7)
    gpu_milli: int = Field(default=0, ge=0, le=1000)


class _Message(_Frozen):
    api_version: Literal["gpuparley.io/v1alpha1"] = API_VERSION
    id: str = _ID
    sender: str = _NAME
    receiver: str = _NAME
    epoch: int = Field(ge=0)


class Bid(_Message):
    """Sealed bid in the auction: a rent of `price` credits per epoch for the whole demand,
    for a lease of `term_epochs`."""

    kind: Literal["Bid"] = "Bid"
    demand: Demand
    price: float = _CREDITS
    term_epochs: int = Field(ge=1, le=10_000)
    renewal_of: str | None = None


class Offer(_Message):
    """Bargaining proposal from a borrower to a lender of idle quota: rent `price` per epoch."""

    kind: Literal["Offer"] = "Offer"
    demand: Demand
    price: float = _CREDITS
    term_epochs: int = Field(ge=1, le=10_000)
    round: int = Field(ge=1, le=100)
    renewal_of: str | None = None


class CounterOffer(_Message):
    """Reply to an offer (or counter-offer) with another price."""

    kind: Literal["CounterOffer"] = "CounterOffer"
    in_reply_to: str = _ID
    price: float = _CREDITS
    round: int = Field(ge=1, le=100)


class Accept(_Message):
    kind: Literal["Accept"] = "Accept"
    in_reply_to: str = _ID


class Reject(_Message):
    kind: Literal["Reject"] = "Reject"
    in_reply_to: str = _ID
    reason: str = Field(default="", max_length=256)


class Lease(_Message):
    """The market's record that `holder` may use `resources` until `expires_epoch`.

    `price` is the rent per epoch, paid to the lender at the start of every epoch of the term
    (the first at signing). For the auction the lender is the market; for bargaining it is the
    agent whose quota is lent (then `quota_milli` is the lent capacity and
    `reclaim_notice_epochs` the lender's notice).
    """

    kind: Literal["Lease"] = "Lease"
    lease_id: str = _ID
    holder: str = _NAME
    lender: str = _NAME
    job: str = _ID
    resources: tuple[ResourceItem, ...] = ()
    quota_milli: int = Field(default=0, ge=0)
    start_epoch: int = Field(ge=0)
    expires_epoch: int = Field(ge=0)
    price: float = _CREDITS
    reclaim_notice_epochs: int = Field(default=0, ge=0)


class Release(_Message):
    """End of a lease: expired, reclaimed, given back, the job finished, its rent went unpaid
    (lost), or a higher bid preempted it."""

    kind: Literal["Release"] = "Release"
    lease_id: str = _ID
    reason: ReleaseReason


Message = Annotated[
    Bid | Offer | CounterOffer | Accept | Reject | Lease | Release, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)
MESSAGE_TYPES = (Bid, Offer, CounterOffer, Accept, Reject, Lease, Release)


def parse_message(data: Any) -> Bid | Offer | CounterOffer | Accept | Reject | Lease | Release:
    """Validate a dict / JSON string / message into a typed message, or raise MessageError."""
    if isinstance(data, MESSAGE_TYPES):
        return data  # constructed through pydantic, frozen: already valid
    try:
        if isinstance(data, str | bytes):
            return _ADAPTER.validate_json(data)
        if isinstance(data, BaseModel):
            data = data.model_dump()
        return _ADAPTER.validate_python(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise MessageError(f"{where}: {first['msg']}") from None


_Model = TypeVar("_Model", bound=BaseModel)


def trusted(model: type[_Model], values: dict[str, Any]) -> _Model:
    """`model.model_validate(values)` without running the validators, for a message the market
    builds itself from values it made and checked (a bid or answer decoded from a legal
    action, a lease or release it issues): the same instance, its fields in declaration order,
    the defaults filled in and the same `model_fields_set`. Validating what the market had just
    built cost more than a tenth of an environment step. `values` hold every field without a
    default, of its declared type (floats as floats, tuples as tuples); whatever comes from
    outside the market still goes through `parse_message`. (pydantic's own `model_construct`
    gives the same instance but costs more than validating: 3.3 us against 1.4 us and this
    function's 0.9 us for a `Release`.)"""
    message = _new_object(model)
    _set_attribute(message, "__dict__", {**_field_defaults(model), **values})
    _set_attribute(message, "__pydantic_fields_set__", set(values))
    _set_attribute(message, "__pydantic_extra__", None)
    _set_attribute(message, "__pydantic_private__", None)
    return message


def _field_defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of `model` in declaration order, with its default (None where there is
    none: `trusted` is always given those); worked out once per model."""
    defaults = _FIELD_DEFAULTS.get(model)
    if defaults is None:
        defaults = _FIELD_DEFAULTS[model] = {
            name: None if field.default is PydanticUndefined else field.default
            for name, field in model.model_fields.items()
        }
    return defaults


_FIELD_DEFAULTS: dict[type[BaseModel], dict[str, Any]] = {}
_new_object = object.__new__
_set_attribute = object.__setattr__


def json_schemas() -> dict[str, dict[str, Any]]:
    """OpenAPI-compatible JSON schema of every message kind (for the CRDs)."""
    return {model.__name__: model.model_json_schema() for model in MESSAGE_TYPES}
