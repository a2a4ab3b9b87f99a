#!/usr/bin/env bash
# Fetch, verify and unpack the pinned sglang, then apply patches/series to it.
#   ./apply.sh                     patch the pinned release in build/sglang (one commit per patch)
#   ./apply.sh SGLANG_DIR          patch a clean sglang clone's working tree instead (its root)
#   ./apply.sh --unapply [--force] reset build/sglang to the pristine pin (make unapply)
# Either the whole series is applied or nothing is changed.
set -euo pipefail
source "$(dirname "$0")/tools/lib.sh"

[[ $# -le 1 || "$*" == "--unapply --force" ]] || die "usage: $0 [SGLANG_DIR | --unapply [--force]]"
version=$(lock_value version)
force=false
# Removed on any exit: the scratch index (a clone), or the tree being built and the one
# it replaces (build/.sglang.new.*, which the next run removes if this one is killed).
tmp=
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT

report() {
	for patch in "${SERIES[@]}"; do note "applied $(basename "$patch")"; done
}

# apply_clone DIR: the whole series or none of it into the clone DIR's working tree, tried
# first on a scratch index and object directory (nothing is written into DIR's .git).
apply_clone() {
	local dir top objects failed='' err='' patch reversed
	[[ -d $1 ]] || die "SGLANG_DIR $1 does not exist; pass the root of an sglang clone"
	dir=$(cd "$1" && pwd -P)
	top=$(git -C "$dir" rev-parse --show-toplevel 2>/dev/null) || die "$dir is not a git repository; pass the root of an sglang clone"
	# git apply run below a repository's root silently skips the paths outside it.
	[[ $(cd "$top" && pwd -P) == "$dir" ]] || die "$dir is not the root of its repository; pass $top"
	tmp=$(mktemp -d)
	mkdir "$tmp/objects"
	objects=$(git -C "$dir" rev-parse --path-format=absolute --git-path objects)
	scratch_git() {
		GIT_INDEX_FILE=$tmp/index GIT_OBJECT_DIRECTORY=$tmp/objects \
			GIT_ALTERNATE_OBJECT_DIRECTORIES=$objects git -C "$dir" "$@"
	}
	# series_on_head: scratch index = HEAD + series; false, failed and err set, on a misfit.
	series_on_head() {
		scratch_git read-tree HEAD
		for patch in "${SERIES[@]}"; do
			err=$(scratch_git apply --cached "$patch" 2>&1) || {
				failed=$patch
				return 1
			}
		done
	}

	if ! is_clean "$dir"; then
		if series_on_head && scratch_git diff --quiet && [[ -z $(scratch_git ls-files --others --exclude-standard) ]]; then
			note "$dir already has the series in its working tree; nothing to do"
			return 0
		fi
		die "$dir has uncommitted changes or untracked files (not the series); commit or stash them first"
	fi
	if ! series_on_head; then
		mapfile -t reversed < <(printf '%s\n' "${SERIES[@]}" | tac)
		if scratch_git read-tree HEAD && scratch_git apply --cached --reverse "${reversed[@]}" 2>/dev/null; then
			note "$dir already has the series committed; nothing to do"
			return 0
		fi
		echo "$err" >&2
		die "$(basename "$failed") does not apply to $dir (git's reason above; nothing was changed): is it sglang $version?"
	fi
	git -C "$dir" apply "${SERIES[@]}" || die "git apply failed in $dir after the dry run passed (nothing was changed)"
	report
	note "series applied to the working tree of $dir"
}

# check_exported: stop while build/sglang holds uncommitted edits or commits that
# neither 'make apply' nor 'make refresh' recorded (with --force: say they go).
check_exported() {
	local lost stamped
	git -C "$PIN_TREE" rev-parse --verify --quiet "$PIN_TAG^{commit}" >/dev/null ||
		die "$PIN_TREE is not a tree made by 'make apply' (no tag $PIN_TAG); remove it ('make clean') and run 'make apply' again"
	stamped=$(cut -s -d' ' -f2 "$PIN_STAMP" 2>/dev/null) || true
	git -C "$PIN_TREE" rev-parse --verify --quiet "${stamped:-none}^{commit}" >/dev/null || stamped=$PIN_TAG
	lost=$(git -C "$PIN_TREE" status --short --untracked-files=normal &&
		git -C "$PIN_TREE" log --format='commit %h %s' HEAD --not "$stamped" "$PIN_TAG")
	[[ -n $lost ]] || return 0
	echo "$lost" >&2
	$force || die "$PIN_TREE holds uncommitted changes or commits that are not in patches/ (above); commit them and run 'make refresh' to keep them, or 'make unapply FORCE=1' to discard them"
	note "discarding the work above (FORCE=1)"
}

# unapply: build/sglang back to the pristine tag; 'make apply' applies the series again.
unapply() {
	[[ -d $PIN_TREE/.git ]] || die "$PIN_TREE not found; run 'make apply' first"
	check_exported
	git -C "$PIN_TREE" checkout --quiet --force -B main "$PIN_TAG"
	git -C "$PIN_TREE" clean --quiet -fdx
	rm -f "$PIN_STAMP"
	note "$PIN_TREE is the pristine pin again ($PIN_TAG)"
}

# apply_pin: build/sglang = the pin + one commit per patch, swapped in once all applied.
apply_pin() {
	local digest pin err failed
	rm -rf "$BUILD_DIR"/.sglang.new.*
	digest=$(build_digest)
	if [[ -e $PIN_TREE ]]; then
		check_exported
		if [[ $(cat "$PIN_STAMP" 2>/dev/null) == "$digest $(git -C "$PIN_TREE" rev-parse HEAD)" ]]; then
			note "$PIN_TREE already has the current series applied; nothing to do"
			return 0
		fi
		note "upstream.lock or patches/ changed since $PIN_TREE was built (or it was unapplied); building it again"
	fi

	pin=$(fetch_pin)
	tmp=$(mktemp -d "$BUILD_DIR/.sglang.new.XXXXXX")
	unpack_wheel "$pin" "$tmp/sglang"
	if ! err=$(GIT_COMMITTER_NAME="sglang-moe-lora-info" GIT_COMMITTER_EMAIL="build@invalid" \
		git -C "$tmp/sglang" am --quiet --keep-non-patch --committer-date-is-author-date "${SERIES[@]}" 2>&1); then
		grep '^error:' <<<"$err" >&2 || true
		# git am stopped at the first patch that does not apply: the one after its commits.
		failed=${SERIES[$(git -C "$tmp/sglang" rev-list --count "$PIN_TAG..HEAD")]}
		die "$(basename "$failed") does not apply to the pristine sglang $version (git's reason above; nothing was changed); fix it, or rebuild patches/ with 'make refresh'"
	fi
	report
	echo "$digest $(git -C "$tmp/sglang" rev-parse HEAD)" >"$tmp/sglang/.git/moe-lora-info-applied"
	if [[ -e $PIN_TREE ]]; then
		mv "$PIN_TREE" "$tmp/old"
	fi
	mv "$tmp/sglang" "$PIN_TREE"
	note "series applied: $PIN_TREE (pristine tag $PIN_TAG)"
}

case ${1:-} in
--unapply)
	[[ ${2:-} != --force ]] || force=true
	with_lock "$BUILD_DIR/.lock" unapply
	;;
"") load_series; with_lock "$BUILD_DIR/.lock" apply_pin ;;
*) load_series; apply_clone "$1" ;;
esac
