#!/usr/bin/env bash
# Print the quilt series (-p2) for a tree rooted at sglang's python/ directory (the
# published package's layout); a patch only for test/ is listed commented out, and
# one that mixes python/ and other paths stops it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 0 ]] || die "usage: $0 > series.python-root"

load_series
echo "# For trees rooted at sglang's python/ directory: patch -p2 (quilt format)."
for patch in "${SERIES[@]}"; do
	name=$(basename "$patch")
	touched=$(sed -n 's|^diff --git a/\([^ ]*\) b/.*|\1|p' "$patch")
	[[ -n $touched ]] || die "$name has no 'diff --git a/... b/...' lines; regenerate it with 'make refresh'"
	if ! grep -qv '^python/' <<<"$touched"; then
		echo "$name -p2"
	elif ! grep -q '^python/' <<<"$touched"; then
		echo "# $name -p2   (not for this layout: touches only $(tr '\n' ' ' <<<"$touched" | sed 's/ $//'))"
	else
		die "$name touches python/ and other paths, so a python/-rooted tree cannot take it; split it into one patch for python/ and one for the rest"
	fi
done
