"""moto's S3 server as a real subprocess on a free 127.0.0.1 port: an S3-compatible HTTP
endpoint that boto3 talks to as to any other (signed requests, XML replies, status codes).
Not AWS itself and not MinIO: what it proves is the store's use of the S3 API over HTTP.

    from tests.support.s3_server import S3_ENV, start_s3_server
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# Dummy credentials and a region: boto3 signs with them; moto accepts any.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "pipeline-test",
    "AWS_SECRET_ACCESS_KEY": "pipeline-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_LISTENING = re.compile(r"Running on (http://127\.0\.0\.1:\d+)")


@contextlib.contextmanager
def start_s3_server(log_dir: Path, start_timeout_s: float = 30.0) -> Iterator[str]:
    """`python -m moto.server` on 127.0.0.1, port chosen by the server (port 0, read from its
    log, so no other process can take it in between); yields the endpoint URL. Stopped by pid
    (SIGTERM, then SIGKILL) after the block. Its log (one line a request) goes to a file, so
    no pipe fills and blocks it."""
    log_path = log_dir / f"moto-{time.monotonic_ns()}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + start_timeout_s
            while not (found := _LISTENING.search(log_path.read_text())):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
            yield found.group(1)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
