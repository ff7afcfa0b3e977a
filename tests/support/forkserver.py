"""`python -m pipeline ...` forked from a process that has already imported the CLI.

Most of a `pipeline` command's CPU in the suite was its imports (`pipeline status`: ~0.7 of
~0.8 s of CPU, mostly SQLAlchemy, pydantic-settings, redis-py, Typer; 330 such commands a
run on a 2-core machine). A fork server pays them once per test process: it imports every
command module, then forks a child per command. The child is still a process of its own, as
a user's command is: its own pid, environment, working directory, stdin/stdout/stderr, exit
status and signals, and it exits through the interpreter's normal shutdown. What it does not
repeat is the import; a test about what a command imports runs `python -m pipeline` itself
(tests/cli/test_read_command_imports.py, test_worker_start_imports.py).

The server holds no thread, event loop, connection or settings when it forks (checked before
each fork): the child starts as clean as an interpreter that has only imported. It runs as
`python -m tests.support.forkserver SOCKET PROFILE` (PROFILES below); a request is one
connection carrying [4-byte length][JSON {argv, env, cwd, own_group}] with the child's stdin,
stdout and stderr as SCM_RIGHTS descriptors; the answer on that connection is the child's
pid, then, when it ends, its exit status (subprocess's convention: -N for signal N).
`PIPELINE_TEST_FORKSERVER=0` turns it off (every command a fresh `python -m pipeline`).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, ClassVar

_LEN = struct.Struct("!I")


# ---- the server (its own process) -------------------------------------------------------


# What a server imports before it forks, by profile:
# - "cli": every command module, the product's tasks (`run` and `submit` load them) and the
#   offline analyzer, warmed (`run` analyses in its own process);
# - "worker": what `pipeline worker` loads before its task modules, and no task module, so
#   a test worker registers exactly the tasks it is told to import, as a fresh one does;
#   the offline analyzer, warmed, for the workers that analyse offline.
PROFILES = {
    "cli": ("pipeline.cli.app", "*commands", "pipeline.services", "tasks.analyze", "*analyzer"),
    "worker": ("pipeline.cli.app", "pipeline.cli.worker", "pipeline.services",
               "pipeline.queue.worker", "*analyzer"),
}  # fmt: skip


def _preload(profile: str) -> None:
    import importlib

    for name in PROFILES[profile]:
        if name == "*commands":
            app = importlib.import_module("pipeline.cli.app")  # the module, not Typer's `app`
            for _name, path in (*app.COMMANDS, *app.GROUPS):
                importlib.import_module(f"pipeline.cli.{path.partition(':')[0]}")
        elif name == "*analyzer":
            _warm_the_offline_analyzer()
        else:
            importlib.import_module(name)


def _warm_the_offline_analyzer() -> None:
    """Analyse a few lines once, so the analyzer's models and tables (py3langid's, the
    first names', dateparser's) are loaded before the fork: ~2 s of CPU a `run` paid."""
    from pipeline.llm.offline.analysis import analyze_pages

    analyze_pages([
        "Invoice No. 1042\nDear Ms Lena Vogt,\nthe total due is EUR 1,250.00, payable by "
        "31 March 2026 to Acme Consulting GmbH, Berlin. Kind regards, John Smith",
        "Rechnung vom 1. März 2026. Sehr geehrte Frau Vogt, der Betrag von 99,00 EUR ist "
        "fällig. Mit freundlichen Grüßen",
    ])


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    while len(data) < _LEN.size or len(data) < _LEN.size + _LEN.unpack_from(data)[0]:
        more = conn.recv(1 << 16)
        if not more:
            raise EOFError("the client hung up mid-request")
        data += more
    (size,) = _LEN.unpack_from(data)
    return json.loads(data[_LEN.size : _LEN.size + size]), list(fds)


def _serve(path: str) -> tuple[dict[str, Any], list[int]] | None:
    """Accept requests and fork; in a forked child, return its request (the caller runs it).
    In the server, return None when the client side is gone (stdin closed)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "child")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")
    waiting: dict[int, socket.socket] = {}
    print("ready", flush=True)
    while True:
        for key, _mask in sel.select():
            if key.data == "parent":  # the test process closed our stdin: it is gone
                if not os.read(sys.stdin.fileno(), 1):
                    return None
            elif key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
                _reap(waiting)
            else:
                conn, _ = listener.accept()
                request, fds = _read_request(conn)
                if threading.active_count() != 1:  # a fork would copy a thread's locks
                    raise RuntimeError(f"fork server has threads: {threading.enumerate()}")
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    sel.close()
                    for fd in (listener.fileno(), wake_r, wake_w):
                        os.close(fd)
                    for other in waiting.values():
                        other.close()
                    conn.close()
                    return request, fds
                for fd in fds:
                    os.close(fd)
                if request.get("own_group"):  # before the pid is known: killpg finds it
                    with contextlib.suppress(OSError):
                        os.setpgid(pid, pid)
                conn.sendall(b"%d\n" % pid)
                waiting[pid] = conn
                _reap(waiting)  # a child that ended before SIGCHLD was set up for it


def _reap(waiting: dict[int, socket.socket]) -> None:
    while waiting:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(b"%d\n" % os.waitstatus_to_exitcode(status))
            conn.close()


