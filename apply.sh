#!/usr/bin/env bash
# Fetch, verify and unpack the pinned sglang, then apply patches/series to it.
#   ./apply.sh              patch the pinned release in build/sglang (one commit per patch)
#   ./apply.sh SGLANG_DIR   patch a clean sglang clone's working tree instead
# Either the whole series is applied or nothing is changed.
set -euo pipefail
source "$(dirname "$0")/tools/lib.sh"

if [[ $# -gt 1 ]]; then
	die "usage: $0 [SGLANG_DIR]"
fi

if [[ -n ${1:-} ]]; then
	[[ -d $1 ]] || die "SGLANG_DIR $1 does not exist"
	"$ROOT/tools/apply_series.sh" "$1"
	note "series applied to the working tree of $1"
	exit 0
fi

# The tree being built; removed on any exit, so a failure leaves nothing half-done.
tmp=
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT

stamp_file() { echo "$PIN_TREE/.git/moe-lora-info-applied"; }

apply_pin() {
	local digest head stamp pin
	digest=$(series_digest)
	if [[ -d $PIN_TREE ]]; then
		is_clean "$PIN_TREE" || die "$PIN_TREE has uncommitted changes; commit them and run 'make refresh', or run 'make unapply' to discard them"
		head=$(git -C "$PIN_TREE" rev-parse HEAD)
		stamp=$(cat "$(stamp_file)" 2>/dev/null || true)
		if [[ $stamp == "$digest $head" ]]; then
			note "$PIN_TREE already has the current series applied; nothing to do"
			return 0
		fi
		if [[ $head == $(git -C "$PIN_TREE" rev-parse "$PIN_TAG^{commit}" 2>/dev/null) ]]; then
			note "$PIN_TREE is the pristine pin; applying the series"
		elif [[ ${stamp#* } == "$head" ]]; then
			note "patches/ changed since $PIN_TREE was built; building it again"
		else
			die "$PIN_TREE has commits that are not in patches/; run 'make refresh' to keep them or 'make unapply' to discard them"
		fi
	fi

	pin=$("$ROOT/tools/fetch_pin.sh")
	mkdir -p "$BUILD_DIR"
	tmp=$(mktemp -d "$BUILD_DIR/.sglang.new.XXXXXX")
	"$ROOT/tools/unpack_pin.sh" "$pin" "$tmp/sglang"
	TREE_LABEL="the pristine sglang $(lock_value version)" "$ROOT/tools/apply_series.sh" --commit "$tmp/sglang"
	echo "$digest $(git -C "$tmp/sglang" rev-parse HEAD)" >"$tmp/sglang/.git/moe-lora-info-applied"
	rm -rf "$PIN_TREE"
	mv "$tmp/sglang" "$PIN_TREE"
	note "series applied: $PIN_TREE (pristine tag $PIN_TAG)"
}

with_lock "$BUILD_DIR/.lock" apply_pin
