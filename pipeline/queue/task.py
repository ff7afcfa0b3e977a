"""Declaring tasks: `@task(...)` records how a kind of job runs; `Call` is one invocation.

The registry is a plain dict filled at import time. A worker runs only tasks whose module it
imported (`pipeline worker --import mymodule`), and nothing from Redis is ever imported or
evaluated: a job names its task, and an unknown name fails the job with a clear message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pipeline.errors import NotSerializable, UnknownTask
from pipeline.queue.job import JobOptions, parse_priority

if TYPE_CHECKING:
    from pipeline.queue.context import JobContext

TaskFn = Callable[..., Awaitable[Any]]

REGISTRY: dict[str, Task] = {}


@dataclass(frozen=True)
class Task:
    """A function registered with `@task(...)`, with the options its jobs run under: queue,
    expected duration and timeout (seconds), attempts, retry delays (seconds) and priority
    (0-9, higher first). Calling it runs the function; `.call(...)` makes an enqueueable Call.
    """

    name: str
    fn: TaskFn
    queue: str = "default"
    expected_duration_s: float = 10.0
    timeout_s: float = 600.0
    max_attempts: int = 3
    retry_delays_s: tuple[float, ...] = (10.0, 60.0, 300.0)
    priority: int = 5
    uses_services: bool = False  # needs the LLM caller and ledger (pipeline/services.py)

    def call(self, *args: Any, **kwargs: Any) -> Call:
        """One invocation, for `client.enqueue(call)` or as a chord member."""
        return Call(self.name, list(args), kwargs, JobOptions(), task=self)

    async def __call__(self, ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
        return await self.fn(ctx, *args, **kwargs)


@dataclass(frozen=True)
class Call:
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: JobOptions = field(default_factory=JobOptions)
    task: Task | None = None

    def with_options(self, **options: Any) -> Call:
        return replace(self, options=replace(self.options, **options))


def task(
    name: str | None = None,
    *,
    queue: str = "default",
    expected_duration_s: float = 10.0,
    timeout_s: float = 600.0,
    max_attempts: int = 3,
    retry_delays_s: Sequence[float] = (10.0, 60.0, 300.0),
    priority: int | str = 5,
    uses_services: bool = False,
) -> Callable[[TaskFn], Task]:
    """Declare an async task `fn(ctx, *args, **kwargs)`.

    `expected_duration_s` sizes the lease (2x, renewed while running); `timeout_s` is the hard
    stop; `retry_delays_s[n]` is the back-off before attempt n+2 (the last entry repeats).
    `uses_services` asks the worker for the LLM caller, limiter gate and ledger in
    `ctx.deps["services"]`; plain tasks get a lean worker without them.
    """
    if expected_duration_s <= 0 or timeout_s <= 0:
        raise ValueError("expected_duration_s and timeout_s must be positive")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")

    def wrap(fn: TaskFn) -> Task:
        t = Task(
            name=name or f"{fn.__module__}.{fn.__qualname__}",
            fn=fn,
            queue=queue,
            expected_duration_s=expected_duration_s,
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            retry_delays_s=tuple(retry_delays_s),
            priority=parse_priority(priority),
            uses_services=uses_services,
        )
        REGISTRY[t.name] = t
        return t

    return wrap


def lookup(name: str) -> Task:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise UnknownTask(
            f"no task named {name!r} is registered in this process (known: {known}); "
            "import the module that defines it, e.g. `pipeline worker --import mymodule`"
        ) from None


def dumps(value: Any, what: str) -> str:
    """JSON or a clear error: nothing else crosses into Redis."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(f"{what} must be JSON-serialisable: {exc}") from None
