#!/usr/bin/env python3
"""Validate patches/ as a distro's patch validator would, reporting every problem:
the series names existing files, once each; no orphan, no duplicate diff or subject;
each patch non-empty, newline-terminated, -p1, with a DEP-3 header (FIELDS, each
once); and every file a patch touches is named by its description: by path,
basename, module name (base_backend) or a code name the patch changes there.
"""

import datetime
import hashlib
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no tools/__pycache__: the checkout is only read
sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchinfo import changed_names, message_names, read_patch  # noqa: E402

PATCHES_DIR = Path(__file__).resolve().parent.parent / "patches"
URL = r"https?://\S+"
# Each field (with the name git uses for it), its value's pattern, what that is.
FIELDS = {
    "Description|Subject": (r"\S.*", "a non-empty text"),
    "Author|From": (r"[^<>]+<[^<>@\s]+@[^<>\s]+>", "'Name <email>'"),
    "Origin": (
        rf"(upstream|backport|vendor|other)(,\s*\S+)?|{URL}",
        "upstream|backport|vendor|other[, URL] or a URL",
    ),
    "Forwarded": (rf"no|not-needed|yes|{URL}", "no, not-needed, yes or a URL"),
    "Last-Update": (r"\d{4}-\d{2}-\d{2}", "a date YYYY-MM-DD"),
    "Applied-Upstream": (r"[^\s,]+(,\s*[^\s,]+)*", "a version, commit or URL list"),
}


def is_date(value: str) -> bool:
    try:
        return bool(datetime.date.fromisoformat(value))
    except ValueError:
        return False


def check_dep3(fields) -> list[str]:
    problems = []
    for names, (pattern, what) in FIELDS.items():
        label = names.replace("|", " or ")
        values = [v for n in names.split("|") for v in fields.get(n, [])]
        if not values and names != "Applied-Upstream":  # the one optional field
            problems.append(f"no {label} field")
        if len(values) > 1:
            problems.append(f"{label} given {len(values)} times")
        if values and not (
            re.fullmatch(pattern, values[0])
            and (names != "Last-Update" or is_date(values[0]))
        ):
            problems.append(f"{label} {values[0]!r} is not {what}")
    return problems


def describes(patch, diff) -> str | None:
    """The name by which the description covers DIFF's file, or None."""
    text = patch.description
    base = diff.path.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0]
    if diff.path in text:
        return diff.path
    if re.search(rf"(?<![\w/.]){re.escape(base)}\b", text):
        return base
    if "_" in stem.strip("_") and re.search(rf"\b{re.escape(stem)}\b", text):
        return stem
    mentioned = message_names(patch)
    return next((n for n in changed_names(diff) if n in mentioned), None)


def check_patch(patch) -> list[str]:
    if not patch.text.strip():
        return ["is empty"]
    problems = [] if patch.text.endswith("\n") else ["does not end with a newline"]
    problems += check_dep3(patch.fields)
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
    # quilt's format: one name per line, '#' comments, optional -pN after the name.
    lines = (PATCHES_DIR / "series").read_text().splitlines()
    entries = [
        line.split("#")[0].split()[0] for line in lines if line.split("#")[0].strip()
    ]
    if not entries:
        problems.append("patches/series lists no patches")
    for i, entry in enumerate(entries):
        if entry in entries[:i]:
            problems.append(f"patches/series lists {entry} more than once")
        elif not (PATCHES_DIR / entry).is_file():
            problems.append(
                f"patches/series lists {entry}, but patches/{entry} does not exist"
            )
    files = sorted(p for p in PATCHES_DIR.iterdir() if p.suffix in (".patch", ".diff"))
    for orphan in (p.name for p in files if p.name not in entries):
        problems.append(
            f"patches/{orphan} is not in patches/series; add it there or delete it"
        )

    seen: dict[tuple[str, str], str] = {}
    for path in files:
        patch = read_patch(path)
        problems += [f"patches/{path.name}: {p}" for p in check_patch(patch)]
        diff = patch.text[patch.text.find("\ndiff ") :]
        for key in (
            ("diff", hashlib.sha256(diff.encode()).hexdigest()),
            ("subject", patch.subject),
        ):
            if key[1] and key in seen:
                problems.append(
                    f"patches/{path.name} duplicates the {key[0]} of patches/{seen[key]}"
                )
            seen.setdefault(key, path.name)

    if problems:
        problems.append(
            f"{len(problems)} problem(s) in {PATCHES_DIR}; fix the patches "
            "(or 'make refresh' from build/sglang) and run this again"
        )
        sys.exit("\n".join(f"error: {p}" for p in problems))
    print(
        f"==> {len(entries)} patches: series complete, DEP-3 headers well formed, "
        "each touches only what it describes",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
