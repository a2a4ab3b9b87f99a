"""Tests of `make apply` and the tooling around it: every failure path stops with a
message naming the cause and leaves no half-patched tree; every success path leaves a
clean, reproducible tree.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import (
    LORA_UTILS,
    PIN_FILE,
    PIN_TAG,
    PYTHON,
    SERIES,
    assert_fails,
    clean_env,
    copy_project,
    git,
    head,
    make_apply,
    output,
    porcelain,
    run,
    subject,
    touched,
    tree_bytes,
)

THIRD = SERIES[2]


def assert_no_tree(project):
    """No build/sglang and no half-built scratch tree next to it."""
    build = project / "build"
    leftovers = [p.name for p in build.iterdir()] if build.exists() else []
    assert [n for n in leftovers if n != ".lock"] == [], leftovers


def break_third_patch(project):
    """Give PROJECT's 3rd patch a context line upstream lacks."""
    patch = project / "patches" / THIRD
    lines = patch.read_text().splitlines(keepends=True)
    hunk = next(i for i, x in enumerate(lines) if x.startswith("@@"))
    ctx = next(i for i in range(hunk + 1, len(lines)) if lines[i].startswith(" "))
    lines[ctx] = " # this context line is not in the pinned sglang\n"
    patch.write_text("".join(lines))


def wrong_sha256(project):
    lock = project / "upstream.lock"
    real = lock.read_text()
    wrong = re.sub(r"^sha256=.*$", "sha256=" + "0" * 64, real, flags=re.M)
    assert wrong != real
    lock.write_text(wrong)


def last_line(result):
    lines = [x for x in result.stderr.splitlines() if x and not x.startswith("make")]
    return lines[-1] if lines else ""


@pytest.fixture
def patched_clone(applied, pristine_clone):
    """The pristine clone after `make apply SGLANG_DIR=` (working tree only)."""
    assert make_apply(applied, sglang_dir=pristine_clone).returncode == 0
    return pristine_clone


# --- 1, 2: a good apply (applying again: test_bytecode_...) ----------------------------------


def test_apply_builds_pristine_tag_plus_one_commit_per_patch(first_apply):
    project, result = first_apply
    text = output(result)
    # Offline on a warm cache: the pin comes from the cache, re-verified.
    assert "cached, sha256 verified" in text
    assert "downloading" not in text
    # Each patch is reported, in series order.
    assert re.findall(r"applied (\S+\.patch)", text) == SERIES

    tree = project / "build" / "sglang"
    pristine = git(tree, "rev-parse", f"{PIN_TAG}^{{commit}}")
    assert git(tree, "rev-list", "--max-parents=0", "HEAD") == pristine

    # The tag is exactly the wheel's sglang/ package, laid out as python/sglang/.
    with zipfile.ZipFile(project / ".cache" / "pin" / PIN_FILE) as zf:
        wheel = {
            "python/" + m: hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            for m in zf.namelist()
            if m.startswith("sglang/") and not m.endswith("/")
            for data in [zf.read(m)]
        }
    tagged = {}
    for line in git(tree, "ls-tree", "-r", PIN_TAG).splitlines():
        meta, path = line.split("\t", 1)
        tagged[path] = meta.split()[2]
    assert tagged == wheel

    # One commit per patch, same subjects, same files, in order.
    commits = git(tree, "rev-list", "--reverse", f"{PIN_TAG}..HEAD").splitlines()
    assert len(commits) == len(SERIES)
    for commit, name in zip(commits, SERIES):
        patch = project / "patches" / name
        assert git(tree, "log", "-1", "--format=%s", commit) == subject(patch)
        changed = git(tree, "diff-tree", "--no-commit-id", "--name-only", "-r", commit)
        assert set(changed.splitlines()) == touched(patch), name
    assert porcelain(tree) == ""


# --- 3: hash mismatch --------------------------------------------------------


