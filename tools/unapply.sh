#!/usr/bin/env bash
# Restore build/sglang to the pristine pin (tag v0.5.12), discarding the series
# and any local edits in it. 'make apply' then applies the series again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

restore_pristine() {
	[[ -d $PIN_TREE/.git ]] || die "$PIN_TREE not found; run 'make apply' first"
	git -C "$PIN_TREE" rev-parse --verify --quiet "$PIN_TAG^{commit}" >/dev/null ||
		die "$PIN_TREE has no tag $PIN_TAG; remove it and run 'make apply'"
	git -C "$PIN_TREE" checkout --quiet --force -B main "$PIN_TAG"
	git -C "$PIN_TREE" clean --quiet -fdx
	rm -f "$PIN_TREE/.git/moe-lora-info-applied"
	note "$PIN_TREE is the pristine pin again ($PIN_TAG)"
}

with_lock "$BUILD_DIR/.lock" restore_pristine
