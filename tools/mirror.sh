#!/usr/bin/env bash
# The mirror: the files the series touches, post-patch, kept at the top of this repo.
#   mirror.sh update TREE   copy them from the patched git tree TREE (make refresh)
#   mirror.sh check TREE    fail unless the mirror equals TREE, file for file
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -eq 2 ]] || die "usage: $0 update|check PATCHED_TREE"
action=$1
tree=$2
mirror_roots=(python test)

touched=$(git -C "$tree" diff --name-only "$PIN_TAG" HEAD -- ; git -C "$tree" diff --name-only HEAD --; git -C "$tree" ls-files --others --exclude-standard)
touched=$(echo "$touched" | grep -v '^$' | sort -u)
[[ -n $touched ]] || die "$tree has no changes on top of $PIN_TAG"
# What the mirror should be: the touched files alone.
expected=$(mktemp -d)
trap 'rm -rf "$expected"' EXIT
(cd "$tree" && xargs -d '\n' cp --parents -t "$expected" <<<"$touched")

case $action in
update)
	for root in "${mirror_roots[@]}"; do
		rm -rf "${ROOT:?}/$root"
	done
	cp -r "$expected/." "$ROOT/"
	note "mirror updated: $(wc -l <<<"$touched") files"
	;;
check)
	for root in "${mirror_roots[@]}"; do
		diff -ru -x __pycache__ "$expected/$root" "$ROOT/$root" | head -40 >&2 ||
			die "the mirror is stale ($root/ differs from what the series produces, above); run 'make refresh' (or fix patches/)"
	done
	note "mirror matches the series: $(wc -l <<<"$touched") files"
	;;
*) die "unknown action $action (update or check)" ;;
esac
