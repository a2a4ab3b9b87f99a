#!/usr/bin/env bash
# Apply patches/series to the clean git tree DIR (a repository's root), all or nothing.
#   --commit   one commit per patch (git am), as in the build/ checkout
#   (default)  changes in the working tree only (git apply), as for a user's clone
# The whole series is first tried against a scratch index, so a patch that does
# not apply stops everything before the tree is touched. A tree that already
# holds the series (in its working tree or committed) is left as it is.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

mode=apply
if [[ ${1:-} == --commit ]]; then
	mode=commit
	shift
fi
[[ $# -eq 1 ]] || die "usage: $0 [--commit] DIR"
[[ -d $1 ]] || die "$1 does not exist; pass the root of an sglang clone"
dir=$(cd "$1" && pwd -P)
top=$(git -C "$dir" rev-parse --show-toplevel 2>/dev/null) || die "$dir is not a git repository; pass the root of an sglang clone"
# git apply run below a repository's root silently skips the paths outside it.
[[ $(cd "$top" && pwd -P) == "$dir" ]] || die "$dir is not the root of its repository; pass $top"
load_series
# What to call the tree in messages (apply.sh works in a scratch copy).
label=${TREE_LABEL:-$dir}

# Scratch index and object directory: the dry runs write nothing into DIR's .git.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
objects=$(cd "$dir" && cd "$(git rev-parse --git-path objects)" && pwd)
scratch_git() {
	GIT_INDEX_FILE=$scratch/index GIT_OBJECT_DIRECTORY=$scratch/objects \
		GIT_ALTERNATE_OBJECT_DIRECTORIES=$objects git -C "$dir" "$@"
}
mkdir "$scratch/objects"

# series_on_head [-R]: the scratch index becomes HEAD with the series applied
# (or, -R, reverted in reverse order); false when a patch does not fit.
series_on_head() {
	local i patch
	scratch_git read-tree HEAD
	if [[ ${1:-} == -R ]]; then
		for ((i = ${#SERIES[@]} - 1; i >= 0; i--)); do
			scratch_git apply --cached --reverse "${SERIES[i]}" 2>/dev/null || return 1
		done
		return 0
	fi
	for patch in "${SERIES[@]}"; do
		err=$(scratch_git apply --cached "$patch" 2>&1) || {
			failed=$patch
			return 1
		}
	done
}

if ! is_clean "$dir"; then
	# The working tree may hold exactly our series: then there is nothing to do.
	if series_on_head && scratch_git diff --quiet && [[ -z $(scratch_git ls-files --others --exclude-standard) ]]; then
		note "$label already has the series in its working tree; nothing to do"
		exit 0
	fi
	die "$label has uncommitted changes or untracked files (not the series); commit or stash them first"
fi

if ! series_on_head; then
	if series_on_head -R; then
		note "$label already has the series committed; nothing to do"
		exit 0
	fi
	first=${SERIES[0]}
	if scratch_git read-tree HEAD && scratch_git apply --cached --reverse --check "$first" 2>/dev/null; then
		die "$label already contains $(basename "$first") but not the whole series: upstream has the change? (nothing was changed)"
	fi
	echo "$err" >&2
	die "$(basename "$failed") does not apply to $label (git's reason above; nothing was changed): is it sglang $(lock_value version)?"
fi

if [[ $mode == commit ]]; then
	# One git am for the series: on a failure it stops, and --abort puts HEAD back.
	if ! GIT_COMMITTER_NAME="sglang-moe-lora-info" GIT_COMMITTER_EMAIL="build@invalid" \
		git -C "$dir" am --quiet --keep-non-patch --committer-date-is-author-date "${SERIES[@]}"; then
		git -C "$dir" am --abort || true
		die "git am failed in $dir after the dry run passed (nothing was kept)"
	fi
else
	# git apply takes the whole series or none of it.
	git -C "$dir" apply "${SERIES[@]}" || die "git apply failed in $dir after the dry run passed (nothing was changed)"
fi
for patch in "${SERIES[@]}"; do
	note "applied $(basename "$patch")"
done
[[ $mode == commit ]] || note "series applied to the working tree of $label"
