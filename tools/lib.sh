# Shared helpers for the tooling; source it, do not run it. The paths are fixed, not
# taken from the environment: the tooling writes only build/ and .cache/ here.
# shellcheck shell=bash

# shellcheck disable=SC2034 # the paths are read by the scripts that source this file
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCK_FILE=$ROOT/upstream.lock
PATCHES_DIR=$ROOT/patches
BUILD_DIR=$ROOT/build
PIN_CACHE=$ROOT/.cache/pin
PIN_TREE=$BUILD_DIR/sglang
PIN_TAG=v0.5.12
# A caller's GIT_DIR (a git hook, say) would send every 'git -C DIR' to that repository.
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_COMMON_DIR GIT_NAMESPACE
# 'git status' must not rewrite a user's index behind their back.
export GIT_OPTIONAL_LOCKS=0
# What build/sglang was made from ("DIGEST HEAD"), written by make apply and make refresh.
PIN_STAMP=$PIN_TREE/.git/moe-lora-info-applied

die() {
	echo "error: $*" >&2
	exit 1
}

note() {
	echo "==> $*" >&2
}

# writable_dir DIR: create DIR, or stop with one line saying why it cannot be.
writable_dir() {
	if ! mkdir -p "$1" 2>/dev/null || [[ ! -w $1 ]]; then
		die "cannot write to $1 (a read-only checkout?); the tooling writes only build/ and .cache/ here: make them writable or work in a writable copy"
	fi
}

# lock_value KEY: print KEY's value from the pin file.
lock_value() {
	local key=$1 value
	[[ -f $LOCK_FILE ]] || die "pin file $LOCK_FILE not found"
	value=$(sed -n "s/^$key=//p" "$LOCK_FILE")
	[[ -n $value ]] || die "pin file $LOCK_FILE has no '$key=' line"
	echo "$value"
}

# series_patches: the patch names of patches/series in order (quilt format, -pN dropped).
series_patches() {
	local series=$PATCHES_DIR/series
	[[ -f $series ]] || die "series file $series not found"
	sed -e 's/#.*//' -e 's/[[:space:]]\{1,\}-p[0-9]*//' -e 's/[[:space:]]*$//' "$series" | grep -v '^$' || true
}

# load_series: SERIES=(the patches of patches/series); stops on a missing or no patch.
# shellcheck disable=SC2034 # SERIES is read by the scripts that source this file
load_series() {
	local names name
	names=$(series_patches) || exit 1
	[[ -n $names ]] || die "patches/series lists no patches"
	SERIES=()
	while read -r name; do
		[[ -f $PATCHES_DIR/$name ]] || die "patches/series names $name, but $PATCHES_DIR/$name does not exist"
		SERIES+=("$PATCHES_DIR/$name")
	done <<<"$names"
}

# build_digest: a hash of what build/sglang is made from (upstream.lock, the series).
build_digest() {
	load_series
	cat "$LOCK_FILE" "$PATCHES_DIR/series" "${SERIES[@]}" | sha256sum | cut -d' ' -f1
}

# is_clean DIR: true when the git tree at DIR has no changes and no untracked files.
is_clean() {
	[[ -z $(git -C "$1" status --porcelain --untracked-files=normal) ]]
}

# download_sglang VERSION CACHE HINT: sglang==VERSION's wheel (the pin's Python and
# platform) into DOWNLOAD, a private directory in CACHE removed on exit: the caller moves
# it into place, so no half download is cached. A failure is one line ending in HINT.
download_sglang() {
	local version=$1 python_version platform newest
	python_version=$(lock_value python_version)
	platform=$(lock_value platform)
	DOWNLOAD=$(mktemp -d "$2/.download.XXXXXX")
	trap 'rm -rf "$DOWNLOAD"' EXIT
	trap 'die "interrupted while downloading sglang $version; nothing was cached, run the command again"' INT TERM
	note "downloading sglang $version from the package registry"
	if ! python3 -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version "$python_version" --platform "$platform" \
		--dest "$DOWNLOAD" "sglang==$version" >"$DOWNLOAD/pip.log" 2>&1; then
		if grep -q 'No matching distribution' "$DOWNLOAD/pip.log"; then
			newest=$(sed -n 's/.*(from versions: \(.*\)).*/\1/p' "$DOWNLOAD/pip.log" | tr -d ' ' | tr ',' '\n' | tail -1)
			die "could not download sglang==$version: sglang $version is not on the package registry (newest there: ${newest:-none}, or no network); $3"
		fi
		die "could not download sglang==$version: $(grep -i error "$DOWNLOAD/pip.log" | tail -1); $3"
	fi
}

