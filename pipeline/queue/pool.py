"""A process pool for CPU-heavy helpers (PDF parsing), off the event loop.

Child processes are recycled after `max_tasks_per_child` calls, so memory that a parser
fragments is handed back to the OS. Only JSON crosses the process boundary: a call is a
`module:function` path plus JSON arguments (bytes travel base64-encoded), and the answer is
JSON text.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import importlib
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor
from typing import TYPE_CHECKING, Any

from pipeline.errors import Retry

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

_BYTES = "__bytes_b64__"


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {_BYTES: base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_BYTES}:
            return base64.b64decode(value[_BYTES])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _payload(func_path: str, args: tuple[Any, ...]) -> str:
    return json.dumps({"func": func_path, "args": _encode(list(args))})


def _trampoline(payload: str) -> str:
    """Runs in the child: resolve `module:function`, call it, answer JSON."""
    request = json.loads(payload)
    module, _, name = request["func"].partition(":")
    fn = getattr(importlib.import_module(module), name)
    try:
        result = fn(*_decode(request["args"]))
        return json.dumps({"ok": _encode(_to_jsonable(result))})
    except Exception as exc:
        return json.dumps(
            {"error": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}
        )
    finally:
        # A pypdf reader is a reference cycle that keeps the whole PDF alive until the next
        # full collection: a process that inspected 14 MB PDFs kept one more per call (45 ->
        # 101 MB after 4 calls; each of the 2 pool processes of bench/documents.py --only
        # worker sat at 100-160 MB). Collected here, it stays at 45 MB; a collection of a
        # child's few objects takes milliseconds, a PDF call far more.
        gc.collect()


def _to_jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)
    return value


def _die_with_parent() -> None:
    """Runs first in each pool process: ignore SIGINT, on Linux ask to be killed when the
    worker process dies (SIGKILL, OOM), so no parser process outlives it holding memory; and
    give freed PDF-sized buffers back to the OS (queue/memory.py)."""
    # Ctrl-C reaches the terminal's whole process group, these processes too: their parent
    # stops them (shutdown, or PR_SET_PDEATHSIG below), while a KeyboardInterrupt here would
    # print a traceback from call_queue.get at the user. The parent spawns them with SIGINT
    # blocked (_spawning), which covers the start-up before this line.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from pipeline.queue.memory import return_large_buffers

    return_large_buffers()
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the worker already died while this process started
        os._exit(0)


@contextlib.contextmanager
def _spawning() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile: a pool process started here (and the
    executor's manager thread, which starts the replacements) inherits the mask, so a Ctrl-C
    during a child's start-up, before it ignores SIGINT, does not reach it. The signal is
    still taken by the process's other threads, or when it is unblocked here."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class CpuPoolError(Exception):
    def __init__(self, kind: str, module: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.module = module


class CpuPool:
    """At most `workers` calls are handed to the executor at once; the others wait here.
    Python 3.11-3.13's ProcessPoolExecutor deadlocks when a child exits at
    `max_tasks_per_child` while calls are queued behind the busy children: the replacement
    is never started and every queued call waits forever (CPython issue gh-115634, fixed
    upstream by python/cpython#140900, not in the 3.11 this runs on: reproduced on 3.11.7
    with 30 calls on 2 children of 3 tasks, tests/queue/test_pool.py). With no backlog
    inside the executor, a child that exits is always replaced."""

    def __init__(self, workers: int = 2, max_tasks_per_child: int = 50) -> None:
        self.workers = workers
        self.max_tasks_per_child = max_tasks_per_child
        self._executor: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    def _free_slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots, self._slots_loop = asyncio.Semaphore(self.workers), loop
        return self._slots

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # imported on first use: most workers never start a child (~5 MB and ~40 ms less)
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=self.max_tasks_per_child,
                initializer=_die_with_parent,
            )
        return self._executor

    async def run(self, func_path: str, *args: Any) -> Any:
        """Call `module:function(*args)` in a child; its own error types are re-raised by name
        when they come from pipeline.errors, else as CpuPoolError."""
        loop = asyncio.get_running_loop()
        try:
            async with self._free_slot():
                # Encoded once a slot is free, not before: a call's JSON holds its bytes again
                # as base64 (a 14 MB PDF is ~19 MB of text), and 32 jobs waiting for 2 slots
                # held 32 such copies at once (bench/documents.py --only worker). In a thread,
                # so the encoding does not block the event loop either.
                payload = await asyncio.to_thread(_payload, func_path, args)
                with _spawning():  # run_in_executor submits now, starting a child if needed
                    pending = loop.run_in_executor(self._ensure(), _trampoline, payload)
                answer = json.loads(await pending)
                del payload
        except BrokenExecutor as exc:
            # A child died (OOM on a hostile PDF, a crash): the executor is unusable from now
            # on. Start a fresh one for the next call and let this job try again.
            broken, self._executor = self._executor, None
            if broken is not None:
                broken.shutdown(wait=False, cancel_futures=True)
            raise Retry(
                f"a {func_path} process died ({exc}); retrying in a fresh process"
            ) from None
        if "error" in answer:
            if answer["module"] == "pipeline.errors":
                from pipeline import errors

                cls = getattr(errors, answer["error"], None)
                if isinstance(cls, type) and issubclass(cls, errors.PipelineError):
                    raise cls(answer["message"])
            raise CpuPoolError(answer["error"], answer["module"], answer["message"])
        return _decode(answer["ok"])

    def kill(self) -> None:
        """End the child processes now (one is stuck past every limit); the next `run`
        starts a fresh executor. Calls still waiting fail with BrokenExecutor."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        # ProcessPoolExecutor has no public way to stop a running call: end its processes.
        for process in list(getattr(executor, "_processes", {}).values()):
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
