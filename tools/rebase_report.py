#!/usr/bin/env python3
"""Try the series on a newer sglang tree (only read) and report, per patch, in
Markdown: applies cleanly | applies with offset | conflicts (with the rejected
hunks) | already upstream (it reverse-applies, or an equivalent change is there).
The patches are tried in order, with patch -p1 -F0 as distros do, on a scratch
copy of the files they touch. An equivalent change is a rewrite upstream (0.5.13
has this change in other code): the classes, defs, fields and attributes the
patch adds and its description names (else the new names its added lines use)
are all in TREE, and the definitions it removes and names are gone.
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

sys.dont_write_bytecode = True  # no tools/__pycache__: the checkout is only read
sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchinfo import code_names, defined_names, message_names, read_patch  # noqa: E402

OFFSET_RE = re.compile(r"Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)")
ORDER = ("applies cleanly", "applies with offset", "conflicts", "already upstream")


def patch_cmd(tree: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess:
    # -f: never guess that a patch is reversed; -F0: exact context, as dpkg-source.
    cmd = ["patch", "-p1", "-f", "-F0", "--no-backup-if-mismatch", "-d", str(tree)]
    return subprocess.run(
        [*cmd, *extra, "-i", str(patch)], capture_output=True, text=True
    )


def text_of(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def defines(path: Path, name: str) -> bool:
    """Whether the file at PATH defines NAME (as patchinfo reads a definition)."""
    text = text_of(path)
    return name in text and name in defined_names(text.splitlines())


def defined_elsewhere(target: Path, name: str) -> str | None:
    """The first file under python/ or test/ of TARGET that defines NAME."""
    files = (
        p for top in ("python", "test") for p in sorted((target / top).rglob("*.py"))
    )
    return next((str(p.relative_to(target)) for p in files if defines(p, name)), None)


def equivalent_change(patch, target: Path) -> tuple[bool, list[str]]:
    """Whether TARGET already has the patch's change in other code, and the evidence."""
    mentioned = message_names(patch)
    keys, uses, gone = [], [], []
    for diff in patch.files:
        added, removed = defined_names(diff.added), defined_names(diff.removed)
        keys += [(diff.path, n) for n in sorted((added - removed) & mentioned)]
        gone += [(diff.path, n) for n in sorted((removed - added) & mentioned)]
        new = code_names(diff.added) - code_names(diff.removed + diff.kept)
        uses += [(diff.path, n) for n in sorted(new & mentioned)]
    if not (keys or uses):
        return False, []
    evidence, missing = [], []
    for path, name in keys or uses:
        # A definition may have moved to another file upstream; a use may not.
        if re.search(rf"\b{re.escape(name)}\b", text_of(target / path)):
            evidence.append(f"`{name}` in {path}")
        elif (path, name) not in uses and (moved := defined_elsewhere(target, name)):
            evidence.append(f"`{name}` in {moved}")
        else:
            missing.append(name)
    for path, name in gone:
        if defines(target / path, name):
            missing.append(f"{name} (still defined)")
        else:
            evidence.append(f"`{name}` gone from {path}")
    return not missing, evidence


def with_files(lines):
    """Pair each line of patch's output with the file it was patching."""
    current = ""
    for line in lines:
        if line.startswith(("patching file ", "checking file ")):
            current = line.split(" ", 2)[2]
        yield current, line


def try_patch(patch, path: Path, target: Path, scratch: Path) -> tuple[str, str]:
    """Classify one patch against SCRATCH (applying it there when it applies)."""
    if patch_cmd(scratch, path, "-R", "--dry-run", "-s").returncode == 0:
        return "already upstream (reverse-applies)", "its exact change is there"
    same, evidence = equivalent_change(patch, target)
    if same:
        return "already upstream (equivalent change present)", ", ".join(evidence)
    dry = patch_cmd(scratch, path, "--dry-run")
    if dry.returncode == 0:
        patch_cmd(scratch, path)
        offsets = {}
        for current, line in with_files(dry.stdout.splitlines()):
            if m := OFFSET_RE.search(line):
                offsets.setdefault(current, []).append(
                    f"hunk #{m[1]} at line {m[2]} ({int(m[3]):+d})"
                )
        if offsets:
            return "applies with offset", "; ".join(
                f"{file}: {', '.join(hunks)}" for file, hunks in offsets.items()
            )
        return "applies cleanly", ""
    # Apply it to a throwaway copy to collect the rejected hunks.
    with tempfile.TemporaryDirectory() as tmp:
        copy, rej = Path(tmp) / "tree", Path(tmp) / "rejects"
        shutil.copytree(scratch, copy)
        out = patch_cmd(copy, path, "-r", str(rej))
        rejected = text_of(rej)
    failed = [
        f"{current}: {line.split(' -- ')[0]}" if "FAILED at" in line else line
        for current, line in with_files((out.stdout + out.stderr).splitlines())
        if re.search(r"FAILED at|can't find file|No file to patch", line)
    ]
    detail = "\n".join(failed)
    if rejected:
        detail += f"\n\n```diff\n{rejected.rstrip()}\n```"
    return "conflicts", detail.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, required=True)
    parser.add_argument("--name", required=True, help="TREE in a few words (title)")
    parser.add_argument("--source", required=True, help="where TREE comes from")
    parser.add_argument("--command", required=True, help="the command that ran this")
    parser.add_argument("patches", type=Path, nargs="+")
    args = parser.parse_args()
    target = args.target.resolve()

    patches = [(path, read_patch(path)) for path in args.patches]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        # Only the files the series touches: a full clone is large and read-only here.
        for diff in (d for _, p in patches for d in p.files if d.old_path):
            src, dst = target / diff.old_path, scratch / diff.old_path
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        for path, patch in patches:
            status, detail = try_patch(patch, path, target, scratch)
            if status == "applies cleanly" and not (target / "test").is_dir():
                if any(d.path.startswith("test/") for d in patch.files):
                    detail = (
                        "new test file; the target has no test/ directory (a wheel "
                        "ships none), so upstream's tests were not compared: check a clone"
                    )
            results.append((path.name, status, detail))

    counts = {s: sum(r[1].startswith(s) for r in results) for s in ORDER}
    out = [
        f"# Rebase report: the series on {args.name}\n",
        f"- Command: `{args.command}`",
        f"- Target: {args.source}",
        f"- Series: {len(results)} patches from patches/series, tried in order with `patch -p1 -F0`",
        f"- Run on: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} (UTC)\n",
        "| # | patch | result |",
        "|---|---|---|",
    ]
    out += [f"| {i} | `{r[0]}` | {r[1]} |" for i, r in enumerate(results, 1)]
    out.append(
        f"\nSummary: {', '.join(f'{s}: {n}' for s, n in counts.items() if n)}.\n"
    )
    if counts["already upstream"]:
        out.append(
            "Patches already upstream are to be dropped from patches/series when the "
            "pin moves to this release; the others are rebased with `make refresh`.\n"
        )
    out.append("## Per patch\n")
    for i, (name, status, detail) in enumerate(results, 1):
        sep = "\n\n" if "\n" in detail else ": "
        out.append(f"### {i}. {name}\n\n**{status}**{sep + detail if detail else ''}\n")
    print("\n".join(out))
    return 1 if counts["conflicts"] else 0


if __name__ == "__main__":
    sys.exit(main())
