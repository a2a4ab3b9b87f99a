#!/usr/bin/env bash
# make rebase UPSTREAM=0.5.13 | path/to/sglang | path/to/sglang.whl: try the series
# on that sglang (a release is cached in .cache/upstream/) and print the Markdown
# report of tools/rebase_report.py; exit status 1 when a patch conflicts.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

UPSTREAM_CACHE=$ROOT/.cache/upstream
[[ $# -eq 1 && -n $1 ]] || die "usage: make rebase UPSTREAM=<sglang version, e.g. 0.5.13 | path to an sglang clone | path to a wheel>"
upstream=$1

# fetch_release VERSION: the release's wheel, downloaded once into the cache (run
# it holding the cache's lock). Not the pin, so nothing to verify against; the
# report prints its sha256.
fetch_release() {
	local version=$1 cache=$UPSTREAM_CACHE/$1 wheel
	# A download a killed run left: nothing else owns it now.
	rm -rf "$UPSTREAM_CACHE"/.download.*
	wheel=$(find "$cache" -maxdepth 1 -name "sglang-$version-*.whl" 2>/dev/null | sort | head -1)
	if [[ -z $wheel ]]; then
		# (This runs in $(...), a subshell: the download's traps are its own.)
		download_sglang "$version" "$UPSTREAM_CACHE" "pass a version it has or the path of an sglang clone"
		wheel=$(find "$DOWNLOAD" -maxdepth 1 -name "sglang-$version-*.whl" | head -1)
		[[ -n $wheel ]] || die "the registry served no sglang-$version wheel for $(lock_value platform)"
		mkdir -p "$cache"
		mv "$wheel" "$cache/"
		wheel=$cache/$(basename "$wheel")
	fi
	note "sglang $version: $(basename "$wheel")"
	echo "$wheel"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
wheel=
origin="a local wheel"
if [[ -d $upstream ]]; then
	tree=$(cd "$upstream" && pwd)
	[[ -d $tree/python/sglang ]] || die "$upstream has no python/sglang/; pass the root of an sglang clone (the directory holding python/ and test/)"
	name="the sglang tree $tree"
	source_text="the sglang tree at $tree"
	if rev=$(git -C "$tree" describe --tags --always --dirty 2>/dev/null); then
		source_text+=" (git: $rev)"
	fi
elif [[ -f $upstream && $upstream == *.whl ]]; then
	wheel=$upstream
elif [[ $upstream =~ ^[0-9]+(\.[0-9]+)+([a-z0-9.+]*)$ ]]; then
	wheel=$(with_lock "$UPSTREAM_CACHE/.lock" fetch_release "$upstream")
	origin="the package registry"
else
	die "UPSTREAM=$upstream is neither a directory, a .whl file nor an sglang version like 0.5.13"
fi
if [[ -n $wheel ]]; then
	tree=$work/sglang
	# Laid out as upstream's repo, like the pin; the tag only names the temporary tree.
	unpack_wheel "$wheel" "$tree" upstream
	name="sglang $(sed -n 's/^sglang-\([^-]*\)-.*/\1/p' <<<"$(basename "$wheel")")"
	source_text="$(basename "$wheel") from $origin, sha256 $(sha256sum "$wheel" | cut -d' ' -f1) (not verified: it is not the pin)"
fi

load_series
python3 "$ROOT/tools/rebase_report.py" --target "$tree" --name "$name" --source "$source_text" \
	--command "make rebase UPSTREAM=$upstream" "${SERIES[@]}"
