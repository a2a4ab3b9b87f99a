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
pin=$PIN_CACHE/$file

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# intact WHEEL: the zip reads back with every CRC right (a wheel as the registry served it).
intact() {
	python3 -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$1" 2>/dev/null
}

fetch() {
	local tmp actual log
	# A download interrupted by a kill leaves its private directory: nothing else owns it now.
	rm -rf "$PIN_CACHE"/.download.*
	if [[ -f $pin ]]; then
		actual=$(sha_of "$pin")
		if [[ $actual == "$sha256" ]]; then
			note "pin: $file (cached, sha256 verified)"
			echo "$pin"
			return 0
		fi
		if intact "$pin"; then
			die "upstream.lock says sha256 $sha256 for $file, but the cached file, an intact wheel, has $actual: upstream.lock is wrong (check it with 'git diff upstream.lock'), not the cache"
		fi
		die "cached pin $pin is corrupt (sha256 $actual, not a readable wheel); delete it and run 'make apply' again to download it"
	fi

	# Download into a private directory and move into place only once verified,
	# so an interrupted or corrupt download never passes as the pin.
	tmp=$(mktemp -d "$PIN_CACHE/.download.XXXXXX")
	log=$tmp/pip.log
	trap 'rm -rf "$tmp"' EXIT
	trap 'die "interrupted while downloading $file; nothing was cached, run the command again"' INT TERM
	note "pin: downloading $file"
	if ! python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version "$python_version" --platform "$platform" \
		--dest "$tmp" "sglang==$version" >"$log" 2>&1; then
		grep -i 'error' "$log" | tail -3 >&2 || true
		die "could not download sglang==$version from the package registry (pip's reason above); with no network, copy $file into $PIN_CACHE/"
	fi
	[[ -f $tmp/$file ]] || die "the registry did not serve $file for sglang==$version (got: $(find "$tmp" -name '*.whl' -printf '%f ')); check file= in upstream.lock"
	actual=$(sha_of "$tmp/$file")
	[[ $actual == "$sha256" ]] ||
		die "the registry's $file has sha256 $actual, but upstream.lock says $sha256; refusing it (check sha256= in upstream.lock)"
	mv "$tmp/$file" "$pin"
	# Now, while tmp is in scope: the EXIT trap would run after this function returned.
	rm -rf "$tmp"
	trap - EXIT INT TERM
	note "pin: $file (downloaded, sha256 verified)"
	echo "$pin"
}

writable_dir "$PIN_CACHE"
with_lock "$PIN_CACHE/.lock" fetch
