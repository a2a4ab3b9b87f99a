"""Fixtures for tests of our own tooling: a private copy of the project.

Each test gets its own copy of the repository (tracked and untracked files,
without build/, .venv/ or .cache/) and a pin cache seeded from ours, so tests
can break things without touching the real checkout and need no network.
Commands run with a minimal environment (see `run`), so nothing of the
caller's, make's MAKEFLAGS above all, can send them to a real tree.

Tests marked `needs("quilt", ...)` are skipped where a tool is missing;
`make check` runs them (`-m needs`) and says how to install it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIN_LOCK = dict(
    line.split("=", 1)
    for line in (ROOT / "upstream.lock").read_text().splitlines()
    if line and not line.startswith("#")
)
PIN_FILE = PIN_LOCK["file"]
PIN_TAG = "v" + PIN_LOCK["version"]
SKIP_DIRS = {".git", "build", ".venv", ".cache", "dist", "__pycache__", ".pytest_cache"}
# The test environment's Python (make test's VENV, wherever it is).
PYTHON = sys.executable
# What a command may see of the caller's environment: nothing that names a path.
PASSED = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TMPDIR", "TZ", "USER"}
BASE_ENV = {
    # Never the registry, by accident.
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    "PIP_NO_INDEX": "1",
    # Nor the user's git configuration; a fixed identity instead.
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Test User",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test User",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs(*tools): needs these programs on PATH (make check runs it)"
    )


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs"):
        missing = [tool for tool in marker.args if shutil.which(tool) is None]
        if missing:
            pytest.skip(
                f"needs {', '.join(missing)} (make check runs it; "
                f"Debian/Ubuntu: apt-get install {' '.join(missing)})"
            )


def _seed_cache(cache: Path) -> None:
    """Copy our cached pin into CACHE, downloading it once if needed."""
    ours = ROOT / ".cache" / "pin" / PIN_FILE
    if not ours.exists():
        subprocess.run([str(ROOT / "tools" / "fetch_pin.sh")], check=True)
    cache.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ours, cache / PIN_FILE)


def copy_project(dest: Path) -> Path:
    """A copy of the project at DEST with a warm pin cache."""
    shutil.copytree(
        ROOT, dest, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS]
    )
    _seed_cache(dest / ".cache" / "pin")
    return dest


@pytest.fixture
def project(tmp_path):
    """A copy of the project at tmp_path/project with a warm pin cache."""
    return copy_project(tmp_path / "project")


def clean_env(env=None) -> dict:
    """The environment every command of the tests runs with."""
    full = {k: v for k, v in os.environ.items() if k in PASSED}
    full.update(BASE_ENV)
    full.update(env or {})
    return full


def run(cmd, cwd, env=None, check=False, **kwargs):
    """Run CMD (a list) in CWD; return the CompletedProcess with text output."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{cmd} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result
