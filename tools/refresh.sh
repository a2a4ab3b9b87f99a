#!/usr/bin/env bash
# Export the commits on the pristine tag in build/sglang as patches/ (normalized, so
# no new commit means no diff) and regenerate the mirror.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ -d $PIN_TREE/.git ]] || die "$PIN_TREE not found; run 'make apply' first"
is_clean "$PIN_TREE" || die "$PIN_TREE has uncommitted changes; commit them first (one commit per patch)"
count=$(git -C "$PIN_TREE" rev-list --count "$PIN_TAG..HEAD")
[[ $count -gt 0 ]] || die "$PIN_TREE has no commits on top of $PIN_TAG"
git -C "$PIN_TREE" rev-list --merges "$PIN_TAG..HEAD" | grep -q . && die "$PIN_TREE has merge commits; the series must be linear"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$PIN_TREE" \
	-c diff.noprefix=false -c diff.mnemonicPrefix=false -c diff.algorithm=myers \
	-c diff.renames=false -c format.signature= -c core.abbrev=12 \
	format-patch --quiet --zero-commit --filename-max-length=100 --no-signature --no-numbered \
	--output-directory "$tmp" "$PIN_TAG..HEAD"
for patch in "$tmp"/*.patch; do
	sed -i '/^index [0-9a-f]\{1,\}\.\.[0-9a-f]\{1,\}/d' "$patch"
done

# Replace patches/ with the export; the series lists them in commit order.
find "$PATCHES_DIR" -maxdepth 1 -name '*.patch' -delete
cp "$tmp"/*.patch "$PATCHES_DIR/"
{
	echo "# Applied in this order with patch -p1 (quilt format). Regenerate with 'make refresh'."
	for patch in "$tmp"/*.patch; do basename "$patch"; done
} >"$PATCHES_DIR/series"

# The mirror: every file the series touches, as the patched tree has it.
"$ROOT/tools/mirror.sh" update "$PIN_TREE"
note "refreshed $count patches and the mirror from $PIN_TREE"
# The exported series is exactly this tree: record it, so 'make apply' stays a no-op.
echo "$(build_digest) $(git -C "$PIN_TREE" rev-parse HEAD)" >"$PIN_STAMP"
