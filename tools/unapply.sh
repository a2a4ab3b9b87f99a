#!/usr/bin/env bash
# Restore build/sglang to the pristine pin (tag v0.5.12); 'make apply' then applies
# the series again. Refuses while build/sglang holds edits or commits that
# 'make refresh' has not exported to patches/; --force (make unapply FORCE=1)
# discards them, as 'quilt pop -f' does.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

force=false
case ${1:-} in
--force) force=true ;;
"") ;;
*) die "usage: $0 [--force]" ;;
esac

restore_pristine() {
	local lost
	[[ -d $PIN_TREE/.git ]] || die "$PIN_TREE not found; run 'make apply' first"
	git -C "$PIN_TREE" rev-parse --verify --quiet "$PIN_TAG^{commit}" >/dev/null ||
		die "$PIN_TREE has no tag $PIN_TAG; remove it ('make clean') and run 'make apply'"
	lost=$(unexported)
	if [[ -n $lost ]]; then
		echo "$lost" >&2
		$force || die "$PIN_TREE holds uncommitted changes or commits that are not in patches/ (above), which unapply would lose; commit it and run 'make refresh', or run 'make unapply FORCE=1' to discard it"
		note "discarding the work above (FORCE=1)"
	fi
	git -C "$PIN_TREE" checkout --quiet --force -B main "$PIN_TAG"
	git -C "$PIN_TREE" clean --quiet -fdx
	rm -f "$PIN_STAMP"
	note "$PIN_TREE is the pristine pin again ($PIN_TAG)"
}

with_lock "$BUILD_DIR/.lock" restore_pristine
