#!/usr/bin/env bash
# Fetch the pinned sglang release into the cache and verify its SHA-256.
# Prints the path of the verified file. A cached file is re-verified, never trusted.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

version=$(lock_value version)
file=$(lock_value file)
sha256=$(lock_value sha256)
pin=$PIN_CACHE/$file

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# intact WHEEL: the zip reads back with every CRC right (a wheel as the registry served it).
intact() {
	python3 -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$1" 2>/dev/null
}

fetch() {
	local actual
	# A download a killed run left: nothing else owns it now (this run holds the lock).
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

	# Verified before it is moved into place: a corrupt download never passes as the pin.
	download_sglang "$version" "$PIN_CACHE" "with no network, copy $file into $PIN_CACHE/"
	[[ -f $DOWNLOAD/$file ]] || die "the registry did not serve $file for sglang==$version (got: $(find "$DOWNLOAD" -name '*.whl' -printf '%f ')); check file= in upstream.lock"
	actual=$(sha_of "$DOWNLOAD/$file")
	[[ $actual == "$sha256" ]] ||
		die "the registry's $file has sha256 $actual, but upstream.lock says $sha256; refusing it (check sha256= in upstream.lock)"
	mv "$DOWNLOAD/$file" "$pin"
	note "pin: $file (downloaded, sha256 verified)"
	echo "$pin"
}

writable_dir "$PIN_CACHE"
with_lock "$PIN_CACHE/.lock" fetch
