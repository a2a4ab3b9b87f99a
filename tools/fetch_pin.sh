#!/usr/bin/env bash
# Fetch the pinned sglang release into the cache and verify its SHA-256.
# Prints the path of the verified file. A cached file is re-verified, never trusted.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(lock_value version)
file=$(lock_value file)
sha256=$(lock_value sha256)
python_version=$(lock_value python_version)
platform=$(lock_value platform)

mkdir -p "$PIN_CACHE"
pin=$PIN_CACHE/$file

verify() {
	[[ $(sha256sum "$1" | cut -d' ' -f1) == "$sha256" ]]
}

if [[ -f $pin ]]; then
	if verify "$pin"; then
		note "pin: $file (cached, sha256 verified)"
		echo "$pin"
		exit 0
	fi
	die "cached pin $pin does not match sha256 $sha256 from $LOCK_FILE; delete it to download again"
fi

# Download into a private directory and move into place only once verified,
# so an interrupted or corrupt download never passes as the pin.
tmp=$(mktemp -d "$PIN_CACHE/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
note "pin: downloading $file"
if ! python3 -m pip download --quiet --no-deps --only-binary=:all: \
	--python-version "$python_version" --platform "$platform" \
	--dest "$tmp" "sglang==$version" >&2; then
	die "could not download sglang==$version from the package registry (no network and no cached $pin?)"
fi
[[ -f $tmp/$file ]] || die "the registry did not serve $file for sglang==$version (got: $(cd "$tmp" && echo *))"
if ! verify "$tmp/$file"; then
	die "downloaded $file has sha256 $(sha256sum "$tmp/$file" | cut -d' ' -f1), expected $sha256 (from $LOCK_FILE); refusing to use it"
fi
mv "$tmp/$file" "$pin"
note "pin: $file (downloaded, sha256 verified)"
echo "$pin"
