"""Tests of `make apply` and the tooling around it (issue 2).

Every failure path must stop with a message naming the cause and leave no
half-patched tree; every success path must leave a clean, reproducible tree.
All runs go through `run` from conftest, which blocks the package registry.
"""

import hashlib
import re
import shutil
import zipfile

import pytest
from conftest import PIN_FILE, ROOT, SKIP_DIRS, _seed_cache, run

TAG = "v0.5.12"
SERIES = [
    line.split()[0]
    for line in (ROOT / "patches" / "series").read_text().splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]
THIRD = SERIES[2]
MOE_TEST = "test/registered/lora/test_moe_lora_info.py"
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


def copy_project(dest):
    """Like conftest's `project`, for fixtures with a wider scope."""
    shutil.copytree(
        ROOT, dest, ignore=lambda d, names: [n for n in names if n in SKIP_DIRS]
    )
    _seed_cache(dest / ".cache" / "pin")
    return dest


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


def blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def break_third_patch(patches, tmp_path):
    """A copy of PATCHES whose 3rd patch has a context line upstream lacks."""
    broken = tmp_path / "broken-patches"
    shutil.copytree(patches, broken)
    patch = broken / THIRD
    lines = patch.read_text().splitlines(keepends=True)
    hunk = next(i for i, x in enumerate(lines) if x.startswith("@@"))
    ctx = next(i for i in range(hunk + 1, len(lines)) if lines[i].startswith(" "))
    lines[ctx] = " # this context line is not in sglang 0.5.12\n"
    patch.write_text("".join(lines))
    return broken


# --- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """A project copy after one `make apply`; tests using it must not mutate it."""
    project = copy_project(tmp_path_factory.mktemp("applied") / "project")
    result = make_apply(project)
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
def broken_patches(applied, tmp_path):
    return break_third_patch(applied[0] / "patches", tmp_path)


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


def test_wrong_sha256_in_lock_is_refused(project, tmp_path):
    lock = tmp_path / "upstream.lock"
    real = (project / "upstream.lock").read_text()
    wrong = re.sub(r"^sha256=.*$", "sha256=" + "0" * 64, real, flags=re.M)
    assert wrong != real
    lock.write_text(wrong)
    result = make_apply(project, env={"LOCK_FILE": str(lock)})
    assert_fails(result, "sha256", PIN_FILE)
    assert re.search(r"mismatch|does not match", output(result))
    assert_no_tree(project)


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
    assert re.search(r"mismatch|does not match", output(result))
    # The corrupt file was not used: nothing unpacked, nothing applied.
    assert "applied 0001" not in output(result)
    assert_no_tree(project)


# --- 4: a patch that does not apply ------------------------------------------


def test_broken_patch_fresh_leaves_no_tree(project, broken_patches):
    result = make_apply(project, env={"PATCHES_DIR": str(broken_patches)})
    assert_fails(result, THIRD, "does not apply")
    assert "series applied" not in output(result)
    assert_no_tree(project)


def test_broken_patch_keeps_existing_build_as_it_was(applied_copy, broken_patches):
    tree = applied_copy / "build" / "sglang"
    before = head(tree)
    files = snapshot(tree, "python", "test")
    result = make_apply(applied_copy, env={"PATCHES_DIR": str(broken_patches)})
    assert_fails(result, THIRD, "does not apply")
    assert head(tree) == before
    assert porcelain(tree) == ""
    assert snapshot(tree, "python", "test") == files
    assert [p.name for p in tree.parent.iterdir() if p.name != ".lock"] == ["sglang"]
    # The good series still counts as applied afterwards.
    again = make_apply(applied_copy)
    assert again.returncode == 0, output(again)
    assert "nothing to do" in output(again)


def test_broken_patch_leaves_clone_untouched(applied, pristine_clone, broken_patches):
    project = applied[0]
    before = head(pristine_clone)
    result = run(
        ["./apply.sh", str(pristine_clone)],
        cwd=project,
        env={"PATCHES_DIR": str(broken_patches)},
    )
    assert_fails(result, THIRD, "does not apply")
    assert head(pristine_clone) == before
    assert porcelain(pristine_clone) == ""


def test_missing_patch_file_leaves_clone_untouched(applied, pristine_clone, tmp_path):
    # A series naming a patch that is not there must stop before any patch
    # touches the tree, like one that does not apply.
    patches = tmp_path / "patches"
    shutil.copytree(applied[0] / "patches", patches)
    (patches / THIRD).unlink()
    before = head(pristine_clone)
    result = make_apply(
        applied[0], env={"PATCHES_DIR": str(patches)}, sglang_dir=pristine_clone
    )
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


def test_clean_clone_gets_the_series_then_refuses_a_second_run(applied, pristine_clone):
    project = applied[0]
    before = head(pristine_clone)
    result = make_apply(project, sglang_dir=pristine_clone)
    assert result.returncode == 0, output(result)
    assert re.findall(r"applied (\S+\.patch)", output(result)) == SERIES
    # Working tree only: no commit, the patched files equal our mirror.
    assert head(pristine_clone) == before
    touched = set().union(*(patch_files(project / "patches" / n) for n in SERIES))
    modified = touched - {MOE_TEST}
    stat = git(pristine_clone, "diff", "--stat")
    for path in modified:
        assert path in stat
    for path in touched:
        assert (pristine_clone / path).read_bytes() == (project / path).read_bytes()
    diff = git(pristine_clone, "diff")

    # Now patched and dirty: a second run must not apply anything twice.
    again = make_apply(project, sglang_dir=pristine_clone)
    assert_fails(again, "uncommitted changes")
    assert git(pristine_clone, "diff") == diff
    assert head(pristine_clone) == before


def test_clone_with_committed_series_says_already_applied(applied, tmp_path):
    clone = tmp_path / "patched"
    tree = applied[0] / "build" / "sglang"
    run(["git", "clone", "-q", str(tree), str(clone)], cwd=tmp_path, check=True)
    before = head(clone)
    result = make_apply(applied[0], sglang_dir=clone)
    assert_fails(result, "already applied")
    assert head(clone) == before
    assert porcelain(clone) == ""


# --- 6: no network, empty cache ----------------------------------------------


def test_offline_with_empty_cache_fails_clearly(project):
    cache = project / ".cache" / "pin"
    (cache / PIN_FILE).unlink()
    result = make_apply(project)
    assert_fails(result, "download", "registry")
    assert not (cache / PIN_FILE).exists()
    # No partial download left behind either.
    assert [p for p in cache.rglob("*") if p.is_file()] == []
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
    python = ROOT / ".venv" / "bin" / "python"
    script = project / "tools" / "collect_registered.py"
    return run([str(python), str(script), str(test_root)], cwd=tree, env=env)


def test_collect_registered_lists_the_moe_lora_test(applied):
    result = collect(applied[0], "test/registered")
    assert result.returncode == 0, output(result)
    assert result.stdout.split() == [MOE_TEST]


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
    python = ROOT / ".venv" / "bin" / "python"
    compiled = run(
        [str(python), "-m", "compileall", "-q", "python/sglang/srt/lora"],
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
