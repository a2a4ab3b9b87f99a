#!/usr/bin/env bash
# Unpack the pinned wheel into DEST as a git repository laid out like upstream's
# (python/sglang/...), with the pristine release as its first commit, tagged TAG
# (the pin's tag by default).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 2 || $# -eq 3 ]] || die "usage: $0 PIN_WHEEL DEST [TAG]"
wheel=$1
dest=$2
tag=${3:-$PIN_TAG}
[[ ! -e $dest ]] || die "$dest already exists"

mkdir -p "$dest/python"
python3 - "$wheel" "$dest/python" <<'PY'
import sys
import zipfile

wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as zf:
    # Only the package: the .dist-info is packaging metadata, not upstream source.
    members = [m for m in zf.namelist() if m.startswith("sglang/")]
    if not members:
        sys.exit(f"error: {wheel} has no sglang/ package")
    zf.extractall(dest, members)
PY

git -C "$dest" init --quiet --initial-branch=main
git -C "$dest" config core.autocrlf false
# Running the tests writes bytecode into the tree; it is not a change.
printf '%s\n' '__pycache__/' '*.py[cod]' >>"$dest/.git/info/exclude"
git -C "$dest" add --all
# The release named by the wheel itself (make rebase unpacks newer ones too).
version=$(basename "$wheel" | cut -d- -f2)
# A fixed identity and date: the pristine commit, and so every patch, is reproducible.
export GIT_AUTHOR_NAME=sglang GIT_AUTHOR_EMAIL=sglang@invalid GIT_AUTHOR_DATE=2000-01-01T00:00:00+0000
export GIT_COMMITTER_NAME=sglang GIT_COMMITTER_EMAIL=sglang@invalid GIT_COMMITTER_DATE=2000-01-01T00:00:00+0000
git -C "$dest" commit --quiet --message "sglang $version (pristine, from $(basename "$wheel"))"
git -C "$dest" tag "$tag"