def test_a_changed_or_wrong_lock_after_a_build(applied_copy):
    tree = applied_copy / "build" / "sglang"
    before = head(tree)
    # A change that keeps the pin: the tree is built again, to the same result.
    lock = applied_copy / "upstream.lock"
    lock.write_text(lock.read_text() + "# a comment\n")
    result = make_apply(applied_copy)
    assert result.returncode == 0, output(result)
    assert "upstream.lock or patches/ changed" in output(result)
    assert "nothing to do" not in output(result)
    assert git(tree, "rev-parse", "HEAD^{tree}") == git(
        tree, "rev-parse", f"{before}^{{tree}}"
    )
    # A wrong pin: blamed on the lock (the cached file is intact, deleting it would
    # not help), and the existing tree is kept as it was.
    wrong_sha256(applied_copy)
    result = make_apply(applied_copy)
    assert_fails(result, "sha256", PIN_FILE)
    assert "upstream.lock is wrong" in last_line(result), output(result)
    assert "delete" not in output(result) and "nothing to do" not in output(result)
    assert (applied_copy / ".cache" / "pin" / PIN_FILE).exists()
    assert head(tree) == before and porcelain(tree) == ""


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_cached_pin_is_refused(project, damage):
    pin = project / ".cache" / "pin" / PIN_FILE
    data = bytearray(pin.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    pin.write_bytes(bytes(data))
    result = make_apply(project)
    assert_fails(result, "sha256", f"cached pin {pin} is corrupt")
    assert "is corrupt" in last_line(result) and "delete it" in last_line(result)
    # The corrupt file was not used: nothing unpacked, nothing applied.
    assert "applied 0001" not in output(result)
    assert_no_tree(project)


# --- 4: a patch that does not apply ------------------------------------------


def test_broken_patch_fresh_leaves_no_tree(project):
    break_third_patch(project)
    result = make_apply(project)
    assert_fails(result, THIRD, "does not apply")
    assert "series applied" not in output(result)
    assert_no_tree(project)


def test_broken_patch_keeps_existing_build_and_clone_as_they_were(
    applied_copy, pristine_clone
):
    tree = applied_copy / "build" / "sglang"
    before = head(tree)
    files, clone_files = tree_bytes(tree), tree_bytes(pristine_clone)
    good = (applied_copy / "patches" / THIRD).read_text()
    break_third_patch(applied_copy)
    result = make_apply(applied_copy)
    assert_fails(result, THIRD, "does not apply")
    assert tree_bytes(tree) == files  # .git included
    result = run(["./apply.sh", str(pristine_clone)], cwd=applied_copy)
    assert_fails(result, THIRD, "does not apply")
    assert tree_bytes(pristine_clone) == clone_files
    assert head(tree) == before
    assert porcelain(tree) == ""
    assert [p.name for p in tree.parent.iterdir() if p.name != ".lock"] == ["sglang"]
    # The good series still counts as applied afterwards.
    (applied_copy / "patches" / THIRD).write_text(good)
    again = make_apply(applied_copy)
    assert again.returncode == 0, output(again)
    assert "nothing to do" in output(again)


# --- 5: dirty or already patched trees ---------------------------------------


@pytest.mark.parametrize("change", ["untracked", "modified", "series and an edit"])
def test_dirty_clone_is_refused_and_untouched(applied, pristine_clone, change):
    if change == "untracked":
        (pristine_clone / "notes.txt").write_text("mine\n")
    else:
        if change == "series and an edit":
            assert make_apply(applied, sglang_dir=pristine_clone).returncode == 0
        path = pristine_clone / LORA_UTILS
        path.write_text(path.read_text() + "# mine\n")
    files = tree_bytes(pristine_clone)
    result = make_apply(applied, sglang_dir=pristine_clone)
    assert_fails(result, "uncommitted changes")
    assert tree_bytes(pristine_clone) == files


def test_clean_clone_gets_the_series_and_later_runs_do_nothing(applied, pristine_clone):
    before = head(pristine_clone)
    result = make_apply(applied, sglang_dir=pristine_clone)
    assert result.returncode == 0, output(result)
    assert re.findall(r"applied (\S+\.patch)", output(result)) == SERIES
    # Working tree only: no commit, the patched files equal our mirror.
    assert head(pristine_clone) == before
    patches = "".join((applied / "patches" / n).read_text() for n in SERIES)
    paths = set(re.findall(r"^diff --git a/(\S+) b/", patches, re.M))
    new = set(re.findall(r"^diff --git a/(\S+) b/\S+\nnew file mode", patches, re.M))
    assert "test/registered/lora/test_moe_lora_info.py" in new
    assert set(git(pristine_clone, "diff", "--name-only").split()) == paths - new
    for path in paths:
        assert (pristine_clone / path).read_bytes() == (applied / path).read_bytes()
    diff = git(pristine_clone, "diff")

    # Now patched: a second run recognises the series and changes nothing at all.
    files = tree_bytes(pristine_clone)
    again = make_apply(applied, sglang_dir=pristine_clone)
    assert again.returncode == 0, output(again)
    assert "already has the series in its working tree; nothing to do" in output(again)
    assert "uncommitted" not in output(again)
    assert git(pristine_clone, "diff") == diff
    assert tree_bytes(pristine_clone) == files
    # Committed, it is recognised too.
    git(pristine_clone, "add", "--all")
    git(pristine_clone, "commit", "-q", "-m", "the series")
    files = tree_bytes(pristine_clone)
    again = make_apply(applied, sglang_dir=pristine_clone)
    assert again.returncode == 0, output(again)
    assert "already has the series committed; nothing to do" in output(again)
    assert tree_bytes(pristine_clone) == files


def test_anything_but_a_clones_root_is_refused(applied, pristine_clone, tmp_path):
    # git apply run from python/ would skip test/ and report success.
    files = tree_bytes(pristine_clone)
    result = make_apply(applied, sglang_dir=pristine_clone / "python")
    assert_fails(result, "not the root of its repository", str(pristine_clone))
    assert "series applied" not in output(result)
    assert tree_bytes(pristine_clone) == files
    plain = tmp_path / "plain"
    plain.mkdir()
    for target, why in (
        (plain, "is not a git repository"),
        (tmp_path / "no", "does not exist"),
    ):
        result = make_apply(applied, sglang_dir=target)
        assert_fails(result, why, "pass the root of an sglang clone")
        assert last_line(result).startswith("error: "), result.stderr
    assert list(plain.iterdir()) == []


# --- 5b: nothing reaches a user's clone by the back door ---------------------


def test_the_callers_environment_and_makeflags_never_name_a_target(
    pristine_clone, tmp_path, monkeypatch
):
    # make test SGLANG_DIR=clone: the outer make hands SGLANG_DIR to every make
    # the tests start, through MAKEFLAGS, unless the tests drop it (conftest's
    # run); and an SGLANG_DIR in the environment is no target (the Makefile).
    project = copy_project(tmp_path / "project")
    files = tree_bytes(pristine_clone)
    monkeypatch.setenv("MAKEFLAGS", f" -- SGLANG_DIR={pristine_clone}")
    monkeypatch.setenv("MAKELEVEL", "1")
    monkeypatch.setenv("SGLANG_DIR", str(pristine_clone))
    result = run(
        ["make", "apply"], cwd=project, env={"SGLANG_DIR": str(pristine_clone)}
    )
    assert result.returncode == 0, output(result)
    assert (project / "build" / "sglang").is_dir()
    assert tree_bytes(pristine_clone) == files


def test_the_tests_on_a_clone_leave_it_as_it_was_and_need_registered_tests(
    applied_copy, patched_clone
):
    # make test SGLANG_DIR=clone imports sglang from the clone: no bytecode, no
    # cache may land there. Collecting imports every test module, as a run does.
    files = tree_bytes(patched_clone)
    env = {"SGLANG_DIR": str(patched_clone), "VENV": str(Path(PYTHON).parents[1])}
    result = run(["tools/run_tests.sh", "--collect-only", "-q"], applied_copy, env=env)
    assert result.returncode == 0, output(result)
    # The mode line comes before the tests (README: "the line ==> mode: ...").
    mode = result.stderr.index("==> mode: CPU, no GPU visible")
    assert mode < result.stderr.index("registered tests: ")
    # The registered tests, as sglang's CI finds them.
    assert re.search(r"registered tests: (.*)", result.stderr)[1].split() == [
        "test/registered/lora/test_fused_moe_lora_decode.py",
        "test/registered/lora/test_moe_lora_info.py",
        "test/registered/lora/test_sgemm_lora_a_decode.py",
        "test/registered/lora/test_sgemm_lora_b_decode.py",
    ]
    assert "tests/sglang/" in result.stdout
    assert tree_bytes(patched_clone) == files
    # A test file that upstream CI would not run (no register_cuda_ci call) is no test.
    git(patched_clone, "checkout", "-q", ".")
    git(patched_clone, "clean", "-qfd")
    (patched_clone / "test" / "registered").mkdir(parents=True)
    (patched_clone / "test" / "registered" / "test_plain.py").write_text(
        "def test_x():\n    pass\n\n\nif __name__ == '__main__':\n    test_x()\n"
    )
    result = run(["tools/run_tests.sh"], cwd=applied_copy, env=env)
    assert_fails(result, f"found no registered tests in {patched_clone}/test")


# --- 6: the pin cache: no network, interrupted and fresh downloads ----------------


def test_the_pin_is_downloaded_whole_or_not_at_all(project, tmp_path):
    # Offline first: one clear line, nothing cached, no tree.
    cache = project / ".cache" / "pin"
    index = tmp_path / "index"  # the registry here: a directory holding the wheel
    index.mkdir()
    (cache / PIN_FILE).rename(index / PIN_FILE)
    # A private download directory an interrupted run left behind is no pin.
    (cache / ".download.abc123").mkdir()
    (cache / ".download.abc123" / PIN_FILE).write_bytes(b"a third of a wheel")
    result = make_apply(project)
    assert_fails(result, "could not download sglang==0.5.12", "registry")
    # No partial download left behind, the old one removed (the lock file is no download).
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]
    assert_no_tree(project)
    result = run(["make", "apply"], project, env={"PIP_FIND_LINKS": str(index)})
    assert result.returncode == 0, result.stderr
    assert "(downloaded, sha256 verified)" in result.stderr
    assert (cache / PIN_FILE).read_bytes() == (index / PIN_FILE).read_bytes()
    assert sorted(p.name for p in cache.iterdir()) == [".lock", PIN_FILE]
    assert (project / "build" / "sglang" / "python" / "sglang").is_dir()


