"""Fixtures for tests of our own tooling: a private copy of the project.

Each test gets its own copy of the repository (tracked and untracked files,
without build/, .venv/ or .cache/) and a pin cache seeded from ours, so tests
can break things without touching the real checkout and need no network.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN_LOCK = dict(
    line.split("=", 1)
    for line in (ROOT / "upstream.lock").read_text().splitlines()
    if line and not line.startswith("#")
)
PIN_FILE = PIN_LOCK["file"]
SKIP_DIRS = {".git", "build", ".venv", ".cache", "dist", "__pycache__", ".pytest_cache"}


def _seed_cache(cache: Path) -> None:
    """Copy our cached pin into CACHE, downloading it once if needed."""
    ours = ROOT / ".cache" / "pin" / PIN_FILE
    if not ours.exists():
        subprocess.run([str(ROOT / "tools" / "fetch_pin.sh")], check=True)
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ours, cache / PIN_FILE)


@pytest.fixture
def project(tmp_path):
    """A copy of the project at tmp_path/project with a warm pin cache."""
    dest = tmp_path / "project"
    shutil.copytree(
        ROOT, dest, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS]
    )
    _seed_cache(dest / ".cache" / "pin")
    return dest


def run(cmd, cwd, env=None, check=False):
    """Run CMD (a list) in CWD; return the CompletedProcess with text output."""
    # make test exports these for itself; a test's own make must not inherit them.
    inherited = {"SGLANG_DIR", "VENV", "PYTHON", "WHEELHOUSE", "PYTEST_ARGS"}
    full_env = {k: v for k, v in os.environ.items() if k not in inherited}
    full_env.update(env or {})
    # Never let a test reach the package registry by accident.
    full_env.setdefault("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    full_env.setdefault("PIP_NO_INDEX", "1")
    result = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result
