"""Declaring tasks: `@task(...)` records how a kind of job runs; `Call` is one invocation.

The registry is a plain dict filled at import time. A worker runs only tasks whose module it
imported (`pipeline worker --import mymodule`), and nothing from Redis is ever imported or
evaluated: a job names its task, and an unknown name fails the job with a clear message.
Workers also publish their tasks' options to Redis (registry.py), so a process that enqueues
by name without the import still places the job in the task's queue at its priority.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from pipeline.errors import NotSerializable, UnknownTask
from pipeline.queue.job import NO_OPTIONS, JobOptions, parse_priority

if TYPE_CHECKING:
    from pipeline.queue.context import JobContext

# `async def fn(ctx, ...)`, or a plain `def fn(ctx, ...)` that the worker runs in a thread
TaskFn = Callable[..., Any]

REGISTRY: dict[str, Task] = {}

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Task:
    """A function registered with `@task(...)`, with the options its jobs run under: queue,
    expected duration and timeout (seconds), attempts, retry delays (seconds) and priority
    (0-9, higher first). Calling it runs the function; `.call(...)` makes an enqueueable Call.
    `is_async` is False for a plain function, which the worker runs in a thread so that it
    cannot block the event loop.
    """

    name: str
    fn: TaskFn
    queue: str = DEFAULT_QUEUE
    expected_duration_s: float = 10.0
    timeout_s: float = 600.0
    max_attempts: int = 3
    retry_delays_s: tuple[float, ...] = (10.0, 60.0, 300.0)
    priority: int = 5
    uses_services: bool = False  # needs the LLM caller and ledger (pipeline/services.py)
    is_async: bool = True

    def call(self, *args: Any, **kwargs: Any) -> Call:
        """One invocation, for `client.enqueue(call)` or as a chord member."""
        return Call(self.name, list(args), kwargs, NO_OPTIONS, task=self)

    async def __call__(self, ctx: JobContext, *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return await self.fn(ctx, *args, **kwargs)
        return self.fn(ctx, *args, **kwargs)

    def start(
        self, ctx: JobContext, args: list[Any], kwargs: Mapping[str, Any], threads: Executor | None
    ) -> Awaitable[Any]:
        """The job's body as an awaitable: the coroutine, or a plain function in `threads`.
        A thread cannot be interrupted: cancelled or past its timeout, the job is settled at
        once while the function runs on in the background, its return value dropped."""
        if self.is_async:
            return cast(Awaitable[Any], self.fn(ctx, *args, **kwargs))
        assert threads is not None, "a plain-function task needs the worker's thread pool"
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(threads, partial(self.fn, ctx, *args, **kwargs))

    def options(self) -> dict[str, Any]:
        """The options a worker publishes (registry.py) and resolves jobs with at claim time:
        {name, queue, expected_duration_s, timeout_s, max_attempts, retry_delays_s, priority,
        version}. `version` is a short hash of these options and of the function's source, so
        two workers running different code for one task name can be told apart."""
        opts: dict[str, Any] = {
            "name": self.name,
            "queue": self.queue,
            "expected_duration_s": self.expected_duration_s,
            "timeout_s": self.timeout_s,
            "max_attempts": self.max_attempts,
            "retry_delays_s": list(self.retry_delays_s),
            "priority": self.priority,
        }
        try:
            source = inspect.getsource(self.fn)
        except (OSError, TypeError):  # defined in a REPL or built dynamically
            source = f"{self.fn.__module__}.{self.fn.__qualname__}"
        digest = hashlib.sha256(json.dumps(opts, sort_keys=True).encode() + source.encode())
        return {**opts, "version": digest.hexdigest()[:12]}


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
    queue: str = DEFAULT_QUEUE,
    expected_duration_s: float = 10.0,
    timeout_s: float = 600.0,
    max_attempts: int = 3,
    retry_delays_s: Sequence[float] = (10.0, 60.0, 300.0),
    priority: int | str = 5,
    uses_services: bool = False,
) -> Callable[[TaskFn], Task]:
    """Declare a task `fn(ctx, *args, **kwargs)`: an `async def`, or a plain `def` that the
    worker runs in a thread (a synchronous SDK, CPU work that releases the GIL).

    `expected_duration_s` sizes the lease (2x, renewed while running); `timeout_s` is the hard
    stop; `retry_delays_s[n]` is the back-off before attempt n+2 (the last entry repeats).
    These run with the definition of the worker that claims the job, not of the process that
    enqueued it. `queue` and `priority` place the job when it is enqueued.
    `uses_services` asks the worker for the LLM caller, limiter gate and ledger in
    `ctx.deps["services"]`; plain tasks get a lean worker without them.
    Raises ValueError for a non-positive duration or timeout, or fewer than one attempt.
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
            is_async=inspect.iscoroutinefunction(fn),
        )
        REGISTRY[t.name] = t
        return t

    return wrap


def lookup(name: str) -> Task:
    """The task registered in this process under `name`; UnknownTask naming the fix if none."""
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise UnknownTask(
            f"no task named {name!r} is registered in this process (known: {known}); "
            "import the module that defines it, e.g. `pipeline worker --import mymodule`"
        ) from None


# One encoder for every job: json.dumps with options builds a new JSONEncoder per call, and
# an enqueue encodes twice (its arguments, then its fields).
_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dumps(value: Any, what: str) -> str:
    """JSON or a clear error: nothing else crosses into Redis."""
    try:
        return _ENCODE(value)
    except (TypeError, ValueError) as exc:
        raise NotSerializable(f"{what} must be JSON-serialisable: {exc}") from None
