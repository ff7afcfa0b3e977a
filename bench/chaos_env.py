"""The chaos run's world: an emulator that keeps a bill per answer, a TCP proxy in front of
PostgreSQL that can be cut, a throw-away database, varied PDFs, and `pipeline worker`
processes that can be SIGKILLed and replaced.

Everything listens on 127.0.0.1 (the embedded Redis on a unix socket) and is stopped by
handle, never by name. The emulator keeps its own statistics; the bill log here adds what
they lack for an exact audit: the usage of every single 200 answer, so each ledger row
can be matched to the answer it paid for.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "docs").glob("*.pdf"))


# -- the emulator, with a bill per answer -------------------------------------------------
@dataclass(frozen=True)
class Bill:
    """What one 200 answer of generateContent charged."""

    model_version: str
    input_tokens: int
    output_tokens: int
    thinking_tokens: int

    @property
    def tokens(self) -> tuple[str, int, int, int]:
        return (self.model_version, self.input_tokens, self.output_tokens, self.thinking_tokens)


class BillLog:
    """ASGI wrapper that reads each generateContent answer on its way out. It records the
    bill whether or not the client is still there to read it: Google bills a request the
    moment it answers, and so does the emulator."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bills: list[Bill] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(":generateContent"):
            await self.app(scope, receive, send)
            return
        status, body = 0, bytearray()

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if status != 200:
            return
        data = json.loads(bytes(body))
        usage = data.get("usageMetadata", {})
        bill = Bill(
            data.get("modelVersion", ""),
            int(usage.get("promptTokenCount", 0)),
            int(usage.get("candidatesTokenCount", 0)),
            int(usage.get("thoughtsTokenCount", 0)),
        )
        with self.lock:
            self.bills.append(bill)

    def snapshot(self) -> list[Bill]:
        with self.lock:
            return list(self.bills)


@contextlib.contextmanager
def emulator_in_thread(**config: Any) -> Iterator[tuple[str, BillLog]]:
    """The Gemini emulator (EmulatorConfig fields) on a free 127.0.0.1 port, in a thread;
    yields its base URL and its bill log."""
    from pipeline.llm.emulator.app import EmulatorConfig, create_emulator_app
    from tests.support.servers import uvicorn_in_thread

    log = BillLog(create_emulator_app(EmulatorConfig(**config)))
    with uvicorn_in_thread(log, lifespan="off", what="Gemini emulator") as url:
        yield url, log


# -- PostgreSQL: a fresh database behind a proxy we can cut ---------------------------------
def fresh_database(admin_url: str) -> contextlib.AbstractContextManager[str]:
    """CREATE DATABASE chaos_<random> through `admin_url`'s database; DROP (FORCE) after."""
    from tests.support.backends import fresh_pg_database

    return fresh_pg_database(admin_url, prefix="chaos")


# -- documents -------------------------------------------------------------------------------
_WORDS = (
    "invoice contract delivery payment liability warranty supplier quarterly revenue audit "
    "shipment clause renewal termination penalty schedule margin forecast customer service"
).split()


def make_documents(count: int, seed: int) -> list[tuple[str, bytes]]:
    """The example PDFs, then generated ones (1-3 pages of seeded text, so every document's
    bytes and therefore content hash differ) up to `count`."""
    from fpdf import FPDF

    rng = random.Random(seed)
    docs = [(p.name, p.read_bytes()) for p in EXAMPLES[:count]]
    for n in range(len(docs), count):
        pdf = FPDF()
        pdf.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))  # reproducible bytes for one seed
        pdf.set_font("helvetica", size=11)
        for page in range(1, rng.randint(1, 3) + 1):
            pdf.add_page()
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 160)))
            pdf.multi_cell(0, 8, f"Chaos document {n}, page {page}. {words}.")
        docs.append((f"chaos-{n:04d}.pdf", bytes(pdf.output())))
    return docs


# -- worker processes ------------------------------------------------------------------------
class Workers:
    """`pipeline worker` processes; a killed or exited one is replaced by a new one."""

    def __init__(self, env: dict[str, str], concurrency: int, log_dir: Path) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        self.env = {**base, "PYTHONPATH": str(ROOT), **env}
        self.concurrency = concurrency
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.started = 0
        self.killed = 0
        self.exited: list[tuple[int, int | None]] = []  # (pid, exit code) of unplanned exits

    def spawn(self) -> int:
        cmd = [sys.executable, "-m", "pipeline", "worker", "--import", "tasks.analyze",
               "--concurrency", str(self.concurrency), "--log-level", "WARNING"]  # fmt: skip
        path = self.log_dir / f"worker-{self.started:03d}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        self.procs.append(proc)
        self.logs[proc.pid] = path
        self.started += 1
        return proc.pid

    def kill_random(self, rng: random.Random, busy_pids: Collection[int] = ()) -> int | None:
        """SIGKILL one live worker chosen by `rng` (one with jobs running when any has:
        the point is to die mid-call) and start its replacement."""
        alive = sorted((p for p in self.procs if p.poll() is None), key=lambda p: p.pid)
        if not alive:
            return None
        busy = [p for p in alive if p.pid in busy_pids]
        victim = rng.choice(busy or alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.procs.remove(victim)
        self.killed += 1
        self.spawn()
        return victim.pid

    def replace_exited(self) -> None:
        """A worker that exits by itself (e.g. it started while a service was down) is
        restarted, as a process supervisor would."""
        for proc in [p for p in self.procs if p.poll() is not None]:
            self.exited.append((proc.pid, proc.returncode))
            self.procs.remove(proc)
            self.spawn()

    def stop(self, grace_s: float = 10.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log_tails(self, chars: int = 1500) -> str:
        out = []
        for pid, path in self.logs.items():
            text = path.read_text(errors="replace")
            if text.strip():
                out.append(f"--- worker {pid} ({path.name})\n{text[-chars:]}")
        return "\n".join(out)
