#!/usr/bin/env bash
# Apply patches/series to the clean git tree DIR, all or nothing.
#   --commit   one commit per patch (git am), as in the build/ checkout
#   (default)  changes in the working tree only (git apply), as for a user's clone
# The whole series is first tried against a scratch index, so a patch that does
# not apply stops everything before the tree is touched.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mode=apply
if [[ ${1:-} == --commit ]]; then
	mode=commit
	shift
fi
[[ $# -eq 1 ]] || die "usage: $0 [--commit] DIR"
dir=$1

git -C "$dir" rev-parse --git-dir >/dev/null 2>&1 || die "$dir is not a git repository"
is_clean "$dir" || die "$dir has uncommitted changes or untracked files; commit or stash them first"
load_series
patches=("${SERIES[@]}")
[[ ${#patches[@]} -gt 0 ]] || die "patches/series lists no patches"
# What to call the tree in messages (apply.sh works in a scratch copy).
label=${TREE_LABEL:-$dir}

# Dry run on a scratch index: every patch must apply, with exact context, in order.
scratch=$(mktemp)
trap 'rm -f "$scratch"' EXIT
GIT_INDEX_FILE=$scratch git -C "$dir" read-tree HEAD
for patch in "${patches[@]}"; do
	if ! err=$(GIT_INDEX_FILE=$scratch git -C "$dir" apply --cached "$patch" 2>&1); then
		first=${patches[0]}
		if GIT_INDEX_FILE=$scratch git -C "$dir" read-tree HEAD &&
			GIT_INDEX_FILE=$scratch git -C "$dir" apply --cached --reverse --check "$first" 2>/dev/null; then
			die "$label already contains $(basename "$first"): the series is already applied (or upstream has the change)"
		fi
		die "$(basename "$patch") does not apply to $label (nothing was changed):
$err"
	fi
done

for patch in "${patches[@]}"; do
	if [[ $mode == commit ]]; then
		GIT_COMMITTER_NAME="sglang-moe-lora-info" GIT_COMMITTER_EMAIL="build@invalid" \
			git -C "$dir" am --quiet --keep-non-patch --committer-date-is-author-date "$patch" ||
			die "git am $(basename "$patch") failed in $dir after the dry run passed"
	else
		git -C "$dir" apply "$patch" || die "git apply $(basename "$patch") failed in $dir after the dry run passed"
	fi
	note "applied $(basename "$patch")"
done
