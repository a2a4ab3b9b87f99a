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

case $action in
update)
	for root in "${mirror_roots[@]}"; do
		rm -rf "${ROOT:?}/$root"
	done
	while read -r path; do
		mkdir -p "$ROOT/$(dirname "$path")"
		cp "$tree/$path" "$ROOT/$path"
	done <<<"$touched"
	note "mirror updated: $(wc -l <<<"$touched") files"
	;;
check)
	status=0
	while read -r path; do
		if [[ ! -f $ROOT/$path ]]; then
			echo "mirror: $path is patched by the series but missing here" >&2
			status=1
		elif ! cmp -s "$tree/$path" "$ROOT/$path"; then
			echo "mirror: $path differs from what the series produces:" >&2
			diff -u "$tree/$path" "$ROOT/$path" | head -20 >&2 || true
			status=1
		fi
	done <<<"$touched"
	extra=$(cd "$ROOT" && find "${mirror_roots[@]}" -type f -not -path '*/__pycache__/*' 2>/dev/null | sort | comm -23 - <(echo "$touched"))
	if [[ -n $extra ]]; then
		echo "mirror: files the series does not touch: $extra" >&2
		status=1
	fi
	[[ $status -eq 0 ]] || die "the mirror is stale; run 'make refresh' (or fix patches/)"
	note "mirror matches the series: $(wc -l <<<"$touched") files"
	;;
*) die "unknown action $action (update or check)" ;;
esac
