#!/usr/bin/env python3
"""Write the pull-request body for upstream sglang from our own docs, in the
sections of sglang's PR template: Motivation (README.md's "## Why"),
Modifications (the series' commit messages, then docs/design.md), Accuracy Tests
and Benchmarking (docs/gpu-validation.md and docs/benchmarks.md, verbatim, headed
by the cards and dates they name, or flagged when they name none), Checklist
(ticked only where the series shows it). A missing results doc is said to be missing.
"""

import argparse
import re
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no tools/__pycache__: the checkout is only read
sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchinfo import read_patch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "sglang-moe-lora-info"
CARD_RE = re.compile(
    r"\b(?:NVIDIA\s+)?(?:GB200|B200|H200|H100|H20|A100|A10G?|L40S?|L4|MI300X?|MI325X|"
    r"MI355X|RTX\s?\d{4}\w*)(?:[ -](?:SXM\d?|PCIe|NVL|HBM3e?|\d+\s?GB))*\b"
)
DATE_RE = re.compile(r"\b20\d\d-[01]\d-[0-3]\d\b")


def for_upstream(markdown: str, doc: str) -> str:
    """MARKDOWN without its title, headings demoted under the template's, and
    relative links (into our repository, which reviewers do not have) unlinked."""
    lines, fenced = [], False
    for line in re.sub(r"^# .*\n", "", markdown, count=1).splitlines():
        fenced ^= line.startswith("```")
        if not fenced and (m := re.match(r"^(#{1,6})\s+(.*)$", line)):
            line = f"{'#' * min(6, max(3, len(m[1]) + 1))} {m[2]}"
        lines.append(line)
    text = re.sub(
        r"!\[([^\]]*)\]\((?!https?:)([^)]+)\)",
        rf"_[figure: \1, {PROJECT} {Path(doc).parent}/\2; attach it to the PR]_",
        "\n".join(lines),
    )
    return re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?:|#)[^)]+\)", r"\1", text).strip()


def motivation() -> str:
    readme = (ROOT / "README.md").read_text()
    why = re.search(r"^## Why\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if not why:
        sys.exit("error: README.md has no '## Why' section for the Motivation; add one")
    # Sentences that send the reader to our docs/ (not in sglang's repository) go.
    text = re.sub(r"\s*See\s+\[?docs/.*?\.(?=\s|$)", "", why[1], flags=re.S)
    return for_upstream(text, "README.md")


def modifications(patches, base: str) -> str:
    out = [f"{len(patches)} commits on top of `{base}`, one logical change each:\n"]
    for i, patch in enumerate(patches, 1):
        files = ", ".join(f"`{d.path}`" for d in patch.files)
        out.append(f"{i}. **{patch.subject}** ({files})\n")
        for paragraph in patch.body.split("\n\n"):
            out.append("   " + paragraph.replace("\n", "\n   ") + "\n")
    design = ROOT / "docs" / "design.md"
    if design.exists():
        body = for_upstream(design.read_text(), "docs/design.md")
        out.append(
            "<details><summary>The design notes of the series</summary>\n\n"
            f"{body}\n\n</details>"
        )
    return "\n".join(out).strip()


def recorded(doc: str, what: str, absent: str = "") -> str:
    """A results doc, verbatim, headed by the cards and dates it names."""
    path = ROOT / "docs" / doc
    if not path.exists():
        return f"No {what} is recorded yet: `docs/{doc}` does not exist in {PROJECT}. {absent}"
    text = path.read_text()
    cards = sorted({" ".join(m.split()) for m in CARD_RE.findall(text)})
    dates = sorted(set(DATE_RE.findall(text)))
    if cards and dates:
        head = f"Recorded on {', '.join(cards)}; dates: {', '.join(dates)}."
    else:
        lacking = " and ".join(
            n for n, v in (("card", cards), ("date", dates)) if not v
        )
        head = f"**docs/{doc} names no {lacking} for its figures: add them before posting.**"
        print(f"warning: docs/{doc} names no {lacking}", file=sys.stderr)
    return f"{head}\n\n{for_upstream(text, f'docs/{doc}')}"


def checklist(patches) -> str:
    """sglang's checklist, ticked where the series shows it (a new test, both results)."""
    files = [d for p in patches for d in p.files]
    new_test = any(d.old_path is None and d.path.startswith("test/") for d in files)
    results = all(
        (ROOT / "docs" / d).exists() for d in ("gpu-validation.md", "benchmarks.md")
    )
    items = [
        (False, "Format your code according to the Format code with pre-commit guide."),
        (new_test, "Add unit tests according to the Run and add unit tests guide."),
        (False, "Update documentation according to the Write documentations guide."),
        (
            results,
            "Provide accuracy and speed benchmark results according to the Test the "
            "accuracy and Benchmark and profiling guides.",
        ),
        (False, "Follow the SGLang code style guidance."),
        (False, "Work with maintainers to merge your PR (see the PR merge process)."),
    ]
    return "\n".join(f"- [{'x' if done else ' '}] {item}" for done, item in items)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("patches", type=Path, nargs="+")
    args = parser.parse_args()
    patches = [read_patch(p) for p in args.patches]
    test = "The registered test `test/registered/lora/test_moe_lora_info.py` comes with this PR."
    body = [
        f"<!-- Generated by `make pr` of {PROJECT} from its docs and patches; "
        "review before posting. -->",
        "## Motivation",
        motivation(),
        "## Modifications",
        modifications(patches, args.base),
        "## Accuracy Tests",
        recorded("gpu-validation.md", "GPU test result", test),
        "## Benchmarking and Profiling",
        recorded("benchmarks.md", "benchmark result"),
        "## Checklist",
        checklist(patches),
    ]
    args.out.write_text("\n\n".join(part.strip() for part in body) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
