"""Tests of `make apply` and the tooling around it (issues 2 and 8).

Every failure path must stop with a message naming the cause and leave no
half-patched tree; every success path must leave a clean, reproducible tree.
All runs go through `run` from conftest, which blocks the package registry.
"""

import hashlib
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from conftest import PIN_FILE, PIN_TAG, PYTHON, ROOT, copy_project, run

TAG = PIN_TAG
SERIES = [
    line.split()[0]
    for line in (ROOT / "patches" / "series").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
THIRD = SERIES[2]
MOE_TEST = "test/registered/lora/test_moe_lora_info.py"
REGISTERED_TESTS = [MOE_TEST, "test/registered/lora/test_fused_moe_lora_decode.py"]
LORA_UTILS = "python/sglang/srt/lora/utils.py"


# --- helpers -----------------------------------------------------------------


def git(repo, *args):
    return run(["git", "-C", str(repo), *args], cwd=repo, check=True).stdout.strip()


def head(repo):
    return git(repo, "rev-parse", "HEAD")


def porcelain(repo):
    # Ignored files count too: a clean tree here has nothing at all besides HEAD.
    cmd = ["git", "-C", str(repo), "status", "--porcelain", "--ignored", "-uall"]
    return run(cmd, cwd=repo, check=True).stdout.rstrip("\n")


def output(result):
    return result.stdout + result.stderr


def assert_fails(result, *needles):
    """RESULT exited non-zero and its output mentions every NEEDLE."""
    text = output(result)
    assert result.returncode != 0, f"expected a failure, got success:\n{text}"
    for needle in needles:
        assert needle.lower() in text.lower(), f"{needle!r} not in:\n{text}"


def assert_no_tree(project):
    """No build/sglang and no half-built scratch tree next to it."""
    build = project / "build"
    assert not (build / "sglang").exists()
    leftovers = [p.name for p in build.iterdir()] if build.exists() else []
    assert [n for n in leftovers if n != ".lock"] == [], leftovers


def make_apply(project, env=None, sglang_dir=None):
    cmd = ["make", "-C", str(project), "apply"]
    if sglang_dir is not None:
        cmd.append(f"SGLANG_DIR={sglang_dir}")
    return run(cmd, cwd=project, env=env)


def snapshot(root, *subdirs):
    """Every file under ROOT/SUBDIR as {relative path: bytes}."""
    files = {}
    for sub in subdirs:
        for path in sorted((root / sub).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[str(path.relative_to(root))] = path.read_bytes()
    return files


def patch_subject(patch):
    """The Subject: header of a format-patch file, unfolded, minus [PATCH]."""
    lines = patch.read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("Subject: "))
    subject = lines[start][len("Subject: ") :]
    for line in lines[start + 1 :]:
        if not line.startswith((" ", "\t")):
            break
        subject += " " + line.strip()
    return re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)


def patch_files(patch):
    return set(re.findall(r"^diff --git a/(\S+) b/", patch.read_text(), re.M))


def created_files(patch):
    pattern = r"^diff --git a/(\S+) b/\S+\nnew file mode"
    return set(re.findall(pattern, patch.read_text(), re.M))


def blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def break_third_patch(project):
    """Give PROJECT's 3rd patch a context line upstream lacks."""
    patch = project / "patches" / THIRD
    lines = patch.read_text().splitlines(keepends=True)
    hunk = next(i for i, x in enumerate(lines) if x.startswith("@@"))
    ctx = next(i for i in range(hunk + 1, len(lines)) if lines[i].startswith(" "))
    lines[ctx] = " # this context line is not in the pinned sglang\n"
    patch.write_text("".join(lines))


