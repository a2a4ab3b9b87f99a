#!/usr/bin/env python3
"""Validate patches/ the way a distro's patch validator would.

  tools/check_patches.py

Checks, reporting every problem before failing:
  - every entry of patches/series names an existing file, no entry twice;
  - no orphan: every *.patch / *.diff in patches/ is listed in series;
  - no duplicate: no two patch files carry the same diff or the same subject;
  - each patch is non-empty, ends with a newline and uses a/ b/ paths (-p1);
  - DEP-3 header: Description or Subject, Author or From ("Name <email>"),
    Origin (upstream|backport|vendor|other, optionally ", <url or commit>"),
    Forwarded (no|not-needed|yes or a URL), Last-Update (a real YYYY-MM-DD),
    optionally Applied-Upstream (a version, commit or URL, comma-separated),
    each field once;
  - each patch touches only what its description says. The rule: every file
    the patch touches must be named by its description (subject + body, DEP-3
    fields excluded) through its path, its basename, its module name when that
    reads as code (base_backend, lora_moe_runners), or a code name (snake_case
    or CamelCase identifier) that the patch adds or removes in that file or
    that heads one of the file's hunks (the class or def it changes).

The series is read through tools/lib.sh (series_patches), the one parser.
"""

import datetime
import hashlib
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchinfo import changed_names, message_names, read_patch  # noqa: E402

TOOLS = Path(__file__).resolve().parent
PATCHES_DIR = TOOLS.parent / "patches"
ORIGIN_RE = re.compile(r"^(upstream|backport|vendor|other)(,\s*\S+)?$")
APPLIED_RE = re.compile(r"^[^\s,]+(,\s*[^\s,]+)*$")
FORWARDED_RE = re.compile(r"^(no|not-needed|yes)$|^https?://\S+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
AUTHOR_RE = re.compile(r"^[^<>]+<[^<>@\s]+@[^<>\s]+>$")


def series_entries() -> list[str]:
    """The series, parsed by lib.sh (the one place that knows its format)."""
    script = 'source "$1" && series_patches'
    result = subprocess.run(
        ["bash", "-c", script, "series", str(TOOLS / "lib.sh")],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.exit(result.stderr.strip() or "error: could not read patches/series")
    return result.stdout.split()


def one_field(fields, names, problems, label):
    """The single value of the first of NAMES present; report absence or repeats."""
    present = [n for n in names if fields.get(n)]
    if not present:
        problems.append(f"no {label} field ({' or '.join(names)})")
        return None
    values = [v for n in present for v in fields[n]]
    if len(values) > 1:
        problems.append(f"{label} given {len(values)} times ({', '.join(present)})")
    return values[0]


def check_dep3(patch) -> list[str]:
    problems = []
    fields = patch.fields
    desc = one_field(fields, ("Description", "Subject"), problems, "description")
    if desc is not None and not desc.strip():
        problems.append("empty Description/Subject")
    author = one_field(fields, ("Author", "From"), problems, "author")
    if author is not None and not AUTHOR_RE.match(author):
        problems.append(f"author {author!r} is not 'Name <email>'")
    origin = one_field(fields, ("Origin",), problems, "Origin")
    if origin is not None and not ORIGIN_RE.match(origin):
        if not re.match(r"^https?://\S+$", origin):
            problems.append(
                f"Origin {origin!r} is not upstream|backport|vendor|other[, URL] or a URL"
            )
    forwarded = one_field(fields, ("Forwarded",), problems, "Forwarded")
    if forwarded is not None and not FORWARDED_RE.match(forwarded):
        problems.append(f"Forwarded {forwarded!r} is not no, not-needed, yes or a URL")
    if fields.get("Applied-Upstream"):
        applied = one_field(fields, ("Applied-Upstream",), problems, "Applied-Upstream")
        if not APPLIED_RE.match(applied):
            problems.append(
                f"Applied-Upstream {applied!r} is not a version, commit or URL list"
            )
    updated = one_field(fields, ("Last-Update",), problems, "Last-Update")
    if updated is not None:
        try:
            if not DATE_RE.match(updated):
                raise ValueError
            datetime.date.fromisoformat(updated)
        except ValueError:
            problems.append(f"Last-Update {updated!r} is not a date YYYY-MM-DD")
    return problems


def describes(patch, diff) -> str | None:
    """The name by which the description covers DIFF's file, or None."""
    text = patch.description
    path = diff.path
    base = path.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0]
    if path in text:
        return path
    if re.search(rf"(?<![\w/.]){re.escape(base)}\b", text):
        return base
    if "_" in stem.strip("_") and re.search(rf"\b{re.escape(stem)}\b", text):
        return stem
    mentioned = message_names(patch)
    named = [n for n in changed_names(diff) if n in mentioned]
    return named[0] if named else None


def check_patch(patch) -> list[str]:
    if not patch.text.strip():
        return ["is empty"]
    problems = []
    if not patch.text.endswith("\n"):
        problems.append("does not end with a newline")
    problems += check_dep3(patch)
    if not patch.files:
        problems.append("contains no diff")
    for diff in patch.files:
        if not diff.prefixed:
            problems.append(f"{diff.path}: paths lack the a/ b/ prefixes (-p1)")
        if describes(patch, diff) is None:
            problems.append(
                f"touches {diff.path}, which its description does not name "
                "(by path, basename, module or a name it changes there)"
            )
    return problems


def main() -> int:
    problems: list[str] = []
    entries = series_entries()
    if not entries:
        problems.append("patches/series lists no patches")
    seen = set()
    for entry in entries:
        if entry in seen:
            problems.append(f"patches/series lists {entry} more than once")
        seen.add(entry)
        if not (PATCHES_DIR / entry).is_file():
            problems.append(
                f"patches/series lists {entry}, but patches/{entry} does not exist"
            )
    files = sorted(p for p in PATCHES_DIR.iterdir() if p.suffix in (".patch", ".diff"))
    for orphan in (p.name for p in files if p.name not in seen):
        problems.append(
            f"patches/{orphan} is not in patches/series; add it there or delete it"
        )

    by_diff: dict[str, str] = {}
    by_subject: dict[str, str] = {}
    for path in files:
        patch = read_patch(path)
        problems += [f"patches/{path.name}: {p}" for p in check_patch(patch)]
        diff_start = patch.text.find("\ndiff ")
        digest = hashlib.sha256(patch.text[diff_start:].encode()).hexdigest()
        for key, table in ((digest, by_diff), (patch.subject, by_subject)):
            if key and key in table:
                what = "diff" if table is by_diff else "subject"
                problems.append(
                    f"patches/{path.name} duplicates the {what} of patches/{table[key]}"
                )
            table.setdefault(key, path.name)

    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(
            f"error: {len(problems)} problem(s) in {PATCHES_DIR}; fix the patches "
            "(or 'make refresh' from build/sglang) and run this again",
            file=sys.stderr,
        )
        return 1
    print(
        f"==> {len(entries)} patches: series complete, DEP-3 headers well formed, "
        "each touches only what it describes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
