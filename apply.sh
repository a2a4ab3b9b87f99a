#!/usr/bin/env bash
# Fetch, verify and unpack the pinned sglang, then apply patches/series to it.
#   ./apply.sh              patch the pinned release in build/sglang (one commit per patch)
#   ./apply.sh SGLANG_DIR   patch a clean sglang clone's working tree instead (its root)
# Either the whole series is applied or nothing is changed.
set -euo pipefail
source "$(dirname "$0")/tools/lib.sh"

if [[ $# -gt 1 ]]; then
	die "usage: $0 [SGLANG_DIR]"
fi

if [[ -n ${1:-} ]]; then
	[[ -d $1 ]] || die "SGLANG_DIR $1 does not exist; pass the root of an sglang clone"
	"$ROOT/tools/apply_series.sh" "$1"
	exit 0
fi

# The tree being built, and the one it replaces; removed on any exit, so a
# failure leaves nothing half-done. A run killed outright leaves them behind:
# the next run removes them (it holds the lock, so no other run owns them).
tmp=
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT

apply_pin() {
	local digest lost
	rm -rf "$BUILD_DIR"/.sglang.new.*
	digest=$(build_digest)
	if [[ -e $PIN_TREE ]]; then
		git -C "$PIN_TREE" rev-parse --verify --quiet "$PIN_TAG^{commit}" >/dev/null ||
			die "$PIN_TREE is not a tree made by 'make apply' (no tag $PIN_TAG); remove it ('make clean') and run 'make apply' again"
		lost=$(unexported)
		if [[ -n $lost ]]; then
			echo "$lost" >&2
			die "$PIN_TREE holds uncommitted changes or commits that are not in patches/ (above); commit it and run 'make refresh' to keep it, or 'make unapply FORCE=1' to discard it"
		fi
		if [[ $(cat "$PIN_STAMP" 2>/dev/null) == "$digest $(git -C "$PIN_TREE" rev-parse HEAD)" ]]; then
			note "$PIN_TREE already has the current series applied; nothing to do"
			return 0
		fi
		note "upstream.lock or patches/ changed since $PIN_TREE was built (or it was unapplied); building it again"
	fi

	pin=$("$ROOT/tools/fetch_pin.sh")
	tmp=$(mktemp -d "$BUILD_DIR/.sglang.new.XXXXXX")
	"$ROOT/tools/unpack_pin.sh" "$pin" "$tmp/sglang"
	TREE_LABEL="the pristine sglang $(lock_value version)" "$ROOT/tools/apply_series.sh" --commit "$tmp/sglang"
	echo "$digest $(git -C "$tmp/sglang" rev-parse HEAD)" >"$tmp/sglang/.git/moe-lora-info-applied"
	if [[ -e $PIN_TREE ]]; then
		mv "$PIN_TREE" "$tmp/old"
	fi
	mv "$tmp/sglang" "$PIN_TREE"
	note "series applied: $PIN_TREE (pristine tag $PIN_TAG)"
}

with_lock "$BUILD_DIR/.lock" apply_pin