def _become(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the request's stdio, environment and directory, then run
    `python -m pipeline ARGV`; its SystemExit ends this process the normal way."""
    import runpy

    if request.get("own_group"):
        os.setpgid(0, 0)  # as the server does for it: whichever runs first
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.path[0] = request["cwd"]  # what `python -m` puts first: the working directory
    sys.argv = ["-m", *request["argv"]]
    runpy.run_module("pipeline", run_name="__main__", alter_sys=True)


# ---- the client (in the test process) ---------------------------------------------------


class ForkedProcess:
    """A command forked by the server, with the part of subprocess.Popen's interface tests
    use: pid, returncode, poll(), wait(timeout), send_signal(), kill(), and `stdout` /
    `stderr` (text) when they were asked for as pipes."""

    stdout: IO[str] | None = None
    stderr: IO[str] | None = None

    def __init__(self, conn: socket.socket, pid: int) -> None:
        self._conn = conn
        self.pid = pid
        self.returncode: int | None = None
        self._buffer = b""

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is not None:
            return self.returncode
        self._conn.settimeout(timeout)
        try:
            while b"\n" not in self._buffer:
                chunk = self._conn.recv(64)
                if not chunk:  # the server died: the child's status is lost with it
                    self.returncode = -signal.SIGKILL
                    return self.returncode
                self._buffer += chunk
        except (TimeoutError, BlockingIOError):
            return None
        self.returncode = int(self._buffer.split(b"\n", 1)[0])
        self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(["pipeline"], timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class ForkServer:
    """One server per test process, started on first use, ended (by pid) when the test
    process exits or a new one is needed."""

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _running: ClassVar[dict[str, ForkServer]] = {}

    def __init__(self, root: Path, profile: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="pipeline-forkserver-")
        self.path = os.path.join(self._dir, "s")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env["PYTHONPATH"] = str(root)
        self.log = open(os.path.join(self._dir, "log"), "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.forkserver", self.path, profile],
            cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline() != b"ready\n":
            said = self._log()
            self.close()
            raise RuntimeError(f"the fork server did not start: {said}")

    def _log(self) -> str:
        self.log.seek(0)
        return self.log.read()

    @classmethod
    def get(cls, root: Path, profile: str = "cli") -> ForkServer | None:
        """This process's server of that profile (started now if none runs), or None when
        PIPELINE_TEST_FORKSERVER=0."""
        if os.environ.get("PIPELINE_TEST_FORKSERVER", "1") == "0":
            return None
        with cls._lock:
            server = cls._running.get(profile)
            if server is None or server.proc.poll() is not None:
                server = cls._running[profile] = ForkServer(root, profile)
                atexit.register(server.close)
            return server

    def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        stdio: tuple[int, int, int],
        own_group: bool = False,
    ) -> ForkedProcess:
        """Fork `pipeline ARGV` with these stdin/stdout/stderr descriptors (the caller keeps
        and closes its own); `own_group`: in a process group of its own, as Popen's
        start_new_session puts it, so a test can signal its whole group."""
        request = {"argv": argv, "env": env, "cwd": cwd, "own_group": own_group}
        body = json.dumps(request).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        message = _LEN.pack(len(body)) + body
        sent = socket.send_fds(conn, [message], list(stdio))
        conn.sendall(message[sent:])
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                raise RuntimeError(f"the fork server failed: {self._log()}")
            line += chunk
        return ForkedProcess(conn, int(line))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.unlink(os.path.join(self._dir, "log"))
            os.rmdir(self._dir)


def popen(
    argv: list[str], env: dict[str, str], cwd: Path, root: Path, profile: str = "cli",
    **popen: Any,
) -> ForkedProcess | None:
    """`python -m pipeline ARGV` through the `profile` fork server, as
    subprocess.Popen(text=True) would start it with `popen`'s stdout (PIPE or a file), stderr
    (PIPE, STDOUT or a file) and start_new_session; None when the fork server is off or
    another option is asked."""
    server = ForkServer.get(root, profile)
    if server is None or set(popen) - {"stdout", "stderr", "start_new_session"}:
        return None
    mine: list[int] = []  # the pipes' write ends, closed here once the child has them

    def pipe() -> tuple[IO[str], int]:
        read, write = os.pipe()
        mine.append(write)
        return open(read, encoding="utf-8", errors="replace"), write

    stdout = stderr = None
    with open(os.devnull, "rb") as stdin:
        out_fd = err_fd = stdin.fileno()
        if popen.get("stdout") == subprocess.PIPE:
            stdout, out_fd = pipe()
        elif popen.get("stdout") is not None:
            out_fd = popen["stdout"].fileno()
        if popen.get("stderr") == subprocess.PIPE:
            stderr, err_fd = pipe()
        elif popen.get("stderr") == subprocess.STDOUT:
            err_fd = out_fd
        elif popen.get("stderr") is not None:
            err_fd = popen["stderr"].fileno()
        try:
            child = server.spawn(argv, env, str(cwd), (stdin.fileno(), out_fd, err_fd),
                                 own_group=bool(popen.get("start_new_session")))  # fmt: skip
        finally:
            for fd in mine:
                os.close(fd)
    child.stdout, child.stderr = stdout, stderr
    return child


def run(
    argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float, root: Path
) -> subprocess.CompletedProcess[str] | None:
    """`python -m pipeline ARGV` through the fork server, as subprocess.run(capture_output,
    text) would give it; a command still running after `timeout_s` is killed (-9) and comes
    back with what it printed so far. None when the fork server is turned off."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = popen(argv, env, cwd, root, stdout=out, stderr=err)
        if child is None:
            return None
        try:
            code = child.wait(timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            code = child.wait(10)
        out.seek(0)
        err.seek(0)
        said = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return subprocess.CompletedProcess([sys.executable, "-m", "pipeline", *argv], code, *said)


if __name__ == "__main__":
    _preload(sys.argv[2])
    # The imported modules' objects go to a generation the collector never scans: a child's
    # collections would otherwise write to every object's header, copying every page the
    # fork shared.
    gc.collect()
    gc.freeze()
    forked = _serve(sys.argv[1])
    if forked is not None:
        _become(*forked)
