"""Start the Gemini emulator for a test, on a free 127.0.0.1 port, and stop it afterwards.

    from tests.support.emulator import start_emulator

    with start_emulator(rpm=5, latency_s=(0.0, 0.0)) as emu:
        provider = GeminiProvider(api_key=emu.api_key, base_url=emu.base_url)
        ...
        assert emu.stats()["rate_limited"] == 0

Keyword arguments are `EmulatorConfig` fields. By default the server runs in a background
thread of the test process (fast, shares nothing but HTTP with the code under test);
`subprocess=True` runs `python -m pipeline emulator` instead, for tests that must kill or
outlive the test process's threads.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess as sp
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline.llm.emulator.app import EmulatorConfig, create_emulator_app
from tests.support.servers import uvicorn_in_thread


@dataclass
class RunningEmulator:
    base_url: str
    api_key: str
    env: dict[str, str] = field(default_factory=dict)  # point a `pipeline` subprocess here

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/_emulator/stats", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/_emulator/reset", timeout=10).raise_for_status()

    def finish_batch(self, name: str) -> None:
        """End the batch job `name` ("batches/…") now, in its configured end state: the
        test's clock, instead of waiting out `batch_delay_s`."""
        httpx.post(f"{self.base_url}/_emulator/{name}/finish", timeout=10).raise_for_status()


def _env_for(base_url: str, api_key: str) -> dict[str, str]:
    return {
        "GOOGLE_GEMINI_BASE_URL": base_url,
        "GEMINI_API_KEY": api_key,
        "PIPELINE_PROVIDER": "emulator",
    }


@contextlib.contextmanager
def start_emulator(subprocess: bool = False, **config: Any) -> Iterator[RunningEmulator]:
    """Run an emulator configured by `config` (EmulatorConfig fields) for the `with` block."""
    if subprocess:
        with _in_subprocess(config) as running:
            yield running
        return
    with _in_thread(EmulatorConfig(**config)) as running:
        yield running


@contextlib.contextmanager
def _in_thread(config: EmulatorConfig) -> Iterator[RunningEmulator]:
    app = create_emulator_app(config)
    with uvicorn_in_thread(app, lifespan="off", what="Gemini emulator") as base_url:
        key = config.api_keys[0]
        yield RunningEmulator(base_url, key, _env_for(base_url, key))


@contextlib.contextmanager
def _in_subprocess(config: dict[str, Any]) -> Iterator[RunningEmulator]:
    args = [sys.executable, "-m", "pipeline", "emulator", "--host", "127.0.0.1", "--port", "0"]
    flags = {
        "rpm": "--rpm",
        "tpm": "--tpm",
        "rpd": "--rpd",
        "fail_rate": "--fail-rate",
        "bad_json_rate": "--bad-json-rate",
        "window_s": "--window-s",
        "thinking_tokens": "--thinking-tokens",
        "seed": "--seed",
    }
    for name, value in config.items():
        if name in flags:
            args += [flags[name], str(value)]
        elif name == "latency_s":
            args += ["--latency", f"{value[0]},{value[1]}"]
        elif name == "api_keys":
            for key in value:
                args += ["--api-key", key]
        elif name == "retry_info":
            if not value:
                args.append("--no-retry-info")
        else:
            raise TypeError(f"start_emulator(subprocess=True) does not support {name!r}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    proc = sp.Popen(args, stdout=sp.PIPE, stderr=sp.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        base_url = None
        deadline = time.monotonic() + 30
        lines = []
        while base_url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            match = re.search(r"GOOGLE_GEMINI_BASE_URL=(\S+)", line)
            base_url = match.group(1) if match else None
        if base_url is None:
            raise RuntimeError("the emulator subprocess did not start:\n" + "".join(lines))
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        key = config.get("api_keys", ("emulator-key",))[0]
        wait_http(base_url)
        yield RunningEmulator(base_url, key, _env_for(base_url, key))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except sp.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_http(base_url: str) -> None:
    """Return once the emulator at `base_url` answers its stats (15 s at most)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{base_url}/_emulator/stats", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)

