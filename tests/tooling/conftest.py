"""Fixtures and helpers for tests of our own tooling: each test works on a private
copy of the project (without build/, .venv/, .cache/) with a warm pin cache, and
runs commands with a minimal environment (`run`): no network, and nothing of the
caller's, make's MAKEFLAGS above all, can send them to a real tree. Tests marked
`needs("quilt", ...)` are skipped where a tool is missing; `make check` runs them.
"""

import os
import re
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
SERIES = [
    line.split()[0]
    for line in (ROOT / "patches" / "series").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
LORA_UTILS = "python/sglang/srt/lora/utils.py"
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


# --- running commands ----------------------------------------------------------


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


def output(result):
    return result.stdout + result.stderr


def assert_fails(result, *needles):
    """RESULT exited non-zero and its output mentions every NEEDLE."""
    text = output(result)
    assert result.returncode != 0, f"expected a failure, got success:\n{text}"
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in:\n{text}"


def make_apply(project, sglang_dir=None, env=None):
    cmd = ["make", "-C", str(project), "apply"]
    if sglang_dir is not None:
        cmd.append(f"SGLANG_DIR={sglang_dir}")
    return run(cmd, cwd=project, env=env)


def git(repo, *args):
    return run(["git", "-C", str(repo), *args], cwd=repo, check=True).stdout.strip()


def head(repo):
    return git(repo, "rev-parse", "HEAD")


def porcelain(repo):
    # Ignored files count too: a clean tree here has nothing at all besides HEAD.
    cmd = ["git", "-C", str(repo), "status", "--porcelain", "--ignored", "-uall"]
    return run(cmd, cwd=repo, check=True).stdout.rstrip("\n")


def tree_bytes(root):
    """Every file under ROOT, .git included, as {relative path: (mode, bytes)}."""
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --- reading patches (independently of tools/patchinfo.py) ---------------------


def series(project: Path) -> list[Path]:
    """The patches of PROJECT's series, as tools/lib.sh reads it."""
    names = run(
        ["bash", "-c", "source tools/lib.sh && series_patches"], project, check=True
    ).stdout.split()
    return [project / "patches" / n for n in names]


def subject(patch: Path) -> str:
    """The Subject: header of a format-patch file, unfolded, minus [PATCH]."""
    folded = re.search(r"^Subject: (.*(?:\n[ \t].*)*)", patch.read_text(), re.M)[1]
    unfolded = " ".join(line.strip() for line in folded.splitlines())
    return re.sub(r"^\[PATCH[^\]]*\]\s*", "", unfolded)


def touched(patch: Path) -> set[str]:
    return set(re.findall(r"^diff --git a/(\S+) b/", patch.read_text(), re.M))


# --- project copies ------------------------------------------------------------


def copy_project(dest: Path) -> Path:
    """A copy of the project at DEST with a warm pin cache (downloaded once if need be)."""
    shutil.copytree(
        ROOT, dest, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS]
    )
    ours = ROOT / ".cache" / "pin" / PIN_FILE
    if not ours.exists():
        fetch = ["bash", "-c", "source tools/lib.sh && fetch_pin"]
        subprocess.run(fetch, cwd=ROOT, check=True)
    (dest / ".cache" / "pin").mkdir(parents=True)
    shutil.copy2(ours, dest / ".cache" / "pin" / PIN_FILE)
    return dest


@pytest.fixture
def project(tmp_path):
    """A copy of the project at tmp_path/project with a warm pin cache."""
    return copy_project(tmp_path / "project")


@pytest.fixture(scope="session")
def first_apply(tmp_path_factory):
    """A project copy and the result of its one `make apply`."""
    project = copy_project(tmp_path_factory.mktemp("applied") / "project")
    result = make_apply(project)
    assert result.returncode == 0, output(result)
    return project, result


@pytest.fixture
def applied(first_apply):
    """The project copy after `make apply`, shared: tests must not change it."""
    return first_apply[0]


@pytest.fixture
def applied_copy(applied, tmp_path):
    """A private copy of the applied project, for tests that change it."""
    return Path(shutil.copytree(applied, tmp_path / "project", symlinks=True))


@pytest.fixture
def pristine_clone(applied, tmp_path):
    """A user's clean sglang clone, its main at the pristine tag."""
    clone = tmp_path / "clone"
    tree = applied / "build" / "sglang"
    run(["git", "clone", "-q", str(tree), str(clone)], cwd=tmp_path, check=True)
    git(clone, "reset", "-q", "--hard", PIN_TAG)
    assert porcelain(clone) == ""
    return clone


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    """The pin unpacked once (upstream's layout, a git repo tagged with the pin's tag)."""
    dest = tmp_path_factory.mktemp("pin") / "sglang"
    unpack = 'source tools/lib.sh && unpack_wheel "$(fetch_pin)" "$0"'
    run(["bash", "-c", unpack, str(dest)], ROOT, check=True)
    return dest
