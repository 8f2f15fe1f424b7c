"""Managed-server lifetime and failures: clean shutdown on close / with / garbage collection /
interpreter exit / a killed parent, start-up errors with the server's log, a server killed
mid-stream, an unreachable port, timeouts."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import SOURCE_DIR, process_gone

import mlxcel
from mlxcel._server import free_port

GONE_WAIT_S = 15.0


def test_close_stops_the_server(binary, model_dir):
    llm = mlxcel.LLM(model_dir, binary=binary)
    pid = llm.pid
    assert not process_gone(pid)
    llm.close()
    assert process_gone(pid)  # stopped and reaped before close() returns
    llm.close()  # idempotent
    with pytest.raises(mlxcel.MlxcelError, match="closed"):
        llm.models()


def test_context_manager_stops_the_server(binary, model_dir):
    with mlxcel.LLM(model_dir, binary=binary) as llm:
        pid = llm.pid
        assert llm.health()
    assert process_gone(pid)


def test_context_manager_stops_the_server_on_error(binary, model_dir):
    with pytest.raises(ZeroDivisionError):
        with mlxcel.LLM(model_dir, binary=binary) as llm:
            pid = llm.pid
            1 / 0
    assert process_gone(pid)


def test_garbage_collection_stops_the_server(binary, model_dir):
    llm = mlxcel.LLM(model_dir, binary=binary)
    pid = llm.pid
    llm.chat("hi", max_tokens=2)
    del llm
    gc.collect()
    assert process_gone(pid, GONE_WAIT_S)


def _run_script(code: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SOURCE_DIR / "python"))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True,
                            env=env, **kw)


def test_interpreter_exit_stops_the_server(binary, model_dir):
    # The script never closes its client: the finalizer stops the server at exit.
    p = _run_script(f"""
        import mlxcel
        llm = mlxcel.LLM({model_dir!r}, binary={binary!r})
        print(llm.pid, flush=True)
        keep = [llm]
    """)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0
    assert process_gone(int(out.split()[0]), GONE_WAIT_S)


def test_killed_parent_takes_the_server_down(binary, model_dir, tmp_path):
    # SIGKILL skips every Python cleanup; the kernel's parent-death signal ends the server.
    # (The temporary log would stay behind, so this one is kept under tmp_path.)
    log = str(tmp_path / "server.log")
    p = _run_script(f"""
        import sys, time, mlxcel
        llm = mlxcel.LLM({model_dir!r}, binary={binary!r}, log_file={log!r})
        print(llm.pid, flush=True)
        time.sleep(60)
    """)
    try:
        pid = int(p.stdout.readline().split()[0])
        assert not process_gone(pid)
        p.kill()
        p.wait(10)
        assert process_gone(pid, GONE_WAIT_S)
    finally:
        p.kill()
        p.wait()


def test_bad_model_surfaces_the_server_log(binary, tmp_path):
    with pytest.raises(mlxcel.MlxcelStartupError) as ei:
        mlxcel.LLM(str(tmp_path / "no-such-model"), binary=binary, startup_timeout=60)
    msg = str(ei.value)
    assert "server log" in msg and "no-such-model" in ei.value.log
    assert "no-such-model" in msg  # the log is in the message itself


def test_bad_port_managed(binary, model_dir):
    with pytest.raises(mlxcel.MlxcelStartupError) as ei:
        mlxcel.LLM(model_dir, binary=binary, port=70000)
    assert ei.value.returncode not in (None, 0) and "70000" in str(ei.value)


def test_port_in_use_managed(binary, model_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(mlxcel.MlxcelStartupError) as ei:
            mlxcel.LLM(model_dir, binary=binary, port=busy.getsockname()[1])
    assert "in use" in str(ei.value).lower()


def test_bad_port_connect():
    port = free_port("127.0.0.1")  # nothing listens there
    llm = mlxcel.LLM(base_url=f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(mlxcel.MlxcelConnectionError) as ei:
        llm.chat("hi")
    assert isinstance(ei.value, mlxcel.MlxcelError)
    with pytest.raises(mlxcel.MlxcelConnectionError):
        list(llm.chat_stream("hi"))
    with pytest.raises(mlxcel.MlxcelTimeoutError):
        llm.wait_ready(timeout=0.3)
    with pytest.raises(mlxcel.MlxcelConnectionError):
        mlxcel.LLM(base_url="/nonexistent/dir/mlxcel.sock").models()


def test_missing_binary():
    with pytest.raises(mlxcel.MlxcelError, match="not found"):
        mlxcel.LLM("models/mlxcel-demo", binary="/nonexistent/mlxcel")


def test_startup_timeout_stops_the_server(tmp_path):
    # A stand-in server that never listens: start-up times out, the log is kept, the child ends.
    fake = tmp_path / "mlxcel-server"
    fake.write_text("#!/bin/sh\necho \"fake server pid $$\"\nexec sleep 60\n")
    fake.chmod(0o755)
    with pytest.raises(mlxcel.MlxcelTimeoutError) as ei:
        mlxcel.LLM("m", binary=str(fake), startup_timeout=0.5)
    assert "did not become ready within 0.5 s" in str(ei.value)
    pid = int(ei.value.log.split("fake server pid ")[1].split()[0])
    assert process_gone(pid)


class SilentServer:
    """Accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.conns.append(self.sock.accept()[0])
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def test_request_timeout():
    silent = SilentServer()
    try:
        llm = mlxcel.LLM(base_url=f"http://127.0.0.1:{silent.port}", model="m", timeout=0.3)
        with pytest.raises(mlxcel.MlxcelTimeoutError):
            llm.chat("hi")
        with pytest.raises(mlxcel.MlxcelTimeoutError):
            list(llm.chat_stream("hi"))
        with pytest.raises(TimeoutError):  # also a builtin TimeoutError
            llm.generate("hi", timeout=0.2)
        llm.close()
    finally:
        silent.close()


def test_request_timeout_real_server(llm):
    # A long generation answered as one body: the read deadline passes first.
    with pytest.raises(mlxcel.MlxcelTimeoutError):
        llm.generate("The", max_tokens=300, temperature=3.0, seed=1, timeout=0.05)
    assert llm.chat("What is 12 + 30?", temperature=0, chat_template_kwargs={"enable_thinking": False}).text == "42"


def test_server_killed_mid_stream(binary, model_dir):
    llm = mlxcel.LLM(model_dir, binary=binary)
    pid = llm.pid
    # Sampling at a high temperature with a fixed seed: a long, deterministic answer.
    it = llm.stream("The", max_tokens=2000, temperature=3.0, seed=1)
    got = [next(it)]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(mlxcel.MlxcelError) as ei:
        for piece in it:
            got.append(piece)
    assert isinstance(ei.value, mlxcel.MlxcelConnectionError), repr(ei.value)
    assert len(got) < 2000
    with pytest.raises(mlxcel.MlxcelConnectionError):
        llm.models()  # nothing listens any more
    llm.close()  # reaps the dead child without hanging
    assert process_gone(pid)
