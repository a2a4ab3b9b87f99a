#!/usr/bin/env python3
"""Try the series on a newer sglang tree and report, per patch, in Markdown:

  applies cleanly | applies with offset | conflicts (with the rejected hunks) |
  already upstream (the patch reverse-applies, or an equivalent change is there)

  tools/rebase_report.py --target TREE --name TEXT --source TEXT [--command TEXT] PATCH...

TREE is the root of an sglang tree (python/sglang/...); it is only read. The
patches are tried in order on a scratch copy of the files they touch, each on
top of the ones before it that applied, with patch -p1 -F0 as distros do.

"Equivalent change" is how a rewrite upstream is recognised (sglang 0.5.13
implements this change with other code, so no hunk matches textually): the
patch's key names are the classes, defs, fields and attributes it adds that
its description also names (for a patch that adds none, the new names its
added lines use that its description names). The change is upstream when
every key name is in TREE (in the file the patch adds it to, or, for a
definition, anywhere under python/ or test/) and every definition the patch
removes and names in its description is gone from that file.
Exit status 1 when any patch conflicts.
"""

import argparse
import datetime
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchinfo import code_names, defined_names, message_names, read_patch  # noqa: E402

OFFSET_RE = re.compile(r"Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)")


def patch_cmd(tree: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess:
    # -f: never guess that a patch is reversed; -F0: exact context, as dpkg-source.
    cmd = ["patch", "-p1", "-f", "-F0", "--no-backup-if-mismatch", "-d", str(tree)]
    cmd += [*extra, "-i", str(patch)]
    return subprocess.run(cmd, capture_output=True, text=True)


def words(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return set(re.findall(r"\b\w+\b", path.read_text(errors="replace")))


def defines(text: str, name: str) -> bool:
    """Whether TEXT defines NAME: a def, a class or a class-level annotated field."""
    name = re.escape(name)
    as_def = rf"(?:async\s+)?(?:def|class)\s+{name}\b"
    as_field = rf"{name}\s*:[^=,\n]+(?:=[^,\n]*)?$"
    return re.search(rf"^\s*(?:{as_def}|{as_field})", text, re.M) is not None


def defined_elsewhere(target: Path, name: str) -> str | None:
    """The first file under python/ or test/ of TARGET that defines NAME."""
    for top in ("python", "test"):
        root = target / top
        if not root.is_dir():
            continue
        grep = subprocess.run(
            ["grep", "-rlw", "--include=*.py", name, str(root)],
            capture_output=True,
            text=True,
        )
        for hit in sorted(grep.stdout.split()):
            if defines(Path(hit).read_text(errors="replace"), name):
                return str(Path(hit).relative_to(target))
    return None


def equivalent_change(patch, target: Path) -> tuple[bool, list[str]]:
    """Whether TARGET already has the patch's change in other code, and the evidence."""
    mentioned = message_names(patch)
    keys, uses, gone = [], [], []
    for diff in patch.files:
        added = defined_names(diff.added) - defined_names(diff.removed)
        removed = defined_names(diff.removed) - defined_names(diff.added)
        keys += [(diff.path, n) for n in sorted(added & mentioned)]
        gone += [(diff.path, n) for n in sorted(removed & mentioned)]
        new = code_names(diff.added) - code_names(diff.removed + diff.kept)
        uses += [(diff.path, n) for n in sorted(new & mentioned)]
    if not keys:
        keys = uses
    if not keys:
        return False, []
    evidence, missing = [], []
    for path, name in keys:
        # A definition may have moved to another file upstream; a use may not.
        moved = None if (path, name) in uses else defined_elsewhere(target, name)
        if name in words(target / path):
            evidence.append(f"`{name}` in {path}")
        elif moved:
            evidence.append(f"`{name}` in {moved}")
        else:
            missing.append(name)
    for path, name in gone:
        file = target / path
        if file.is_file() and defines(file.read_text(errors="replace"), name):
            missing.append(f"{name} (still defined)")
        else:
            evidence.append(f"`{name}` gone from {path}")
    if missing and evidence:
        missing = sorted(set(missing))
        return False, [
            f"partly present: {', '.join(evidence)}; missing: {', '.join(missing)}"
        ]
    if missing:
        return False, []
    return True, evidence


def _with_files(lines):
    """Pair each line of patch's output with the file it was patching."""
    current = ""
    for line in lines:
        if line.startswith(("patching file ", "checking file ")):
            current = line.split(" ", 2)[2]
        yield current, line


def try_patch(patch, path: Path, target: Path, scratch: Path) -> tuple[str, str]:
    """Classify one patch against SCRATCH (applying it there when it applies)."""
    if patch_cmd(scratch, path, "-R", "--dry-run", "-s").returncode == 0:
        return (
            "already upstream",
            "the patch reverse-applies: its exact change is there",
        )
    same, evidence = equivalent_change(patch, target)
    if same:
        return (
            "already upstream",
            f"equivalent change present: {', '.join(evidence)}",
        )
    dry = patch_cmd(scratch, path, "--dry-run")
    if dry.returncode == 0:
        patch_cmd(scratch, path)
        offsets = {}
        for current, line in _with_files(dry.stdout.splitlines()):
            if m := OFFSET_RE.search(line):
                hunk = f"hunk #{m[1]} at line {m[2]} ({int(m[3]):+d})"
                offsets.setdefault(current, []).append(hunk)
        if offsets:
            return "applies with offset", "; ".join(
                f"{file}: {', '.join(hunks)}" for file, hunks in offsets.items()
            )
        return "applies cleanly", ""
    # Apply it to a throwaway copy to collect the rejected hunks.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(scratch, copy)
        rej = Path(tmp) / "rejects"
        out = patch_cmd(copy, path, "-r", str(rej))
        rejected = rej.read_text(errors="replace") if rej.exists() else ""
    failed = [
        f"{current}: {line.split(' -- ')[0]}" if "FAILED at" in line else line
        for current, line in _with_files((out.stdout + out.stderr).splitlines())
        if re.search(r"FAILED at|can't find file|No file to patch", line)
    ]
    detail = "\n".join(failed)
    if evidence:
        detail += f"\n({evidence[0]})"
    if rejected:
        detail += f"\n\n```diff\n{rejected.rstrip()}\n```"
    return "conflicts", detail.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--name", required=True, help="TREE in a few words (title)")
    parser.add_argument("--source", required=True, help="where TREE comes from")
    parser.add_argument("--command", default="", help="the command that ran this")
    parser.add_argument("patches", type=Path, nargs="+")
    args = parser.parse_args()
    target = args.target.resolve()

    patches = [(path, read_patch(path)) for path in args.patches]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        # Only the files the series touches: a full clone is large and read-only here.
        for diff in (d for _, p in patches for d in p.files if d.old_path):
            src, dst = target / diff.old_path, scratch / diff.old_path
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        results = []
        for path, patch in patches:
            status, detail = try_patch(patch, path, target, scratch)
            if status == "applies cleanly" and not (target / "test").is_dir():
                if any(d.path.startswith("test/") for d in patch.files):
                    detail = (
                        "new test file; the target has no test/ directory (a wheel "
                        "ships none), so upstream's tests were not compared: check a clone"
                    )
            results.append((path.name, status, detail))

    order = ("applies cleanly", "applies with offset", "conflicts", "already upstream")
    counts = {s: sum(r[1] == s for r in results) for s in order}
    print(f"# Rebase report: the series on {args.name}\n")
    if args.command:
        print(f"- Command: `{args.command}`")
    print(f"- Target: {args.source}")
    print(
        f"- Series: {len(results)} patches from patches/series, tried in order with `patch -p1 -F0`"
    )
    print(f"- Run on: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} (UTC)\n")
    print("| # | patch | result |")
    print("|---|---|---|")
    for i, (name, status, detail) in enumerate(results, 1):
        short = status
        if status == "already upstream":
            short += (
                " (reverse-applies)"
                if "reverse" in detail
                else " (equivalent change present)"
            )
        print(f"| {i} | `{name}` | {short} |")
    summary = ", ".join(f"{s}: {n}" for s, n in counts.items() if n)
    print(f"\nSummary: {summary}.\n")
    if counts.get("already upstream"):
        print(
            "Patches already upstream are to be dropped from patches/series when the "
            "pin moves to this release; the others are rebased with `make refresh`.\n"
        )
    print("## Per patch\n")
    for i, (name, status, detail) in enumerate(results, 1):
        print(
            f"### {i}. {name}\n\n**{status}**"
            + (f": {detail}" if detail and "\n" not in detail else "")
        )
        if detail and "\n" in detail:
            print(f"\n{detail}")
        print()
    return 1 if counts.get("conflicts") else 0


if __name__ == "__main__":
    sys.exit(main())