# download_wheels REQUIREMENTS DIR PIN...: the PINs' wheels, without dependencies, into
# DIR for the GPU machine: CPython 3.12 on x86-64 Linux, glibc 2.39 (any manylinux tag).
download_wheels() {
	local requirements=$1 dir=$2 n platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
	shift 2
	for n in 5 12 $(seq 17 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
	note "downloading $# wheels for CPython 3.12: $*"
	"${PIP_PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp "${platforms[@]}" --dest "$dir" "$@" ||
		die "downloading the wheels of $requirements failed (is the package registry reachable?)"
}

# with_lock FILE CMD...: run CMD holding an exclusive lock on FILE.
# (Its variable is _lock_file: bash's dynamic scope would show a 'file' to CMD.)
with_lock() {
	local _lock_file=$1
	shift
	writable_dir "$(dirname "$_lock_file")"
	{ exec 9>"$_lock_file"; } 2>/dev/null || die "cannot write the lock file $_lock_file (a read-only checkout?)"
	flock 9 || die "could not lock $_lock_file"
	"$@"
}

# fetch_pin: print the path of the pinned wheel in .cache/pin/, downloaded once and
# verified against upstream.lock's sha256 on every use (a cached file is never trusted).
fetch_pin() {
	writable_dir "$PIN_CACHE"
	with_lock "$PIN_CACHE/.lock" _fetch_pin
}

_fetch_pin() {
	local file sha256 pin actual
	file=$(lock_value file)
	sha256=$(lock_value sha256)
	pin=$PIN_CACHE/$file
	# A download a killed run left: nothing else owns it now (this run holds the lock).
	rm -rf "$PIN_CACHE"/.download.*
	if [[ -f $pin ]]; then
		actual=$(sha256sum "$pin" | cut -d' ' -f1)
		if [[ $actual == "$sha256" ]]; then
			note "pin: $file (cached, sha256 verified)"
			echo "$pin"
			return 0
		fi
		# An intact zip (every CRC right) is the wheel as the registry served it.
		if python3 -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$pin" 2>/dev/null; then
			die "upstream.lock says sha256 $sha256 for $file, but the cached file, an intact wheel, has $actual: upstream.lock is wrong (check it with 'git diff upstream.lock'), not the cache"
		fi
		die "cached pin $pin is corrupt (sha256 $actual, not a readable wheel); delete it and run 'make apply' again to download it"
	fi
	# Verified before it is moved into place: a corrupt download never passes as the pin.
	download_sglang "$(lock_value version)" "$PIN_CACHE" "with no network, copy $file into $PIN_CACHE/"
	[[ -f $DOWNLOAD/$file ]] || die "the registry did not serve $file (got: $(find "$DOWNLOAD" -name '*.whl' -printf '%f ')); check file= in upstream.lock"
	actual=$(sha256sum "$DOWNLOAD/$file" | cut -d' ' -f1)
	[[ $actual == "$sha256" ]] ||
		die "the registry's $file has sha256 $actual, but upstream.lock says $sha256; refusing it (check sha256= in upstream.lock)"
	mv "$DOWNLOAD/$file" "$pin"
	note "pin: $file (downloaded, sha256 verified)"
	echo "$pin"
}

# unpack_wheel WHEEL DEST [TAG]: WHEEL's sglang/ as a git repository DEST laid out like
# upstream's (python/sglang/...), one commit tagged TAG (default the pin's), fixed date.
unpack_wheel() {
	local wheel=$1 dest=$2
	[[ ! -e $dest ]] || die "$dest already exists"
	mkdir -p "$dest/python"
	python3 -c 'import sys, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
members = [m for m in wheel.namelist() if m.startswith("sglang/")]
wheel.extractall(sys.argv[2], members) if members else sys.exit(f"error: {sys.argv[1]} has no sglang/ package")' "$wheel" "$dest/python"
	git -C "$dest" init --quiet --initial-branch=main
	git -C "$dest" config core.autocrlf false
	# Running the tests writes bytecode into the tree; it is not a change.
	printf '%s\n' '__pycache__/' '*.py[cod]' >>"$dest/.git/info/exclude"
	git -C "$dest" add --all
	GIT_AUTHOR_NAME=sglang GIT_AUTHOR_EMAIL=sglang@invalid GIT_AUTHOR_DATE=2000-01-01T00:00:00+0000 \
		GIT_COMMITTER_NAME=sglang GIT_COMMITTER_EMAIL=sglang@invalid GIT_COMMITTER_DATE=2000-01-01T00:00:00+0000 \
		git -C "$dest" commit --quiet --message "sglang $(basename "$wheel" | cut -d- -f2) (pristine, from $(basename "$wheel"))"
	git -C "$dest" tag "${3:-$PIN_TAG}"
}
