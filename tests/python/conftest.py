"""Fixtures for the Python client's tests: the server binary, the demo model, one shared
managed server. CTest sets MLXCEL_BIN (the built `mlxcel`) and PYTHONPATH (python/)."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

SOURCE_DIR = Path(os.environ.get("MLXCEL_SOURCE_DIR", Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(SOURCE_DIR / "python"))  # the package under test, not an installed copy

import mlxcel  # noqa: E402

DEMO_MODEL = SOURCE_DIR / "models" / "mlxcel-demo"


@pytest.fixture(scope="session")
def binary() -> str:
    path = os.environ.get("MLXCEL_BIN") or shutil.which("mlxcel")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("set MLXCEL_BIN to the built mlxcel binary (CTest does: ctest -R PythonClient)")
    return path


@pytest.fixture(scope="session")
def model_dir() -> str:
    if not (DEMO_MODEL / "model.safetensors").is_file():
        pytest.fail(f"the demo model is missing: {DEMO_MODEL}")
    return str(DEMO_MODEL)


@pytest.fixture(scope="session")
def llm(binary: str, model_dir: str):
    """One managed server for the tests that only send requests."""
    with mlxcel.LLM(model_dir, binary=binary, startup_timeout=60, timeout=60) as client:
        yield client


def process_gone(pid: int, wait_s: float = 0.0) -> bool:
    """True when no process with this pid exists (a zombie still counts as present: the
    client must reap its child). Waits up to ``wait_s`` for it to go."""
    deadline = time.monotonic() + wait_s
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# Async tests use pytest-asyncio (python3-pytest-asyncio) when it is active; without it
# they still run (never silently skipped) through asyncio.run.
_RUN_COROUTINES = False


def pytest_configure(config):
    global _RUN_COROUTINES
    _RUN_COROUTINES = not config.pluginmanager.hasplugin("asyncio")
    if _RUN_COROUTINES:
        config.addinivalue_line("markers", "asyncio: run the coroutine test with asyncio.run")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not _RUN_COROUTINES or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(pyfuncitem.obj(**args))
    return True
