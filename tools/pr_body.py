#!/usr/bin/env python3
"""Write the pull-request body for upstream sglang from our own docs.

  tools/pr_body.py --base v0.5.12 --out build/pr-body.md PATCH...

The sections are those of sglang's pull-request template. Nothing is made up:
  Motivation        README.md "## Why" (else the first commit message's opening)
  Modifications     the commit messages of the series, then docs/design.md
  Accuracy Tests    docs/gpu-validation.md, verbatim
  Benchmarking ...  docs/benchmarks.md, verbatim
  Checklist         the template's items, ticked only where the series shows it
A results doc that is missing is said to be missing; the cards and dates a
results doc names are repeated at the top of its section, and a doc naming
none is flagged in the body (and on stderr) so the figures are not posted bare.
"""

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchinfo import read_patch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "sglang-moe-lora-info"
CARD_RE = re.compile(
    r"\b(?:NVIDIA\s+)?(?:GB200|B200|H200|H100|H20|A100|A10G?|L40S?|L4|MI300X?|MI325X|"
    r"MI355X|RTX\s?\d{4}\w*)(?:[ -](?:SXM\d?|PCIe|NVL|HBM3e?|\d+\s?GB))*\b"
)
DATE_RE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")
HEADING_RE = re.compile(r"^(#{1,6})\s+(.*)$")
CHECKLIST = [
    ("Format your code according to the Format code with pre-commit guide.", None),
    ("Add unit tests according to the Run and add unit tests guide.", "tests"),
    ("Update documentation according to the Write documentations guide.", None),
    (
        "Provide accuracy and speed benchmark results according to the Test the "
        "accuracy and Benchmark and profiling guides.",
        "results",
    ),
    ("Follow the SGLang code style guidance.", None),
    ("Work with maintainers to merge your PR (see the PR merge process).", None),
]


def sections(text: str) -> list[tuple[int, str, str]]:
    """(level, title, body) of each heading of a Markdown text, outside code blocks."""
    out, level, title, body, fenced = [], 0, "", [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else HEADING_RE.match(line)
        if m:
            out.append((level, title, "\n".join(body).strip()))
            level, title, body = len(m[1]), m[2].strip(), []
        else:
            body.append(line)
    out.append((level, title, "\n".join(body).strip()))
    return out


def section(text: str, pattern: str) -> str | None:
    """The body of the first section whose title matches PATTERN, with its subsections."""
    found = sections(text)
    for i, (level, title, body) in enumerate(found):
        if level and re.search(pattern, title, re.I):
            parts = [body]
            for sub_level, sub_title, sub_body in found[i + 1 :]:
                if sub_level <= level:
                    break
                parts.append(f"{'#' * sub_level} {sub_title}\n\n{sub_body}")
            return "\n\n".join(p for p in parts if p).strip()
    return None


def for_upstream(markdown: str, doc: str) -> str:
    """Demote headings under the template's and unlink our repo's relative paths."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else HEADING_RE.match(line)
        if m:
            line = f"{'#' * min(6, max(3, len(m[1]) + 1))} {m[2]}"
        lines.append(line)
    text = "\n".join(lines)
    # A relative link points into our repository, which reviewers do not have.
    text = re.sub(
        r"!\[([^\]]*)\]\((?!https?:)([^)]+)\)",
        rf"_[figure: \1, {PROJECT} {Path(doc).parent}/\2; attach it to the PR]_",
        text,
    )
    text = re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?:|#)[^)]+\)", r"\1", text)
    return text.strip()


def without_doc_pointers(text: str) -> str:
    """Drop sentences that send the reader to our docs/ (not in sglang's repo)."""
    return re.sub(r"\s*See\s+\[?docs/.*?\.(?=\s|$)", "", text, flags=re.S).strip()


def motivation(patches) -> str:
    readme = ROOT / "README.md"
    if readme.exists():
        found = section(readme.read_text(), r"^(why|motivation)\b")
        if found:
            return for_upstream(without_doc_pointers(found), "README.md")
    # Our own words still: the opening of the first commit message.
    return patches[0].body.split("\n\n")[0]


def modifications(patches, base: str) -> str:
    out = [f"{len(patches)} commits on top of `{base}`, one logical change each:\n"]
    for i, patch in enumerate(patches, 1):
        files = ", ".join(f"`{d.path}`" for d in patch.files)
        out.append(f"{i}. **{patch.subject}** ({files})\n")
        for paragraph in patch.body.split("\n\n"):
            out.append("   " + paragraph.replace("\n", "\n   ") + "\n")
    design = ROOT / "docs" / "design.md"
    if design.exists():
        text = design.read_text()
        found = sections(text)
        title = found[1][1] if len(found) > 1 else "Design"
        body = for_upstream(re.sub(r"^# .*\n", "", text, count=1), "docs/design.md")
        out.append(
            f"<details><summary>{title}: the design notes of the series</summary>\n\n"
            f"{body}\n\n</details>"
        )
    return "\n".join(out).strip()


def recorded(doc: str, what: str, absent: str) -> str:
    """A results doc, verbatim, headed by the cards and dates it names."""
    path = ROOT / "docs" / doc
    if not path.exists():
        return (
            f"No {what} is recorded yet: `docs/{doc}` does not exist in {PROJECT}. "
            f"{absent}"
        )
    text = path.read_text()
    cards = sorted(set(" ".join(m.split()) for m in CARD_RE.findall(text)))
    dates = sorted(set(DATE_RE.findall(text)))
    if cards and dates:
        head = f"Recorded on {', '.join(cards)}; dates: {', '.join(dates)}."
    else:
        lacking = " and ".join(
            n for n, v in (("card", cards), ("date", dates)) if not v
        )
        head = (
            f"**docs/{doc} names no {lacking} for its figures: add them before "
            "posting.**"
        )
        print(f"warning: docs/{doc} names no {lacking}", file=sys.stderr)
    body = for_upstream(re.sub(r"^# .*\n", "", text, count=1), f"docs/{doc}")
    return f"{head}\n\n{body}"


def checklist(patches) -> str:
    adds_tests = any(
        d.is_new and d.path.startswith("test/") for p in patches for d in p.files
    )
    have_results = all(
        (ROOT / "docs" / doc).exists() for doc in ("gpu-validation.md", "benchmarks.md")
    )
    ticks = {"tests": adds_tests, "results": have_results}
    return "\n".join(
        f"- [{'x' if ticks.get(key) else ' '}] {item}" for item, key in CHECKLIST
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("patches", type=Path, nargs="+")
    args = parser.parse_args()
    patches = [read_patch(p) for p in args.patches]

    body = [
        f"<!-- Generated by `make pr` of {PROJECT} from its docs and patches; "
        "review before posting. -->",
        "## Motivation",
        motivation(patches),
        "## Modifications",
        modifications(patches, args.base),
        "## Accuracy Tests",
        recorded(
            "gpu-validation.md",
            "GPU test result",
            "The registered test `test/registered/lora/test_moe_lora_info.py` "
            "comes with this PR.",
        ),
        "## Benchmarking and Profiling",
        recorded("benchmarks.md", "benchmark result", ""),
        "## Checklist",
        checklist(patches),
    ]
    args.out.write_text("\n\n".join(part.strip() for part in body) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
