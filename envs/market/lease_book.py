"""The market's active leases by id, in a dict that counts its changes."""

from __future__ import annotations

from typing import Any, NoReturn

from gpuparley.envs.market.messages import Lease


class LeaseBook(dict[str, Lease]):
    """Leases by id; `changes` counts every write, so that what is derived from the leases
    (those due for renewal, asked for several times per sub-step) is worked out again only
    after one. Writes go through `book[id] = lease`, `del book[id]` and `pop`; the other
    mutators of `dict` are refused, as they would bypass the count."""

    __slots__ = ("changes",)

    def __init__(self) -> None:
        super().__init__()
        self.changes = 0

    def __setitem__(self, lease_id: str, lease: Lease) -> None:
        self.changes += 1
        super().__setitem__(lease_id, lease)

    def __delitem__(self, lease_id: str) -> None:
        self.changes += 1
        super().__delitem__(lease_id)

    def pop(self, lease_id: str, *default: Any) -> Any:
        self.changes += 1
        return super().pop(lease_id, *default)

    def __reduce__(self) -> tuple[Any, ...]:  # (pickle and copy: the count set last)
        return _restore, (dict(self), self.changes)

    def _uncounted(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("change a LeaseBook by item assignment, del or pop")

    update = setdefault = popitem = clear = __ior__ = _uncounted


def _restore(leases: dict[str, Lease], changes: int) -> LeaseBook:
    book = LeaseBook()
    for lease_id, lease in leases.items():
        book[lease_id] = lease
    book.changes = changes
    return book
