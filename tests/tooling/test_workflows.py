"""The upstream and downstream workflows, failure paths included, as a new user
runs them, offline, each on a private copy of the project (quilt or patch: `needs`).
"""

import base64
import hashlib
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import (
    PIN_TAG,
    PYTHON,
    ROOT,
    assert_fails,
    clean_env,
    git,
    run,
    series,
    subject,
    touched,
    tree_bytes,
)

SECTIONS = [
    "## Motivation",
    "## Modifications",
    "## Accuracy Tests",
    "## Benchmarking and Profiling",
    "## Checklist",
]
DEP3_TRAILER = re.compile(r"^(Origin|Forwarded|Last-Update):", re.M)
TOOL_DIRS = ("build", ".cache")
ROW_RE = re.compile(r"^\| (\d+) \| `(\S+)` \| (.*) \|$", re.M)
HUNK_RE = re.compile(
    r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@.*\n((?:[ +\\-].*\n?)*)", re.M
)


def status(clone: Path) -> tuple[str, str, str]:
    """What must not change when make pr refuses or fails."""
    return (
        git(clone, "rev-parse", "HEAD"),
        git(clone, "branch", "--list", "--format=%(refname:short)"),
        git(clone, "status", "--porcelain", "--untracked-files=all"),
    )


def editable_hunk(patches):
    """The first hunk that removes a line after 3 lines of context, in a file no
    earlier patch touches (so its line numbers are the pristine file's): its patch,
    path, start, lines and the pristine line number of its first removed line."""
    seen = set()
    for patch in patches:
        for block in re.split(r"(?m)^diff --git ", patch.read_text())[1:]:
            path = re.search(r"^--- a/(\S+)", block, re.M)  # None: a new file
            for h in HUNK_RE.finditer(block) if path and path[1] not in seen else []:
                lines = h[2].splitlines()
                removed = next((i for i, x in enumerate(lines) if x[:1] == "-"), 0)
                if removed >= 3 and all(x[:1] == " " for x in lines[:3]):
                    old_line = int(h[1]) + sum(x[:1] != "+" for x in lines[:removed])
                    return patch, path[1], int(h[1]), lines, old_line
        seen |= touched(patch)
    pytest.skip("no patch has a hunk to edit")


def edit_line(text: str, number: int, suffix: str) -> str:
    """TEXT with SUFFIX appended to its line NUMBER (1-based)."""
    lines = text.splitlines(keepends=True)
    lines[number - 1] = lines[number - 1].rstrip("\n") + suffix + "\n"
    return "".join(lines)


# make pr