def test_ctrl_c_during_the_download_says_so(project, tmp_path):
    (project / ".cache" / "pin" / PIN_FILE).unlink()
    # A python3 whose pip hangs, as a slow download does.
    shims = tmp_path / "bin"
    shims.mkdir()
    real = shutil.which("python3")
    (shims / "python3").write_text(
        f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && exec sleep 60\nexec {real} "$@"\n'
    )
    (shims / "python3").chmod(0o755)
    proc = subprocess.Popen(
        ["make", "apply"],
        cwd=project,
        env=clean_env({"PATH": f"{shims}:{os.environ['PATH']}"}),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # A shell started with SIGINT ignored (a background job) cannot trap it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "downloading" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    text = "".join(seen) + proc.stderr.read()
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert "interrupted" in text, text
    assert "no network" not in text
    assert [p.name for p in (project / ".cache" / "pin").iterdir()] in ([], [".lock"])
    assert_no_tree(project)


def test_gpu_wheels_removes_what_a_killed_run_left(project):
    # The 322 MB sglang-kernel download a SIGKILL left in build/.
    scratch = project / "build" / ".gpu-wheels.download"
    scratch.mkdir(parents=True)
    (scratch / "sglang_kernel.whl").write_bytes(b"x" * 1000)
    result = run(["make", "gpu-wheels"], project)
    assert_fails(result, "is the package registry reachable?")
    assert last_line(result).startswith("error: downloading the wheels of")
    assert not scratch.exists()


def test_two_concurrent_applies_both_succeed(project):
    procs = [
        subprocess.Popen(
            ["make", "apply"],
            cwd=project,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    tree = project / "build" / "sglang"
    assert git(tree, "rev-list", "--count", f"{PIN_TAG}..HEAD") == str(len(SERIES))
    assert porcelain(tree) == ""
    assert not list((project / "build").glob(".sglang.new.*"))
    assert "nothing to do" in make_apply(project).stderr


# --- 7: refresh and the mirror -----------------------------------------------


def test_refresh_after_apply_is_deterministic_and_mirror_checks(applied_copy):
    dirs = ("patches", "python", "test")
    before = [tree_bytes(applied_copy / d) for d in dirs]
    result = run(["make", "-C", str(applied_copy), "refresh"], cwd=applied_copy)
    assert result.returncode == 0, output(result)
    assert [tree_bytes(applied_copy / d) for d in dirs] == before

    check = ["tools/mirror.sh", "check", "build/sglang"]
    ok = run(check, cwd=applied_copy)
    assert ok.returncode == 0, output(ok)
    assert "mirror matches" in output(ok)
    # refresh keeps the applied tree a no-op for the next apply.
    again = make_apply(applied_copy)
    assert again.returncode == 0 and "nothing to do" in output(again)

    with (applied_copy / LORA_UTILS).open("a") as f:
        f.write("# drift\n")
    stale = run(check, cwd=applied_copy)
    assert_fails(stale, LORA_UTILS, "make refresh")


def test_bytecode_and_a_killed_build_leave_apply_a_no_op(applied_copy):
    # make test imports sglang from build/sglang; on a normal machine (no
    # PYTHONDONTWRITEBYTECODE) that writes __pycache__/ there. Bytecode is not a
    # local change: apply must stay a no-op and the mirror check must pass.
    # compileall writes the same files as an import, without its 10 s.
    tree = applied_copy / "build" / "sglang"
    compiled = run(
        [PYTHON, "-m", "compileall", "-q", "python/sglang/srt/lora"],
        cwd=tree,
        env={"PYTHONDONTWRITEBYTECODE": ""},
    )
    assert compiled.returncode == 0, output(compiled)
    assert list((tree / "python/sglang/srt/lora").glob("__pycache__/*.pyc"))
    # And what a SIGKILL during a build leaves: its scratch tree (46 MB), removed.
    (tree.parent / ".sglang.new.abc123" / "sglang").mkdir(parents=True)
    before = head(tree)
    again = make_apply(applied_copy)
    assert again.returncode == 0, output(again)
    assert not list(tree.parent.glob(".sglang.*"))
    # A no-op that says so: nothing fetched, applied or committed again.
    assert "nothing to do" in output(again)
    assert "applied 0001" not in output(again) and "pin:" not in output(again)
    assert head(tree) == before
    check = run(["tools/mirror.sh", "check", "build/sglang"], cwd=applied_copy)
    assert check.returncode == 0, output(check)


# --- 9: unapply keeps unexported work ----------------------------------------


def make_unapply(project, *args):
    return run(["make", "-C", str(project), "unapply", *args], cwd=project)


def test_unapply_after_refresh_then_apply(applied_copy):
    # Work that make refresh exported is no loss: unapply needs no FORCE.
    tree = applied_copy / "build" / "sglang"
    edited = tree / LORA_UTILS
    edited.write_text(edited.read_text() + "# a local change\n")
    git(tree, "commit", "-q", "--amend", "--no-edit", "-a")
    run(["make", "-C", str(applied_copy), "refresh"], cwd=applied_copy, check=True)
    before = git(tree, "rev-parse", "HEAD^{tree}")
    result = make_unapply(applied_copy)
    assert result.returncode == 0, output(result)
    assert head(tree) == git(tree, "rev-parse", f"{PIN_TAG}^{{commit}}")
    assert porcelain(tree) == ""
    assert not (tree / "test").exists()
    assert make_apply(applied_copy).returncode == 0
    assert git(tree, "rev-parse", "HEAD^{tree}") == before
    assert "nothing to do" in make_apply(applied_copy).stderr


@pytest.mark.parametrize("work", ["commit", "edit", "untracked"])
def test_unapply_refuses_to_lose_unexported_work(applied_copy, work):
    tree = applied_copy / "build" / "sglang"
    edited = tree / LORA_UTILS
    if work == "untracked":
        (tree / "notes.txt").write_text("mine\n")
    else:
        edited.write_text(edited.read_text() + "# a local change\n")
    if work == "commit":
        git(tree, "commit", "-q", "-am", "a local change")
    before = (head(tree), tree_bytes(tree))
    result = make_unapply(applied_copy)
    assert_fails(result, "make refresh", "FORCE=1")
    # It says what would be lost.
    lost = {"commit": "a local change", "untracked": "notes.txt", "edit": LORA_UTILS}
    assert lost[work] in result.stderr
    assert (head(tree), tree_bytes(tree)) == before
    # make apply refuses the same way rather than replacing the tree.
    assert_fails(
        make_apply(applied_copy), "uncommitted changes or commits", "make refresh"
    )
    assert (head(tree), tree_bytes(tree)) == before

    forced = make_unapply(applied_copy, "FORCE=1")
    assert forced.returncode == 0, output(forced)
    assert head(tree) == git(tree, "rev-parse", f"{PIN_TAG}^{{commit}}")
    assert porcelain(tree) == ""


# --- 10: failure paths, each one line -----------------------------------------


def test_tests_on_a_missing_tree_name_it_before_building_an_environment(
    project, tmp_path
):
    venv = tmp_path / "venv"
    result = run(
        ["make", "test", "SGLANG_DIR=/nonexistent", f"VENV={venv}"], cwd=project
    )
    assert_fails(result, "/nonexistent does not exist")
    assert "make apply" not in result.stderr
    assert not venv.exists()
    result = run(["tools/run_tests.sh"], cwd=project, env={"VENV": str(venv)})
    assert_fails(result, "run 'make apply' first")
    assert not venv.exists()


@pytest.mark.parametrize("how", ["build-is-a-file", "read-only"])
def test_a_checkout_it_cannot_write_to_is_one_clear_line(project, how):
    if how == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes to read-only directories")
        project.chmod(0o555)
    else:
        (project / "build").write_text("")
    try:
        result = make_apply(project)
    finally:
        project.chmod(0o755)
    assert result.returncode != 0
    assert last_line(result).startswith("error: cannot write to"), result.stderr
    assert "read-only" in last_line(result)
