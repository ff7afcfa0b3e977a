"""Reading a job hash's values into what a running job keeps, small: a worker holds one job
record per running job, so each value it need not own is shared or left unmade (issue 16,
memory per waiting slow job; README).

- names (task, queue, worker) and a task's retry delays are one string for every job;
- numbers every job of a task has alike (lease, expected and timeout seconds) one object,
  and so are equal times (the jobs of one claim start together);
- empty JSON fields are not parsed (`json_field` returns the `empty` it is given);
- the fields most running jobs leave at their defaults share one slot (`Rare`, `RareField`).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import astuple, dataclass
from typing import Any, Generic, Protocol, TypeVar, cast, overload

loads = json.loads

# A task's, a queue's and a worker's name repeat in every job of theirs: one string shared
# while any such job is held (interned strings are freed with their last holder), not three
# copies per running job (~200 B of a sleeping job's ~3.6 KB in the worker, tracemalloc).
shared = sys.intern


def json_field(value: str | None, empty: Any) -> Any:
    """A JSON field; `empty` (a fresh [] or {}, or None) for an absent, empty or empty-literal
    one, which most jobs' kwargs, hints, options and retry delays are: no parse for those (a
    claim reads ~35 fields per job, and JSON decoding was most of it)."""
    if not value or value == "{}" or value == "[]":
        return empty
    return loads(value)


def int_field(value: str | None, default: int = 0) -> int:
    return int(value) if value not in (None, "") else default


_TIMES: dict[int, int] = {}
_TIMES_MAX = 8  # distinct times kept: those of the last claim or two (a cold dict is small)


def time_ms(value: str | None) -> int | None:
    """A Redis-clock time in ms, None when absent or 0; one int for all the fields and jobs
    that have the same (the jobs of one claim share their start and lease deadline, a job
    claimed in the ms it was enqueued its creation and start): each is 32 B otherwise. Kept
    by value, not by text: a text kept would cost more than the int it saves."""
    if not value:
        return None
    ms = int(value)
    kept = _TIMES.get(ms)
    if kept is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        kept = _TIMES[ms] = ms
    return kept or None


_NUMBERS: dict[tuple[type, str], int | float] = {}  # a task's lease, expected, timeout
_NUMBERS_MAX = 256  # distinct texts kept (a few per task definition)


def same_number(
    value: str | None, kind: type[int] | type[float], default: int | float = 0
) -> Any:
    """A number every job of a task has alike (its lease_ms, expected_s, timeout_s), one
    object for them all: a float or a large int of its own is 32 B a running job."""
    if value in (None, ""):
        return default
    number = _NUMBERS.get((kind, value))
    if number is None:
        if len(_NUMBERS) >= _NUMBERS_MAX:
            _NUMBERS.clear()
        number = _NUMBERS[kind, value] = kind(value)
    return number


# Taken only to make a part a job has left unmade (an empty dict read, the rare fields set):
# a plain-function task writes into its job from a thread while the loop may read the same
# field, and two parts made at once would lose one write.
MAKING = threading.RLock()  # re-entrant: a callback in the same thread may read a part too


@dataclass(slots=True)
class Rare:
    """The fields of a job that most jobs a worker runs leave at their defaults (a running
    job has no result and no error, and most are in no group): one slot of the job for all
    of them, None until one is set (14 slots of None were 112 B of every running job)."""

    finished_ms: int | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None
    cancel_requested: bool = False
    group: str | None = None
    group_index: int | None = None
    callback_id: str | None = None
    callback_queue: str | None = None
    chord: str | None = None
    progress: Any = None
    lease_expiries: int = 0
    idempotency_key: str | None = None


RARE_DEFAULTS = astuple(Rare())  # in Rare's field order


class OwnDict:
    """A dict attribute kept in its holder's slot of the same name with a leading "_"
    (`kwargs` in `_kwargs`): None there until first read, then an empty dict of the holder's
    own, made under MAKING (a plain-function task may read it from its thread)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    @overload
    def __get__(self, holder: None, owner: type) -> OwnDict: ...
    @overload
    def __get__(self, holder: object, owner: type) -> dict[str, Any]: ...
    def __get__(self, holder: object | None, owner: type) -> dict[str, Any] | OwnDict:
        if holder is None:
            return self
        value = getattr(holder, self.slot)
        if value is None:
            with MAKING:
                if (value := getattr(holder, self.slot)) is None:
                    value = {}
                    setattr(holder, self.slot, value)
        return cast(dict[str, Any], value)

    def __set__(self, holder: object, value: dict[str, Any]) -> None:
        setattr(holder, self.slot, value)


class HasRare(Protocol):
    _rare: Rare | None


T = TypeVar("T")


class RareField(Generic[T]):
    """An attribute kept in its holder's `_rare` part (None: every such field at its
    default); setting one to other than its default makes that part."""

    def __init__(self, default: T) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, holder: None, owner: type) -> RareField[T]: ...
    @overload
    def __get__(self, holder: HasRare, owner: type) -> T: ...
    def __get__(self, holder: HasRare | None, owner: type) -> T | RareField[T]:
        if holder is None:
            return self
        rare = holder._rare
        return self.default if rare is None else cast(T, getattr(rare, self.name))

    def __set__(self, holder: HasRare, value: T) -> None:
        rare = holder._rare
        if rare is None:
            if value is self.default:
                return
            with MAKING:
                rare = holder._rare
                if rare is None:
                    rare = holder._rare = Rare()
        setattr(rare, self.name, value)