def test_pr_commits_the_series_on_a_new_branch_and_writes_the_body(
    applied_copy, pristine_clone
):
    project, clone = applied_copy, pristine_clone
    result = run(["make", "pr", f"SGLANG_DIR={clone}"], project)
    assert result.returncode == 0, result.stderr
    assert git(clone, "symbolic-ref", "--short", "HEAD") == "moe-lora-batch-info"
    count = str(len(series(project)))
    assert git(clone, "rev-list", "--count", f"{PIN_TAG}..HEAD") == count
    assert git(clone, "status", "--porcelain") == ""
    # The same tree as make apply's, with upstream-style messages.
    ours = git(project / "build" / "sglang", "rev-parse", "HEAD^{tree}")
    assert git(clone, "rev-parse", "HEAD^{tree}") == ours
    messages = git(clone, "log", "--format=%B%x00", f"{PIN_TAG}..HEAD")
    assert not DEP3_TRAILER.search(messages), messages
    subjects = git(clone, "log", "--reverse", "--format=%s", f"{PIN_TAG}..HEAD")
    assert subjects.splitlines() == [subject(p) for p in series(project)]

    body = (project / "build" / "pr-body.md").read_text()
    positions = [body.index(f"\n{s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    for patch_subject in subjects.splitlines():
        assert patch_subject in body

    # A second run finds the branch and changes nothing.
    before = status(clone)
    again = run(["make", "pr", f"SGLANG_DIR={clone}"], project)
    assert again.returncode != 0
    assert "already has a branch moe-lora-batch-info" in again.stderr
    assert status(clone) == before


def test_pr_failure_paths_leave_the_clone_as_it_was(
    applied_copy, pristine_clone, tmp_path
):
    project, clone = applied_copy, pristine_clone
    usage = run(["make", "pr"], project)
    assert usage.returncode != 0 and "usage: make pr SGLANG_DIR=" in usage.stderr
    missing = run(["make", "pr", f"SGLANG_DIR={tmp_path / 'nope'}"], project)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    before = status(clone)
    bad_base = run(["make", "pr", f"SGLANG_DIR={clone}", "BASE=v9.9.9"], project)
    assert bad_base.returncode != 0
    assert "BASE v9.9.9 is not a commit" in bad_base.stderr
    assert status(clone) == before

    # A dirty clone: refused, the edits kept, no PR body written.
    target = clone / "python/sglang/srt/lora/layers.py"
    pristine_text = target.read_text()
    target.write_text(pristine_text + "# local edit\n")
    (clone / "notes.txt").write_text("untracked\n")
    before = status(clone)
    dirty = run(["make", "pr", f"SGLANG_DIR={clone}"], project)
    assert dirty.returncode != 0
    assert "uncommitted changes or untracked files" in dirty.stderr
    assert status(clone) == before
    assert target.read_text().endswith("# local edit\n")
    assert not (project / "build" / "pr-body.md").exists()
    target.write_text(pristine_text)
    (clone / "notes.txt").unlink()

    # Upstream moved on: a line the series changes was edited (a real conflict).
    patch, path, start, lines, old_line = editable_hunk(series(project))
    target = clone / path
    text = target.read_text()
    target.write_text(edit_line(text, old_line, "  # upstream edit"))
    git(clone, "commit", "--quiet", "-am", "upstream edit")
    before = status(clone)
    result = run(["make", "pr", f"SGLANG_DIR={clone}", "BASE=main"], project)
    assert result.returncode != 0
    assert patch.name in result.stderr and "does not apply to main" in result.stderr
    assert "CONFLICT" in result.stderr
    assert status(clone) == before
    assert not (clone / ".git" / "rebase-apply").exists()

    # Upstream only touched the context of a hunk: git am -3 merges it.
    git(clone, "reset", "--quiet", "--hard", "HEAD~1")
    target.write_text(edit_line(text, start, "  # nearby edit"))
    git(clone, "commit", "--quiet", "-am", "nearby edit")
    body = tmp_path / "body.md"
    merged = run(
        ["make", "pr", f"SGLANG_DIR={clone}", "BASE=main", f"PR_BODY={body}"], project
    )
    assert merged.returncode == 0, merged.stderr
    assert git(clone, "rev-list", "--count", "main..HEAD") == str(len(series(project)))
    assert "# nearby edit" in target.read_text()
    added = next((x[1:] for x in lines if x.startswith("+") and x[1:].strip()), None)
    assert added is None or added in target.read_text()
    assert body.exists()


def test_pr_body_quotes_recorded_results_and_says_what_is_missing(project, tmp_path):
    docs = project / "docs"
    for name in ("gpu-validation.md", "benchmarks.md"):
        (docs / name).unlink(missing_ok=True)
    out = tmp_path / "body.md"
    cmd = ["python3", "tools/pr_body.py", "--base", PIN_TAG, "--out", str(out)]
    cmd += [str(p) for p in series(project)]
    run(cmd, project, check=True)
    body = out.read_text()
    for heading in SECTIONS:
        assert f"\n{heading}\n" in body
    assert "No GPU test result is recorded yet" in body
    assert "No benchmark result is recorded yet" in body
    assert "- [x] Add unit tests" in body
    assert "- [ ] Provide accuracy and speed benchmark results" in body

    (docs / "benchmarks.md").write_text(
        "# Benchmarks\n\nNVIDIA H100 80GB HBM3, 2026-11-20.\n\n"
        "| layers | before | after |\n|---|---|---|\n| 48 | 1.00 ms | 0.10 ms |\n"
    )
    (docs / "gpu-validation.md").write_text(
        "# GPU validation\n\n19 passed in 12.3 s (no card or date here)\n"
    )
    result = run(cmd, project, check=True)
    body = out.read_text()
    assert "Recorded on NVIDIA H100 80GB HBM3; dates: 2026-11-20." in body
    assert "| 48 | 1.00 ms | 0.10 ms |" in body
    assert "19 passed in 12.3 s" in body
    assert "names no card and date for its figures" in body
    assert "docs/gpu-validation.md names no card and date" in result.stderr
    assert "- [x] Provide accuracy and speed benchmark results" in body


# check_patches.py


def check_patches(project):
    return run(["python3", "tools/check_patches.py"], project)


def test_check_patches_catches_each_kind_of_problem(project):
    patches = series(project)
    series_file = project / "patches" / "series"
    original = series_file.read_text()

    def expect(fragment):
        result = check_patches(project)
        assert result.returncode != 0
        assert fragment in result.stderr, result.stderr

    series_file.write_text(original + "0006-missing.patch\n")
    expect("lists 0006-missing.patch, but patches/0006-missing.patch does not exist")
    series_file.write_text(original + patches[0].name + "\n")
    expect(f"lists {patches[0].name} more than once")
    series_file.write_text(original)

    orphan = project / "patches" / "0009-orphan.patch"
    orphan.write_text(patches[0].read_text().replace("Add MoELoRABatchInfo", "Other"))
    expect("patches/0009-orphan.patch is not in patches/series")
    expect("duplicates the diff of")
    orphan.unlink()

    last = patches[-1]
    text = last.read_text()
    last.write_text(text.rstrip("\n"))
    expect(f"patches/{last.name}: does not end with a newline")
    last.write_text(text.replace("Last-Update: ", "Last-Update: 2026-13-45\nX: ", 1))
    expect("Last-Update '2026-13-45' is not a date YYYY-MM-DD")
    last.write_text(re.sub(r"^Forwarded: .*\n", "", text, flags=re.M))
    expect(f"patches/{last.name}: no Forwarded field")
    last.write_text(re.sub(r"^Origin: .*$", "Origin: somewhere", text, flags=re.M))
    expect("Origin 'somewhere' is not")
    applied = "Applied-Upstream: 0.5.13, https://github.com/sgl-project/sglang/pull/1"
    last.write_text(text.replace("Last-Update: ", f"{applied}\nLast-Update: ", 1))
    assert check_patches(project).returncode == 0  # DEP-3's optional field
    last.write_text(
        text.replace(
            "Last-Update: ", "Applied-Upstream: 0.5.13 and later\nLast-Update: ", 1
        )
    )
    expect("Applied-Upstream '0.5.13 and later' is not")
    last.write_text(text)

    # A hunk in a file the description never mentions.
    first = patches[0]
    text = first.read_text()
    stray = (
        "diff --git a/python/sglang/srt/lora/lora_config.py "
        "b/python/sglang/srt/lora/lora_config.py\n"
        "--- a/python/sglang/srt/lora/lora_config.py\n"
        "+++ b/python/sglang/srt/lora/lora_config.py\n"
        "@@ -1,1 +1,2 @@\n line one\n+unrelated = 1\n"
    )
    first.write_text(text + stray)
    expect("touches python/sglang/srt/lora/lora_config.py, which its description")
    # The series itself, as the project has it, passes.
    first.write_text(text)
    result = check_patches(project)
    assert result.returncode == 0, result.stderr
    assert f"{len(patches)} patches" in result.stderr


# The distro tools: patch -p1 -F0, quilt, -p2


def path_without(tmp_path, *missing) -> Path:
    """A directory to use as PATH: every program on PATH but MISSING."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in filter(Path.is_dir, map(Path, clean_env()["PATH"].split(":"))):
        for tool in directory.iterdir():
            if tool.name not in missing and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    return bin_dir


@pytest.mark.needs("quilt", "patch")
def test_check_distro_refuses_a_patch_that_needs_an_offset(project):
    # make check runs check_distro.sh on the real series; here, its failure path.
    patch = next(
        p
        for p in series(project)
        if re.search(r"^@@ -[1-9]\d{2,}", p.read_text(), re.M)
    )
    shifted = re.sub(
        r"^@@ -([1-9]\d{2,})(,\d+)? \+(\d+)",
        lambda m: f"@@ -{int(m[1]) - 4}{m[2] or ''} +{int(m[3]) - 4}",
        patch.read_text(),
        count=1,
        flags=re.M,
    )
    patch.write_text(shifted)
    result = run(["tools/check_distro.sh"], project)
    assert result.returncode != 0
    assert f"{patch.name} (patch -p1 -F0) does not apply exactly" in result.stderr


def test_without_quilt_and_patch_the_tests_skip_and_the_check_says_why(
    project, tmp_path
):
    # make check: one line naming the missing tool and how to install it.
    bin_dir = path_without(tmp_path, "quilt", "patch")
    result = run(["bash", "tools/check_distro.sh"], project, env={"PATH": str(bin_dir)})
    assert_fails(result, "patch is not installed", "apt-get install patch")
    # make test: skipped with the way to get them, not failed.
    result = run(
        [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"]
        + ["tests/tooling", "-m", "needs"],
        project,
        env={"PATH": str(bin_dir)},
    )
    assert result.returncode == 0, result.stdout
    marked = sum(
        len(re.findall(r"^@pytest\.mark\.needs\(", f.read_text(), re.M))
        for f in (project / "tests" / "tooling").glob("test_*.py")
    )
    assert re.search(rf"\b{marked} skipped, \d+ deselected", result.stdout)
    assert "needs quilt, patch (make check runs it" in result.stdout
    assert "needs patch (make check runs it; Debian/Ubuntu: apt-get install patch)" in (
        result.stdout
    )


# make dist


def test_dist_is_reproducible_and_refuses_a_broken_series(project, tmp_path):
    # A missing patch, or one a python/-rooted tree cannot take: no tarball.
    series_file, first = project / "patches" / "series", series(project)[0]
    good_series, good_patch = series_file.read_text(), first.read_text()
    series_file.write_text(good_series + "0006-missing.patch\n")
    assert_fails(run(["make", "dist"], project), "0006-missing.patch does not exist")
    series_file.write_text(good_series)
    test_file = "test/registered/lora/test_extra.py"
    first.write_text(
        good_patch
        + f"diff --git a/{test_file} b/{test_file}\nnew file mode 100644\n"
        + f"--- /dev/null\n+++ b/{test_file}\n@@ -0,0 +1 @@\n+x = 1\n"
    )
    mixed = run(["make", "dist"], project)
    assert_fails(mixed, f"{first.name} touches python/ and other paths")
    assert not (project / "build" / "dist").exists()
    first.write_text(good_patch)

    out = run(["make", "dist"], project, check=True).stdout
    tarball = Path(re.search(r"^(/\S+\.tar\.gz)$", out, re.M)[1])
    assert tarball.parent == project / "build" / "dist"  # build/ only
    newest = max(
        re.search(r"^Last-Update: (\S+)", p.read_text(), re.M)[1]
        for p in series(project)
    )
    version = PIN_TAG[1:]
    assert (
        tarball.name
        == f"sglang-moe-lora-info-{version}-{newest.replace('-', '')}.tar.gz"
    )
    saved = tmp_path / "first.tar.gz"
    shutil.copy(tarball, saved)
    # Different file times and umask must not matter.
    for p in (project / "patches").iterdir():
        p.touch()
    run(["bash", "-c", "umask 077 && make dist"], project, check=True)
    assert tarball.read_bytes() == saved.read_bytes()

    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
        assert len({m.mtime for m in members}) == 1
        top = names[0]
        for wanted in (
            "README",
            "SHA256SUMS",
            "patches/series",
            "patches/series.python-root",
            "upstream.lock",
        ):
            assert f"{top}/{wanted}" in names
        tar.extractall(tmp_path / "x", filter="data")
    check = run(["sha256sum", "-c", "SHA256SUMS"], tmp_path / "x" / top, check=True)
    files = [m for m in members if m.isfile() and not m.name.endswith("/SHA256SUMS")]
    assert check.stdout.count(": OK") == len(files)
    assert "patch -p2" in (tmp_path / "x" / top / "README").read_text()


# make rebase (offline: synthetic newer trees)


def newer_tree(pristine, dest, patches):
    """A 'newer release': the first patch already in, lines shifted in a file
    that only later patches change. Returns the tree and that file."""
    tree = Path(shutil.copytree(pristine, dest, ignore=shutil.ignore_patterns(".git")))
    run(["patch", "-p1", "-F0", "-i", str(patches[0])], tree, check=True)
    later = sorted(set().union(*map(touched, patches[1:])) - touched(patches[0]))
    shifted = next(p for p in later if (pristine / p).is_file())
    path = tree / shifted
    path.write_text("# an upstream comment\n# shifting every line\n" + path.read_text())
    return tree, shifted


@pytest.mark.needs("patch")
def test_rebase_reports_each_kind_of_result(project, pristine, tmp_path):
    patches = series(project)
    tree, shifted = newer_tree(pristine, tmp_path / "newer", patches)
    result = run(
        ["make", "--no-print-directory", "rebase", f"UPSTREAM={tree}"], project
    )
    assert result.returncode == 0, result.stderr
    rows = ROW_RE.findall(result.stdout)
    assert [r[2] for r in rows] == ["already upstream (reverse-applies)"] + [
        "applies with offset" if shifted in touched(p) else "applies cleanly"
        for p in patches[1:]
    ]
    assert re.search(
        rf"{re.escape(shifted)}: hunk #1 at line \d+ \(\+2\)", result.stdout
    )

    # Upstream wrote the same class its own way: no hunk reverse-applies.
    # (MoELoRABatchInfo and its token_lora_mapping are the contract of the series.)
    utils = tree / "python/sglang/srt/lora/utils.py"
    text = utils.read_text()
    assert "class MoELoRABatchInfo:" in text
    utils.write_text(
        re.sub(r"    # [^\n]*\n", "", text).replace(
            "    token_lora_mapping: torch.Tensor\n",
            "    token_lora_mapping: torch.Tensor\n    num_tokens: int = 0\n",
        )
    )
    # Upstream edited a line that a later patch changes: a conflict.
    rest = [p for p in patches[1:] if not touched(p) & touched(patches[0])]
    patch, path, start, lines, old_line = editable_hunk(rest)
    # newer_tree shifted one file by two lines.
    target = tree / path
    text = target.read_text()
    if text.startswith("# an upstream comment\n"):
        old_line += 2
    target.write_text(edit_line(text, old_line, "  # edit"))

    result = run(["tools/rebase.sh", str(tree)], project)
    assert result.returncode == 1, result.stderr
    rows = ROW_RE.findall(result.stdout)
    assert rows[0][2] == "already upstream (equivalent change present)"
    assert dict((r[1], r[2]) for r in rows)[patch.name] == "conflicts"
    assert re.search(r"present\)\*\*: `MoELoRABatchInfo` in python/", result.stdout)
    assert re.search(rf"{re.escape(Path(path).name)}: Hunk #\d+ FAILED", result.stdout)
    assert "```diff" in result.stdout
    added = next(x for x in lines if x.startswith("+") and x[1:].strip())
    assert added in result.stdout


def test_rebase_failure_paths(project, tmp_path):
    usage = run(["make", "rebase"], project)
    assert usage.returncode != 0 and "usage: make rebase UPSTREAM=" in usage.stderr
    junk = run(["tools/rebase.sh", "not-a-version"], project)
    assert junk.returncode != 0 and "neither a directory" in junk.stderr
    (tmp_path / "empty").mkdir()
    empty = run(["tools/rebase.sh", str(tmp_path / "empty")], project)
    assert empty.returncode != 0 and "has no python/sglang/" in empty.stderr
    # A registry that has other releases only: one line, not pip's version list,
    # and no empty cache directory for the version; a download a killed run left
    # is removed.
    stale = project / ".cache" / "upstream" / ".download.abc123"
    stale.mkdir(parents=True)
    (stale / "sglang-9.9.9-py3-none-any.whl").write_bytes(b"half")
    index = tmp_path / "index"
    index.mkdir()
    for v in ("0.1.0", "0.2.0"):
        (index / f"sglang-{v}-py3-none-any.whl").write_bytes(b"")
    missing = run(
        ["make", "rebase", "UPSTREAM=9.9.9"],
        project,
        env={"PIP_FIND_LINKS": str(index)},
    )
    assert missing.returncode != 0
    errors = [
        x for x in missing.stderr.splitlines() if not x.startswith(("make", "==>"))
    ]
    assert len(errors) == 1, missing.stderr
    assert (
        "sglang 9.9.9 is not on the package registry (newest there: 0.2.0" in errors[0]
    )
    assert "0.1.0" not in missing.stderr
    assert not (project / ".cache" / "upstream" / "9.9.9").exists()
    assert not list((project / ".cache" / "upstream").glob(".download.*"))


# README and docs


def test_the_targets_write_only_build_and_cache(project, pristine_clone):
    # Everything else in the checkout stays byte for byte (make refresh rewrites
    # patches/ and the mirror, to the same bytes when nothing was committed).
    def rest():
        files = tree_bytes(project)
        return {k: v for k, v in files.items() if k.split("/")[0] not in TOOL_DIRS}

    before = rest()
    for target in ("apply", "refresh", "dist", "unapply", "apply", "help"):
        run(["make", target], project, check=True)
    run(["make", "pr", f"SGLANG_DIR={pristine_clone}"], project, check=True)
    run(["python3", "tools/check_patches.py"], project, check=True)
    assert rest() == before
    tops = {path.split("/")[0] for path in before}
    assert {p.name for p in project.iterdir()} - tops == set(TOOL_DIRS)


def test_make_help_lists_every_target(project):
    makefile = (project / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z0-9-]*):.*## ", makefile, re.M)
    phony = " ".join(re.findall(r"^\.PHONY: (.*)$", makefile, re.M)).split()
    assert sorted(targets) == sorted(phony)
    result = run(["make", "--no-print-directory", "help"], project, check=True)
    assert [line.split()[0] for line in result.stdout.splitlines()] == targets


def fake_wheel(index: Path, name: str, version: str) -> None:
    """A wheel of one module NAME whose __version__ is VERSION."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"__version__ = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(index / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


@pytest.mark.parametrize("source", ["registry", "wheelhouse"])
def test_building_the_environment_shows_progress(project, tmp_path, source):
    # A registry (or an offline wheelhouse) holding stand-ins for torch and triton
    # (make_venv.sh prints their versions at the end), not 5 GB of the real ones.
    index = tmp_path / "index"
    index.mkdir()
    for name in ("torch", "triton"):
        fake_wheel(index, name, "0.0")
    if source == "registry":
        requirements = project / "requirements" / "test.txt"
        args, env = [], {"PIP_FIND_LINKS": str(index)}
        note = "about 5 GB, 3-4 minutes the first time"
        failure = ("error: installing ", "failed (is the package registry reachable?)")
    else:
        requirements = project / "requirements" / "gpu-offline.txt"
        args, env = [f"WHEELHOUSE={index}"], {}
        note = f"offline from {index}"
        failure = ("error: offline install from ", "rebuild it with 'make gpu-wheels'")
    requirements.write_text("torch==0.0\ntriton==0.0\n")
    result = run(["make", "venv", *args], project, env=env)
    assert result.returncode == 0, result.stderr
    assert note in result.stderr
    # pip's own lines, as it works through the requirements.
    assert "Installing collected packages: t" in result.stderr
    assert "environment ready: torch 0.0 triton 0.0" in result.stderr
    again = run(["make", "venv", *args], project, check=True)
    assert "is up to date" in again.stderr
    # A requirement the registry lacks: one line naming the cause.
    requirements.write_text("torch==0.0\nabsent==1.0\n")
    failed = run(["make", "venv", *args], project, env=env)
    assert failed.returncode != 0
    errors = [x for x in failed.stderr.splitlines() if x.startswith("error: ")]
    assert errors[-1].startswith(failure[0]), failed.stderr
    assert errors[-1].endswith(failure[1])


def test_every_script_is_strict(project):
    # Every script stops at the first failing command, unset variable or pipe
    # (lib.sh is sourced by the others, after their own such line).
    scripts = [project / "apply.sh", project / ".ci" / "run"]
    scripts += [p for p in (project / "tools").glob("*.sh") if p.name != "lib.sh"]
    for script in scripts:
        code = [x for x in script.read_text().splitlines() if not x.startswith("#")]
        assert code[0] == "set -euo pipefail", script


def test_docs_hold_project_facts_only(project):
    # They reach an upstream PR body (make pr): no first person, no account of
    # the machines or the sessions they were written on.
    narrative = re.compile(
        r"(?-i:(?<![\w/.-])I(?![\w/.-]))|\b(?:my|lent|sessions?|device time)\b", re.I
    )
    found = [
        f"{doc.relative_to(project)}:{n}: {line}"
        for doc in [project / "README.md", *sorted((project / "docs").rglob("*.md"))]
        for n, line in enumerate(doc.read_text().splitlines(), 1)
        if narrative.search(line)
    ]
    assert found == []


# The offline GPU wheelhouse


def test_the_kernel_wheel_is_trimmed_to_what_the_lora_and_moe_paths_load(tmp_path):
    info, new_info = (f"sglang_kernel-0.4.2.post2{v}.dist-info" for v in ("", "+sm90"))
    kept = [
        "sgl_kernel/__init__.py",
        "sgl_kernel/load_utils.py",
        "sgl_kernel/sm90/common_ops.abi3.so",
        "sgl_kernel/spatial_ops.abi3.so",
        "triton_kernels/__init__.py",
    ]
    dropped = [
        "sgl_kernel/sm100/common_ops.abi3.so",
        "sgl_kernel/flash_ops.abi3.so",
        "sgl_kernel/flashmla_ops.abi3.so",
        "lib/libmscclpp.so",
        f"{info}/RECORD",
    ]
    src = tmp_path / "sglang_kernel-0.4.2.post2-cp310-abi3-manylinux2014_x86_64.whl"
    with zipfile.ZipFile(src, "w") as whl:
        for name in kept + dropped:
            whl.writestr(name, f"{name}\n")
        whl.writestr(f"{info}/METADATA", "Name: sglang-kernel\nVersion: 0.4.2.post2\n")
    name = "sglang_kernel-0.4.2.post2+sm90-cp310-abi3-manylinux2014_x86_64.whl"

    def trim(out: Path):
        out.mkdir()
        trim = [PYTHON, str(ROOT / "tools" / "wheelhouse.py"), "trim", str(src)]
        return run([*trim, str(out), "sm90"], tmp_path)

    assert trim(tmp_path / "out").stdout.strip() == name
    with zipfile.ZipFile(tmp_path / "out" / name) as whl:
        assert whl.namelist() == kept + [f"{new_info}/METADATA", f"{new_info}/RECORD"]
        metadata = whl.read(f"{new_info}/METADATA").decode()
        assert "Version: 0.4.2.post2+sm90\n" in metadata
        *record, last = whl.read(f"{new_info}/RECORD").decode().splitlines()
        assert last == f"{new_info}/RECORD,,"
        for path, digest, size in (line.split(",") for line in record):
            data = whl.read(path)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            assert (digest, int(size)) == (f"sha256={b64.decode()}", len(data))
    # The same input gives the same bytes.
    trim(tmp_path / "again")
    first, second = ((tmp_path / d / name).read_bytes() for d in ("out", "again"))
    assert first == second

    # A wheel without the SM90 library would be unusable: refused, nothing written.
    with zipfile.ZipFile(src, "w") as whl:
        whl.writestr("sgl_kernel/__init__.py", "")
    result = trim(tmp_path / "refused")
    assert_fails(result, "has no sgl_kernel/load_utils.py; the trim would be unusable")
    assert list((tmp_path / "refused").iterdir()) == []
