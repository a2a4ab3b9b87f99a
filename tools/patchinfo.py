"""One patch of the series, read once for check_patches.py, rebase_report.py and
pr_body.py: its header (git format-patch's mail or a DEP-3 paragraph, through
Python's email parser), its description and, per file, the lines it changes.
"""

import builtins
import keyword
import re
from dataclasses import dataclass, field
from email import policy
from email.parser import Parser
from pathlib import Path

FIELD_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
HUNK_RE = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@ ?(.*)$")
IDENT_RE = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
DEF_RE = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")
# A class-level annotated name (dataclass field); parameters end with a comma.
FIELD_DEF_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*:\s*[^=,\s][^=,]*(?:=[^,]*)?$")
ATTR_SET_RE = re.compile(r"^\s*[A-Za-z_][\w.]*\.([A-Za-z_]\w*)\s*=(?!=)")
NOT_NAMES = set(keyword.kwlist) | set(dir(builtins))


@dataclass
class FileDiff:
    path: str  # the path the patch leaves, without the a/ b/ prefix
    old_path: str | None  # None for a new file
    prefixed: bool  # both sides use a/ and b/ (-p1)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the hunks' context lines
    contexts: list[str] = field(default_factory=list)  # hunk header contexts


@dataclass
class Patch:
    path: Path
    text: str
    subject: str
    body: str  # commit message body without the DEP-3 trailer block
    fields: dict[str, list[str]]  # header fields and DEP-3 trailers
    files: list[FileDiff]

    @property
    def description(self) -> str:
        return f"{self.subject}\n\n{self.body}".strip()


def _path(name: str) -> tuple[str | None, bool]:
    """A ---/+++ path without its a/ or b/ (None for /dev/null), and whether it had one."""
    name = name.split("\t")[0].strip()
    if name == "/dev/null":
        return None, True
    prefixed = name.startswith(("a/", "b/"))
    return name[2:] if prefixed else name, prefixed


def _files(lines: list[str]) -> list[FileDiff]:
    files: list[FileDiff] = []
    lines = iter(lines)
    for line in lines:
        if line.startswith("--- "):
            old, old_ok = _path(line[4:])
            new_line = next(lines, "")
            if not new_line.startswith("+++ "):
                continue
            new, new_ok = _path(new_line[4:])
            files.append(FileDiff(new or old or "", old, old_ok and new_ok))
        elif (m := HUNK_RE.match(line)) and files:
            # Walk the hunk by its line counts, so '--- ' inside it is content.
            diff, old_left, new_left = files[-1], int(m[1] or 1), int(m[2] or 1)
            if m[3]:
                diff.contexts.append(m[3])
            while old_left > 0 or new_left > 0:
                body = next(lines, None)
                if body is None:
                    break
                kind, text = body[:1], body[1:]
                if kind == "\\":
                    continue  # "\ No newline at end of file"
                (
                    diff.added
                    if kind == "+"
                    else diff.removed if kind == "-" else diff.kept
                ).append(text)
                old_left -= kind != "+"
                new_left -= kind != "-"
    return files


def read_patch(path: Path) -> Patch:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    mail = Parser(policy=policy.default).parsestr(text)
    fields: dict[str, list[str]] = {}
    for key, value in mail.items():
        fields.setdefault(key, []).append(str(value).strip())
    # The message ends at git's '---' line or where the diff starts.
    payload = mail.get_payload()
    message = re.split(r"^(?:---$|--- |diff )", payload, maxsplit=1, flags=re.M)[0]
    paragraphs = message.strip().split("\n\n")
    # The last paragraph of the message is the DEP-3 trailer block when it is all fields.
    if len(paragraphs) > 1 and all(map(FIELD_RE.match, paragraphs[-1].splitlines())):
        for line in paragraphs.pop().splitlines():
            key, value = FIELD_RE.match(line).groups()
            fields.setdefault(key, []).append(value.strip())
    subject = (fields.get("Subject") or fields.get("Description") or [""])[0]
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
    body = "\n\n".join(paragraphs).strip()
    return Patch(Path(path), text, subject, body, fields, _files(text.split("\n")))


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
    return {
        word
        for word in IDENT_RE.findall("\n".join(code_lines(lines)))
        if word not in NOT_NAMES
        and len(word) >= 4
        and ("_" in word.strip("_") or re.search(r"[a-z][A-Z].*[a-z]", word))
    }


def defined_names(lines: list[str]) -> set[str]:
    """Names that lines define: def, class, annotated fields, attributes set."""
    return {
        m[1]
        for line in code_lines(lines)
        for regex in (DEF_RE, FIELD_DEF_RE, ATTR_SET_RE)
        if (m := regex.match(line.rstrip())) and m[1] not in NOT_NAMES
    }


def changed_names(diff: FileDiff) -> list[str]:
    """Code names a file's diff changes: definitions (and the classes and defs that
    head its hunks) first, then other names."""
    defs = defined_names(diff.added) | defined_names(diff.removed)
    defs |= {m[1] for c in diff.contexts if (m := DEF_RE.match(c))}
    others = code_names(diff.added) | code_names(diff.removed)
    return sorted(defs) + sorted(others - defs)


def message_names(patch: Patch) -> set[str]:
    """Every identifier the description mentions (dotted names split)."""
    return set(IDENT_RE.findall(patch.description))
