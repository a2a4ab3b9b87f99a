#!/usr/bin/env bash
# make pr SGLANG_DIR=clone [BASE=v0.5.12] [BRANCH=...] [PR_BODY=...]: branch BRANCH
# at BASE with the series as commits ('git am -3', without the DEP-3 trailers) and
# the PR body in PR_BODY. Refuses a dirty clone, an existing branch or an unknown
# BASE; on any failure the clone is left as it was.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

BASE=${BASE:-$PIN_TAG}
BRANCH=${BRANCH:-moe-lora-batch-info}
PR_BODY=${PR_BODY:-$BUILD_DIR/pr-body.md}

[[ $# -eq 1 && -n $1 ]] || die "usage: make pr SGLANG_DIR=/path/to/sglang/clone [BASE=$PIN_TAG] [BRANCH=$BRANCH] [PR_BODY=file]"
[[ -d $1 ]] || die "SGLANG_DIR $1 does not exist; clone sglang there first (git clone https://github.com/sgl-project/sglang)"
clone=$(cd "$1" && pwd)
git -C "$clone" rev-parse --git-dir >/dev/null 2>&1 || die "$clone is not a git repository; pass an sglang clone"
[[ $(git -C "$clone" rev-parse --show-toplevel) == "$clone" ]] || die "$clone is inside a repository, not its root; pass the clone's top directory"
for op in rebase-apply rebase-merge MERGE_HEAD CHERRY_PICK_HEAD; do
	[[ ! -e $(git -C "$clone" rev-parse --git-path "$op") ]] || die "$clone has a git operation in progress ($op); finish or abort it first"
done
is_clean "$clone" || die "$clone has uncommitted changes or untracked files; commit or stash them first (nothing was changed)"
git -C "$clone" rev-parse --verify --quiet "$BASE^{commit}" >/dev/null ||
	die "BASE $BASE is not a commit in $clone; fetch it (git -C $clone fetch --tags upstream) or pass BASE=<tag or commit>"
git check-ref-format --branch "$BRANCH" >/dev/null 2>&1 || die "BRANCH $BRANCH is not a valid branch name"
! git -C "$clone" rev-parse --verify --quiet "refs/heads/$BRANCH" >/dev/null ||
	die "$clone already has a branch $BRANCH; delete it (git -C $clone branch -D $BRANCH) or pass BRANCH=<another name>"
git -C "$clone" var GIT_COMMITTER_IDENT >/dev/null 2>&1 ||
	die "git in $clone has no committer identity; set one (git -C $clone config user.name ...; git -C $clone config user.email ...)"

load_series
work=$(mktemp -d)
# On failure, put the clone back: abort the am, return to the original branch, drop ours.
original=$(git -C "$clone" symbolic-ref --quiet --short HEAD || git -C "$clone" rev-parse HEAD)
created=
restore() {
	local status=$?
	if [[ $status -ne 0 && -n $created ]]; then
		git -C "$clone" am --abort >/dev/null 2>&1 || true
		git -C "$clone" checkout --quiet --force "$original" || true
		git -C "$clone" branch --quiet -D "$BRANCH" >/dev/null 2>&1 || true
		echo "error: $clone restored: back on $original, branch $BRANCH removed" >&2
	fi
	rm -rf "$work"
}
trap restore EXIT

# The body first: if it cannot be written, the clone is not touched at all.
python3 "$ROOT/tools/pr_body.py" --base "$BASE" --out "$work/pr-body.md" "${SERIES[@]}" ||
	die "could not write the pull-request body (tools/pr_body.py failed)"

# Upstream's commits: the series' messages without the DEP-3 trailer lines.
for patch in "${SERIES[@]}"; do
	awk '!done && /^---$/ { done = 1 }
		!done && /^(Origin|Forwarded|Last-Update|Applied-Upstream|Bug(-[A-Za-z]+)?):/ { next }
		{ print }' "$patch" >"$work/$(basename "$patch")"
done

# git am -3 needs the blob ids our normalized patches leave out: replay the
# series on the pin in a scratch index of the clone and take git's full-index diffs.
if git -C "$clone" rev-parse --verify --quiet "$PIN_TAG^{tree}" >/dev/null; then
	export GIT_INDEX_FILE=$work/index
	git -C "$clone" read-tree "$PIN_TAG"
	prev=$(git -C "$clone" write-tree)
	for patch in "${SERIES[@]}"; do
		git -C "$clone" apply --cached "$patch" 2>/dev/null ||
			die "$(basename "$patch") does not apply to $PIN_TAG in $clone; is $PIN_TAG there upstream's release tag?"
		next=$(git -C "$clone" write-tree)
		am_patch=$work/$(basename "$patch")
		sed -i '/^diff --git /,$d' "$am_patch"
		git -C "$clone" -c diff.noprefix=false -c diff.mnemonicPrefix=false \
			diff-tree -p --full-index --no-renames --no-color --no-ext-diff "$prev" "$next" >>"$am_patch"
		prev=$next
	done
	unset GIT_INDEX_FILE
else
	note "$clone has no tag $PIN_TAG: git am cannot fall back to a 3-way merge if BASE has moved"
fi

git -C "$clone" checkout --quiet --no-track -b "$BRANCH" "$BASE"
created=1
for patch in "${SERIES[@]}"; do
	if ! out=$(git -C "$clone" am -3 --keep-non-patch "$work/$(basename "$patch")" 2>&1); then
		die "$(basename "$patch") does not apply to $BASE in $clone, even as a 3-way merge:
$(grep -E '^error:|CONFLICT' <<<"$out")"
	fi
	note "committed $(basename "$patch")"
done

mkdir -p "$(dirname "$PR_BODY")"
cp "$work/pr-body.md" "$PR_BODY"
note "branch $BRANCH in $clone: ${#SERIES[@]} commits on $BASE"
note "pull-request body: $PR_BODY"
note "next: git -C $clone push <your fork> $BRANCH, then open the PR with that body"
