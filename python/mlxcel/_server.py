"""Managed mode: launches `mlxcel serve` (or `mlxcel-server`) as a child process, waits for
/health, and stops it again (close, context exit, garbage collection, interpreter exit)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import httpx

from .errors import MlxcelError, MlxcelStartupError, MlxcelTimeoutError

LOG_TAIL_BYTES = 8192
STOP_GRACE_S = 10.0
POLL_S = 0.05
PORT_RETRIES = 3
HEALTH_POLL_TIMEOUT_S = 1.0  # a listener that never answers (not ours) must not stall start-up


@dataclass
class ServerSpec:
    """What to launch: resolved by ``ManagedServer``; every field has a usable default."""

    model: Optional[str] = None  # -m: store id or folder; None = the server's default model
    binary: Optional[str] = None  # path or name; None = $MLXCEL_BIN, then `mlxcel`/`mlxcel-server` on PATH
    host: str = "127.0.0.1"  # a path ending in .sock = Unix socket
    port: Optional[int] = None  # None = a free port picked by the client
    args: Sequence[str] = ()  # extra server flags, e.g. ["-c", "2048", "-np", "4"]
    env: Optional[Dict[str, str]] = None  # added to the inherited environment
    api_key: Optional[str] = None  # passed as --api-key
    startup_timeout: float = 120.0  # seconds until /health answers 200
    log_file: Optional[str] = None  # keep the server's log here (default: a temp file, removed on stop)


def find_binary(binary: Optional[str]) -> str:
    """The server executable: the argument, else $MLXCEL_BIN, else `mlxcel` or `mlxcel-server` on PATH."""
    candidates: List[str] = []
    if binary:
        candidates.append(binary)
    elif os.environ.get("MLXCEL_BIN"):
        candidates.append(os.environ["MLXCEL_BIN"])
    else:
        candidates += ["mlxcel", "mlxcel-server"]
    for c in candidates:
        found = shutil.which(c) if os.sep not in c else (c if os.path.isfile(c) and os.access(c, os.X_OK) else None)
        if found:
            return os.path.abspath(found)
    where = binary or os.environ.get("MLXCEL_BIN")
    if where:
        raise MlxcelError(f"mlxcel binary {where!r} was not found or is not executable")
    raise MlxcelError("no mlxcel binary found: pass binary=..., set MLXCEL_BIN, or put `mlxcel` on PATH")


def server_command(binary: str) -> List[str]:
    """`mlxcel-server` takes the flags directly; `mlxcel` needs the `serve` subcommand."""
    return [binary] if os.path.basename(binary).startswith("mlxcel-server") else [binary, "serve"]


def free_port(host: str) -> int:
    """A TCP port that is free now on ``host`` (the kernel's choice)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("", "0.0.0.0", "::") else ("::" if family == socket.AF_INET6 else ""), 0))
        return s.getsockname()[1]


def is_unix_host(host: str) -> bool:
    return len(host) > 5 and host.endswith(".sock")


def _client_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _pdeathsig_preexec() -> Optional[Callable[[], None]]:
    """On Linux, a preexec hook asking the kernel to SIGTERM the server when its parent dies.

    NOTE: the signal fires when the *thread* that forked exits, so it is only armed when the
    server is started from the main thread (whose end is the process's end).
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sig = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sig, 0, 0, 0)

    return hook


def _read_tail(path: str, n_bytes: int = LOG_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - n_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return ("…" + text) if size > n_bytes else text


def _stop(proc: subprocess.Popen, log_path: str, remove_log: bool, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; always reaps the child. Module-level so that
    weakref.finalize holds no reference to the client object."""
    try:
        if proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        if remove_log:
            try:
                os.unlink(log_path)
            except OSError:
                pass


class ManagedServer:
    """One server child process. ``launch()`` starts it; ``wait_ready()`` /
    ``await wait_ready_async()`` block until /health is 200; ``stop()`` ends it (idempotent)."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.binary = find_binary(spec.binary)
        self.unix_path: Optional[str] = spec.host if is_unix_host(spec.host) else None
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = ""
        self._finalizer: Optional[weakref.finalize] = None
        self._port_given = spec.port is not None

    # --- addresses ---------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self.unix_path:
            return "http://localhost"
        return f"http://{_client_host(self.spec.host)}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def transport_kwargs(self) -> Dict[str, str]:
        return {"uds": self.unix_path} if self.unix_path else {}

    # --- lifecycle ---------------------------------------------------------------
    def launch(self) -> None:
        spec = self.spec
        self.port = None if self.unix_path else (spec.port if spec.port is not None else free_port(spec.host))
        cmd = server_command(self.binary)
        if spec.model:
            cmd += ["-m", spec.model]
        cmd += ["--host", spec.host]
        if self.port is not None:
            cmd += ["--port", str(self.port)]
        if spec.api_key:
            cmd += ["--api-key", spec.api_key]
        cmd += [str(a) for a in spec.args]
        env = dict(os.environ)
        if spec.env:
            env.update(spec.env)
        if spec.log_file:
            self.log_path, remove_log = spec.log_file, False
            log = open(self.log_path, "ab")
        else:
            fd, self.log_path = tempfile.mkstemp(prefix="mlxcel-server-", suffix=".log")
            log, remove_log = os.fdopen(fd, "ab"), True
        self.cmd = cmd
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, preexec_fn=_pdeathsig_preexec())
        except OSError as e:
            log.close()
            if remove_log:
                os.unlink(self.log_path)
            raise MlxcelStartupError(f"could not run {cmd[0]}: {e}") from e
        finally:
            log.close()  # the child holds its own copy of the descriptor
        # NOTE: the finalizer must not reference the ManagedServer or the client, or they
        # would never be collected; it also runs at interpreter exit (atexit).
        self._finalizer = weakref.finalize(self, _stop, self.proc, self.log_path, remove_log, STOP_GRACE_S)

    def stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once; later calls do nothing

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """The server's log so far (the last few KiB)."""
        return _read_tail(self.log_path) if self.log_path else ""

    # --- readiness ---------------------------------------------------------------
    def _startup_failed(self, why: str) -> MlxcelError:
        """Stops the child and builds the error that carries its log."""
        rc = self.proc.poll() if self.proc else None
        log = self.log()  # read before stop() may remove the file
        self.stop()
        msg = f"mlxcel server {why}\n  command: {' '.join(self.cmd)}\n  server log:\n{_indent(log) or '    (empty)'}"
        if why.startswith("did not become ready"):
            return MlxcelTimeoutError(msg, log=log)
        return MlxcelStartupError(msg, log=log, returncode=rc)

    def _check(self, resp: Optional[httpx.Response]) -> bool:
        """True when ready; raises when the process died or the model failed to load."""
        rc = self.proc.poll() if self.proc else -1
        if resp is not None and resp.status_code == 200 and rc is None:
            return True
        if rc is not None:  # NOTE: also after a 200, which then came from another process on the port
            raise self._startup_failed(f"exited with code {rc} during start-up")
        if resp is not None and resp.status_code == 500:
            raise self._startup_failed(f"failed to load the model: {resp.text.strip()}")
        return False

    def _deadline_passed(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise self._startup_failed(f"did not become ready within {self.spec.startup_timeout:g} s")

    def start(self) -> None:
        """Launches the server and waits until it is ready (retries a lost free-port race)."""
        for attempt in range(PORT_RETRIES):
            self.launch()
            try:
                return self.wait_ready()
            except MlxcelStartupError as e:
                if not self._port_race(e, attempt):
                    raise

    async def start_async(self) -> None:
        for attempt in range(PORT_RETRIES):
            self.launch()
            try:
                return await self.wait_ready_async()
            except MlxcelStartupError as e:
                if not self._port_race(e, attempt):
                    raise

    def _port_race(self, e: MlxcelStartupError, attempt: int) -> bool:
        """True when another process took the picked port first and a retry may help."""
        return (not self._port_given and not self.unix_path and attempt + 1 < PORT_RETRIES
                and "in use" in e.log.lower())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout
        transport = httpx.HTTPTransport(**self.transport_kwargs())
        with httpx.Client(transport=transport, timeout=HEALTH_POLL_TIMEOUT_S) as c:
            while True:
                try:
                    resp: Optional[httpx.Response] = c.get(self.base_url + "/health")
                except httpx.HTTPError:
                    resp = None
                if self._check(resp):
                    return
                self._deadline_passed(deadline)
                time.sleep(POLL_S)

    async def wait_ready_async(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout
        transport = httpx.AsyncHTTPTransport(**self.transport_kwargs())
        async with httpx.AsyncClient(transport=transport, timeout=HEALTH_POLL_TIMEOUT_S) as c:
            while True:
                try:
                    resp: Optional[httpx.Response] = await c.get(self.base_url + "/health")
                except httpx.HTTPError:
                    resp = None
                if self._check(resp):
                    return
                self._deadline_passed(deadline)
                await asyncio.sleep(POLL_S)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
