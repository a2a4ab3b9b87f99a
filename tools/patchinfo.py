"""Read one patch of the series: its header (git format-patch or plain DEP-3),
its description and, per file, the lines it adds and removes.

Shared by check_patches.py, rebase_report.py and pr_body.py, so the three agree
on what a patch says and what it touches. Stdlib only.
"""

import builtins
import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

_FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
_HUNK_RE = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@ ?(.*)$")
_IDENT_RE = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_DEF_RE = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")
# A class-level annotated name (dataclass field); parameters end with a comma.
_FIELD_DEF_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*:\s*[^=,\s][^=,]*(?:=[^,]*)?$")
_ATTR_SET_RE = re.compile(r"^\s*[A-Za-z_][\w.]*\.([A-Za-z_]\w*)\s*=(?!=)")
_NOT_NAMES = set(keyword.kwlist) | set(dir(builtins))


@dataclass
class FileDiff:
    path: str  # the path the patch leaves, without the a/ b/ prefix
    old_path: str | None  # None for a new file
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the hunks' context lines
    contexts: list[str] = field(default_factory=list)  # hunk header contexts
    prefixed: bool = True  # both sides use a/ and b/ (-p1)

    @property
    def is_new(self) -> bool:
        return self.old_path is None


@dataclass
class Patch:
    path: Path
    text: str
    subject: str
    body: str  # commit message body without the DEP-3 trailer block
    fields: dict[str, list[str]]  # header fields and DEP-3 trailers, unfolded
    files: list[FileDiff]

    @property
    def description(self) -> str:
        return f"{self.subject}\n\n{self.body}".strip()


def _unfold(lines: list[str]) -> dict[str, list[str]]:
    """RFC 822 style 'Key: value' lines with indented continuations."""
    fields: dict[str, list[str]] = {}
    key = None
    for line in lines:
        if line[:1] in (" ", "\t") and key:
            fields[key][-1] = (fields[key][-1] + " " + line.strip()).strip()
            continue
        m = _FIELD_RE.match(line)
        if m:
            key = m.group(1)
            fields.setdefault(key, []).append(m.group(2).strip())
        else:
            key = None
    return fields


def _parse_message(header: list[str]) -> tuple[str, str, dict[str, list[str]]]:
    """Subject, body and fields of a header: git format-patch's mail (From line,
    fields, a blank line, the body, '---', diffstat) or a plain DEP-3 paragraph."""
    first = header[0] if header else ""
    mbox = first.startswith("From ") and not _FIELD_RE.match(first)
    end = header.index("") if "" in header else len(header)
    fields = _unfold(header[1 if mbox else 0 : end])
    body_lines = header[end + 1 :]
    if "---" in body_lines:
        body_lines = body_lines[: body_lines.index("---")]
    subject = (fields.get("Subject") or fields.get("Description") or [""])[0]
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
    # The last paragraph of the body is the trailer block when it is all fields.
    while body_lines and not body_lines[-1].strip():
        body_lines.pop()
    start = len(body_lines)
    while start > 0 and body_lines[start - 1].strip():
        start -= 1
    block = body_lines[start:]
    if block and all(_FIELD_RE.match(line) for line in block):
        for key, values in _unfold(block).items():
            fields.setdefault(key, []).extend(values)
        body_lines = body_lines[:start]
    return subject.strip(), "\n".join(body_lines).strip(), fields


def _strip_prefix(path: str) -> tuple[str | None, bool]:
    path = path.split("\t")[0].strip()
    if path == "/dev/null":
        return None, True
    for prefix in ("a/", "b/"):
        if path.startswith(prefix):
            return path[2:], True
    return path, False


def _parse_diff(lines: list[str]) -> list[FileDiff]:
    files: list[FileDiff] = []
    current = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if (
            line.startswith("--- ")
            and i + 1 < len(lines)
            and lines[i + 1].startswith("+++ ")
        ):
            old, old_ok = _strip_prefix(line[4:])
            new, new_ok = _strip_prefix(lines[i + 1][4:])
            current = FileDiff(path=new or old or "", old_path=old)
            current.prefixed = old_ok and new_ok
            files.append(current)
            i += 2
            continue
        m = _HUNK_RE.match(line)
        if m and current is not None:
            # Walk the hunk by its line counts, so '--- ' inside it is content.
            old_left = int(m.group(1) or 1)
            new_left = int(m.group(2) or 1)
            if m.group(3):
                current.contexts.append(m.group(3))
            i += 1
            while i < len(lines) and (old_left > 0 or new_left > 0):
                body = lines[i]
                if body.startswith("-"):
                    current.removed.append(body[1:])
                    old_left -= 1
                elif body.startswith("+"):
                    current.added.append(body[1:])
                    new_left -= 1
                elif body.startswith("\\"):
                    pass  # "\ No newline at end of file"
                else:
                    current.kept.append(body[1:])
                    old_left -= 1
                    new_left -= 1
                i += 1
            continue
        i += 1
    return files


def read_patch(path: Path) -> Patch:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    # git format-patch's diff starts at its first 'diff --git' line (make refresh).
    start = next(
        (i for i, x in enumerate(lines) if x.startswith("diff --git ")), len(lines)
    )
    subject, body, fields = _parse_message(lines[:start])
    return Patch(Path(path), text, subject, body, fields, _parse_diff(lines[start:]))


def code_lines(lines: list[str]) -> list[str]:
    """LINES without comments and docstrings (naive: good enough for names)."""
    code, in_doc = [], False
    for line in lines:
        quotes = line.count('"""') + line.count("'''")
        if in_doc or line.strip().startswith(('"""', "'''")):
            in_doc = in_doc != (quotes % 2 == 1)
            continue
        code.append(line.split("#", 1)[0])
    return code


def code_names(lines: list[str]) -> set[str]:
    """Identifiers in the code of LINES that read as code: snake_case or CamelCase."""
    names = set()
    for word in _IDENT_RE.findall("\n".join(code_lines(lines))):
        if word in _NOT_NAMES or len(word) < 4:
            continue
        if "_" in word.strip("_") or re.search(r"[a-z][A-Z].*[a-z]", word):
            names.add(word)
    return names


def defined_names(lines: list[str]) -> set[str]:
    """Names that lines define: def, class, annotated fields, attributes set."""
    names = set()
    for line in code_lines(lines):
        line = line.rstrip()
        for regex in (_DEF_RE, _FIELD_DEF_RE, _ATTR_SET_RE):
            m = regex.match(line)
            if m and m.group(1) not in _NOT_NAMES:
                names.add(m.group(1))
    return names


def context_names(diff: FileDiff) -> set[str]:
    """The classes and defs that head a file's hunks (the code a hunk changes)."""
    return {m.group(1) for c in diff.contexts if (m := _DEF_RE.match(c))}


def changed_names(diff: FileDiff) -> list[str]:
    """Code names a file's diff changes: definitions first, then other names."""
    defs = defined_names(diff.added) | defined_names(diff.removed)
    defs |= context_names(diff)
    others = code_names(diff.added) | code_names(diff.removed)
    return sorted(defs) + sorted(others - defs)


def message_names(patch: Patch) -> set[str]:
    """Every identifier the description mentions (dotted names split)."""
    return set(_IDENT_RE.findall(patch.description))
