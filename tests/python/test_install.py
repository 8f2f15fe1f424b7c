"""The package installs offline into a venv built on Debian's Python (httpx from python3-httpx).

NOTE: the venv is made --without-pip and filled by the system pip (`pip --python`), which
checks the same offline build as `v/bin/pip install --no-build-isolation --no-index ./python`
without the slow bootstrap of a pip into the venv."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SOURCE_DIR

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs Debian's /usr/bin/python3")
def test_offline_venv_install(tmp_path: Path):
    # A copy of python/: an in-tree build would leave build/ and *.egg-info in the sources.
    src = tmp_path / "src"
    shutil.copytree(SOURCE_DIR / "python", src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "v"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "PIP_FIND_LINKS")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [SYSTEM_PYTHON, "-m", "pip", "--python", str(venv / "bin" / "python")]
    r = subprocess.run(pip + ["install", "-q", "--no-build-isolation", "--no-index", str(src)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import mlxcel, httpx; print(mlxcel.__file__); print(mlxcel.LLM.__name__, mlxcel.__version__)"],
                       env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    where, names = r.stdout.splitlines()
    assert where.startswith(str(venv)) and names == "LLM 0.1.0"