def tree_bytes(root):
    """Every file under ROOT, .git included, as {relative path: (mode, bytes)}."""
    return {
        str(p.relative_to(root)): (p.stat().st_mode, p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def last_line(result):
    lines = [x for x in result.stderr.splitlines() if x and not x.startswith("make")]
    return lines[-1] if lines else ""


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A project copy after one `make apply`; tests using it must not mutate it."""
    project = copy_project(tmp_path_factory.mktemp("applied") / "project")
    result = make_apply(project)
    assert result.returncode == 0, output(result)
    return project, result


@pytest.fixture
def applied_copy(applied, tmp_path):
    """A private copy of the applied project, for tests that change it."""
    dest = tmp_path / "project"
    shutil.copytree(applied[0], dest, symlinks=True)
    return dest


@pytest.fixture
def pristine_clone(applied, tmp_path):
    """A user's clean sglang clone at the pristine tag."""
    clone = tmp_path / "clone"
    run(
        ["git", "clone", "-q", str(applied[0] / "build" / "sglang"), str(clone)],
        cwd=tmp_path,
        check=True,
    )
    git(clone, "reset", "-q", "--hard", TAG)
    assert porcelain(clone) == ""
    return clone


@pytest.fixture
def patched_clone(applied, pristine_clone):
    """The pristine clone after `make apply SGLANG_DIR=` (working tree only)."""
    run(
        ["make", "-C", str(applied[0]), "apply", f"SGLANG_DIR={pristine_clone}"],
        cwd=applied[0],
        check=True,
    )
    return pristine_clone


# --- 1, 2: a good apply, and applying again ----------------------------------


def test_apply_builds_pristine_tag_plus_one_commit_per_patch(applied):
    project, result = applied
    text = output(result)
    assert result.returncode == 0, text
    # Offline on a warm cache: the pin comes from the cache, re-verified.
    assert "cached, sha256 verified" in text
    assert "downloading" not in text
    # Each patch is reported, in series order.
    reported = re.findall(r"applied (\S+\.patch)", text)
    assert reported == SERIES

    tree = project / "build" / "sglang"
    assert (tree / ".git").is_dir()
    pristine = git(tree, "rev-parse", f"{TAG}^{{commit}}")
    assert git(tree, "rev-list", "--max-parents=0", "HEAD") == pristine

    # The tag is exactly the wheel's sglang/ package, laid out as python/sglang/.
    with zipfile.ZipFile(project / ".cache" / "pin" / PIN_FILE) as zf:
        wheel = {
            "python/" + m: blob_sha1(zf.read(m))
            for m in zf.namelist()
            if m.startswith("sglang/") and not m.endswith("/")
        }
    tagged = {}
    for line in git(tree, "ls-tree", "-r", TAG).splitlines():
        meta, path = line.split("\t", 1)
        tagged[path] = meta.split()[2]
    assert tagged == wheel

    # One commit per patch, same subjects, same files, in order.
    commits = git(tree, "rev-list", "--reverse", f"{TAG}..HEAD").splitlines()
    assert len(commits) == len(SERIES)
    for commit, name in zip(commits, SERIES):
        patch = project / "patches" / name
        assert git(tree, "log", "-1", "--format=%s", commit) == patch_subject(patch)
        changed = git(tree, "diff-tree", "--no-commit-id", "--name-only", "-r", commit)
        assert set(changed.splitlines()) == patch_files(patch), name
    assert porcelain(tree) == ""


def test_apply_again_is_a_noop_that_says_so(applied):
    project, first = applied
    assert first.returncode == 0, output(first)
    tree = project / "build" / "sglang"
    before = head(tree)
    result = make_apply(project)
    assert result.returncode == 0, output(result)
    assert "nothing to do" in output(result)
    # Nothing was fetched or applied again.
    assert "applied 0001" not in output(result)
    assert "pin:" not in output(result)
    assert head(tree) == before
    assert porcelain(tree) == ""


# --- 3: hash mismatch --------------------------------------------------------


def wrong_sha256(project):
    lock = project / "upstream.lock"
    real = lock.read_text()
    wrong = re.sub(r"^sha256=.*$", "sha256=" + "0" * 64, real, flags=re.M)
    assert wrong != real
    lock.write_text(wrong)


def test_wrong_sha256_in_lock_is_blamed_on_the_lock(project):
    wrong_sha256(project)
    result = make_apply(project)
    assert_fails(result, "sha256", PIN_FILE)
    # The cached file is intact: the lock is at fault, and deleting the cache would not help.
    assert "upstream.lock is wrong" in last_line(result), output(result)
    assert "delete" not in output(result)
    assert (project / ".cache" / "pin" / PIN_FILE).exists()
    assert_no_tree(project)


def test_changed_lock_after_a_build_is_noticed(applied_copy):
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
    # A wrong pin: refused, and the existing tree is kept as it was.
    wrong_sha256(applied_copy)
    result = make_apply(applied_copy)
    assert_fails(result, "upstream.lock is wrong")
    assert "nothing to do" not in output(result)
    assert porcelain(tree) == ""


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
    assert_fails(result, "sha256", PIN_FILE)
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


def test_broken_patch_keeps_existing_build_as_it_was(applied_copy):
    tree = applied_copy / "build" / "sglang"
    before = head(tree)
    files = snapshot(tree, "python", "test")
    good = (applied_copy / "patches" / THIRD).read_text()
    break_third_patch(applied_copy)
    result = make_apply(applied_copy)
    assert_fails(result, THIRD, "does not apply")
    assert head(tree) == before
    assert porcelain(tree) == ""
    assert snapshot(tree, "python", "test") == files
    assert [p.name for p in tree.parent.iterdir() if p.name != ".lock"] == ["sglang"]
    # The good series still counts as applied afterwards.
    (applied_copy / "patches" / THIRD).write_text(good)
    again = make_apply(applied_copy)
    assert again.returncode == 0, output(again)
    assert "nothing to do" in output(again)


def test_broken_patch_leaves_clone_untouched(applied_copy, pristine_clone):
    break_third_patch(applied_copy)
    before = tree_bytes(pristine_clone)
    result = run(["./apply.sh", str(pristine_clone)], cwd=applied_copy)
    assert_fails(result, THIRD, "does not apply")
    assert tree_bytes(pristine_clone) == before


def test_missing_patch_file_leaves_clone_untouched(applied_copy, pristine_clone):
    # A series naming a patch that is not there must stop before any patch
    # touches the tree, like one that does not apply.
    (applied_copy / "patches" / THIRD).unlink()
    before = head(pristine_clone)
    result = make_apply(applied_copy, sglang_dir=pristine_clone)
    assert_fails(result, THIRD, "does not exist")
    assert "series applied" not in output(result)
    assert head(pristine_clone) == before
    assert porcelain(pristine_clone) == ""


# --- 5: dirty or already patched trees ---------------------------------------


def test_uncommitted_edit_in_build_is_refused_and_kept(applied_copy):
    tree = applied_copy / "build" / "sglang"
    before = head(tree)
    edited = tree / LORA_UTILS
    content = edited.read_text() + "# a local edit\n"
    edited.write_text(content)
    result = make_apply(applied_copy)
    assert_fails(result, "uncommitted changes")
    assert edited.read_text() == content
    assert head(tree) == before
    assert porcelain(tree) == f" M {LORA_UTILS}"


def test_extra_commit_in_build_is_refused(applied_copy):
    tree = applied_copy / "build" / "sglang"
    edited = tree / LORA_UTILS
    edited.write_text(edited.read_text() + "# a local change\n")
    git(tree, "commit", "-q", "-am", "a local change")
    before = head(tree)
    result = make_apply(applied_copy)
    assert_fails(result, "make refresh")
    assert head(tree) == before
    assert porcelain(tree) == ""
    assert edited.read_text().endswith("# a local change\n")


@pytest.mark.parametrize("change", ["untracked", "modified"])
def test_dirty_clone_is_refused_and_untouched(applied, pristine_clone, change):
    if change == "untracked":
        (pristine_clone / "notes.txt").write_text("mine\n")
    else:
        path = pristine_clone / LORA_UTILS
        path.write_text(path.read_text() + "# mine\n")
    before = (head(pristine_clone), porcelain(pristine_clone))
    diff = git(pristine_clone, "diff")
    result = make_apply(applied[0], sglang_dir=pristine_clone)
    assert_fails(result, "uncommitted changes")
    assert (head(pristine_clone), porcelain(pristine_clone)) == before
    assert git(pristine_clone, "diff") == diff


def test_clean_clone_gets_the_series_and_a_second_run_does_nothing(
    applied, pristine_clone
):
    project = applied[0]
    before = head(pristine_clone)
    result = make_apply(project, sglang_dir=pristine_clone)
    assert result.returncode == 0, output(result)
    assert re.findall(r"applied (\S+\.patch)", output(result)) == SERIES
    # Working tree only: no commit, the patched files equal our mirror.
    assert head(pristine_clone) == before
    touched = set().union(*(patch_files(project / "patches" / n) for n in SERIES))
    created = set().union(*(created_files(project / "patches" / n) for n in SERIES))
    assert MOE_TEST in created
    changed = set(git(pristine_clone, "diff", "--name-only").split())
    assert changed == touched - created
    for path in touched:
        assert (pristine_clone / path).read_bytes() == (project / path).read_bytes()
    diff = git(pristine_clone, "diff")

    # Now patched: a second run recognises the series and changes nothing at all.
    files = tree_bytes(pristine_clone)
    again = make_apply(project, sglang_dir=pristine_clone)
    assert again.returncode == 0, output(again)
    assert "already has the series in its working tree; nothing to do" in output(again)
    assert "uncommitted" not in output(again)
    assert git(pristine_clone, "diff") == diff
    assert tree_bytes(pristine_clone) == files


def test_clone_with_the_series_and_an_edit_is_refused(applied, patched_clone):
    path = patched_clone / LORA_UTILS
    path.write_text(path.read_text() + "# mine\n")
    files = tree_bytes(patched_clone)
    result = make_apply(applied[0], sglang_dir=patched_clone)
    assert_fails(result, "uncommitted changes")
    assert tree_bytes(patched_clone) == files


def test_clone_with_committed_series_does_nothing(applied, tmp_path):
    clone = tmp_path / "patched"
    tree = applied[0] / "build" / "sglang"
    run(["git", "clone", "-q", str(tree), str(clone)], cwd=tmp_path, check=True)
    files = tree_bytes(clone)
    result = make_apply(applied[0], sglang_dir=clone)
    assert result.returncode == 0, output(result)
    assert "already has the series committed; nothing to do" in output(result)
    assert tree_bytes(clone) == files


def test_a_subdirectory_of_a_clone_is_refused(applied, pristine_clone):
    # git apply run from python/ would skip test/ and report success.
    files = tree_bytes(pristine_clone)
    result = make_apply(applied[0], sglang_dir=pristine_clone / "python")
    assert_fails(result, "not the root of its repository", str(pristine_clone))
    assert "series applied" not in output(result)
    assert tree_bytes(pristine_clone) == files


# --- 5b: nothing reaches a user's clone by the back door ---------------------


def test_makeflags_of_an_outer_make_do_not_reach_a_tests_make(
    applied, pristine_clone, tmp_path, monkeypatch
):
    # make test SGLANG_DIR=clone: the outer make hands SGLANG_DIR to every make
    # the tests start, through MAKEFLAGS, unless the tests drop it.
    project = copy_project(tmp_path / "project")
    files = tree_bytes(pristine_clone)
    monkeypatch.setenv("MAKEFLAGS", f" -- SGLANG_DIR={pristine_clone}")
    monkeypatch.setenv("MAKELEVEL", "1")
    monkeypatch.setenv("SGLANG_DIR", str(pristine_clone))
    result = run(["make", "apply"], cwd=project)
    assert result.returncode == 0, output(result)
    assert (project / "build" / "sglang").is_dir()
    assert tree_bytes(pristine_clone) == files


def test_sglang_dir_in_the_environment_is_not_a_target(project, pristine_clone):
    files = tree_bytes(pristine_clone)
    result = run(
        ["make", "apply"], cwd=project, env={"SGLANG_DIR": str(pristine_clone)}
    )
    assert result.returncode == 0, output(result)
    assert (project / "build" / "sglang").is_dir()
    assert tree_bytes(pristine_clone) == files


def test_running_the_tests_on_a_clone_leaves_it_byte_for_byte(
    applied_copy, patched_clone
):
    # make test SGLANG_DIR=clone imports sglang from the clone: no bytecode, no
    # cache may land there. Collecting imports every test module, as a run does.
    files = tree_bytes(patched_clone)
    result = run(
        ["tools/run_tests.sh", "--collect-only", "-q"],
        cwd=applied_copy,
        env={"SGLANG_DIR": str(patched_clone), "VENV": str(Path(PYTHON).parents[1])},
    )
    assert result.returncode == 0, output(result)
    assert "registered tests: test/registered/lora/" in result.stderr
    assert "tests/sglang/" in result.stdout
    assert tree_bytes(patched_clone) == files


# --- 6: no network, empty cache ----------------------------------------------


def test_offline_with_empty_cache_fails_clearly(project):
    cache = project / ".cache" / "pin"
    (cache / PIN_FILE).unlink()
    result = make_apply(project)
    assert_fails(result, "download", "registry")
    assert not (cache / PIN_FILE).exists()
    # No partial download left behind either (the lock file is no download).
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [".lock"]
    assert_no_tree(project)


# --- 7: refresh and the mirror -----------------------------------------------


def test_refresh_after_apply_is_deterministic_and_mirror_checks(applied_copy):
    dirs = ("patches", "python", "test")
    before = snapshot(applied_copy, *dirs)
    result = run(["make", "-C", str(applied_copy), "refresh"], cwd=applied_copy)
    assert result.returncode == 0, output(result)
    assert snapshot(applied_copy, *dirs) == before

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


# --- 8: the registered-test collector ----------------------------------------


def collect(project, test_root):
    tree = project / "build" / "sglang"
    # No bytecode: the shared applied tree must stay as `make apply` left it.
    env = {"PYTHONPATH": str(tree / "python"), "PYTHONDONTWRITEBYTECODE": "1"}
    script = project / "tools" / "collect_registered.py"
    return run([PYTHON, str(script), str(test_root)], cwd=tree, env=env)


def test_collect_registered_lists_the_moe_lora_test(applied):
    result = collect(applied[0], "test/registered")
    assert result.returncode == 0, output(result)
    assert result.stdout.split() == sorted(REGISTERED_TESTS)


def test_collect_registered_fails_without_registered_tests(applied, tmp_path):
    root = tmp_path / "unregistered"
    root.mkdir()
    # A test file that upstream CI would not run: no register_cuda_ci call.
    (root / "test_plain.py").write_text(
        "def test_x():\n    pass\n\n\nif __name__ == '__main__':\n    test_x()\n"
    )
    result = collect(applied[0], root)
    assert_fails(result, "no registered", str(root))
    assert result.stdout.strip() == ""


def test_bytecode_from_running_tests_does_not_dirty_build(applied_copy):
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
    again = make_apply(applied_copy)
    assert again.returncode == 0, output(again)
    assert "nothing to do" in output(again)
    check = run(["tools/mirror.sh", "check", "build/sglang"], cwd=applied_copy)
    assert check.returncode == 0, output(check)


# --- 9: unapply keeps unexported work ----------------------------------------


def make_unapply(project, *args):
    return run(["make", "-C", str(project), "unapply", *args], cwd=project)


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
    lost = (
        "a local change"
        if work == "commit"
        else ("notes.txt" if work == "untracked" else LORA_UTILS)
    )
    assert lost in result.stderr
    assert (head(tree), tree_bytes(tree)) == before
    # make apply refuses the same way rather than replacing the tree.
    assert_fails(make_apply(applied_copy), "make refresh")
    assert (head(tree), tree_bytes(tree)) == before

    forced = make_unapply(applied_copy, "FORCE=1")
    assert forced.returncode == 0, output(forced)
    assert head(tree) == git(tree, "rev-parse", f"{TAG}^{{commit}}")
    assert porcelain(tree) == ""


def test_unapply_after_refresh_needs_no_force(applied_copy):
    tree = applied_copy / "build" / "sglang"
    edited = tree / LORA_UTILS
    edited.write_text(edited.read_text() + "# a local change\n")
    git(tree, "commit", "-q", "--amend", "--no-edit", "-a")
    run(["make", "-C", str(applied_copy), "refresh"], cwd=applied_copy, check=True)
    result = make_unapply(applied_copy)
    assert result.returncode == 0, output(result)


# --- 10: interrupted runs and failure paths, each one line --------------------


def test_a_killed_apply_leaves_nothing_behind(applied_copy):
    # What a SIGKILL during the build leaves: the scratch tree, 46 MB.
    build = applied_copy / "build"
    (build / ".sglang.new.abc123" / "sglang").mkdir(parents=True)
    (build / ".sglang.new.abc123" / "sglang" / "big").write_bytes(b"x" * 1000)
    result = make_apply(applied_copy)
    assert result.returncode == 0, output(result)
    assert not list(build.glob(".sglang.*"))


def test_ctrl_c_during_the_download_says_so(project, tmp_path):
    import os
    import signal
    import subprocess

    from conftest import clean_env

    (project / ".cache" / "pin" / PIN_FILE).unlink()
    # A python3 whose pip hangs, as a slow download does.
    shims = tmp_path / "bin"
    shims.mkdir()
    real = shutil.which("python3")
    (shims / "python3").write_text(
        f'#!/bin/sh\n[ "$1 $2" = "-m pip" ] && exec sleep 60\nexec {real} "$@"\n'
    )
    (shims / "python3").chmod(0o755)
    env = clean_env({"PATH": f"{shims}:{os.environ['PATH']}"})
    proc = subprocess.Popen(
        ["make", "apply"],
        cwd=project,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "downloading" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    text = "".join(seen) + rest
    assert proc.returncode != 0
    assert "interrupted" in text, text
    assert "no network" not in text
    assert not list((project / ".cache" / "pin").iterdir()) or [
        p.name for p in (project / ".cache" / "pin").iterdir()
    ] == [".lock"]
    assert_no_tree(project)


def test_make_test_on_a_missing_tree_fails_before_building_an_environment(
    project, tmp_path
):
    venv = tmp_path / "venv"
    result = run(
        ["make", "test", "SGLANG_DIR=/nonexistent", f"VENV={venv}"], cwd=project
    )
    assert_fails(result, "/nonexistent does not exist")
    assert not venv.exists()


def test_tests_on_a_missing_tree_name_it(project):
    venv = str(Path(PYTHON).parents[1])
    result = run(
        ["tools/run_tests.sh"],
        cwd=project,
        env={"SGLANG_DIR": "/nonexistent", "VENV": venv},
    )
    assert_fails(result, "/nonexistent does not exist")
    assert "make apply" not in result.stderr
    result = run(["tools/run_tests.sh"], cwd=project, env={"VENV": venv})
    assert_fails(result, "run 'make apply' first")


@pytest.mark.parametrize("how", ["build-is-a-file", "read-only"])
def test_a_checkout_it_cannot_write_to_is_one_clear_line(project, how):
    import os

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
