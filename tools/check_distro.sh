#!/usr/bin/env bash
# On the pristine pin, as distro tools apply the series: patch -p1 -F0 applies each
# patch exactly (no fuzz, offset, .orig or .rej) and yields what git yields; quilt
# push -a the same, and quilt pop -a restores the pristine tree byte for byte. The
# same with -p2 on the python/-rooted layout (tools/python_root_series.sh).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

for tool in patch quilt; do
	command -v "$tool" >/dev/null || die "$tool is not installed; install it (Debian/Ubuntu: apt-get install $tool) and run this again"
done

# The user's ~/.quiltrc may point QUILT_PATCHES at debian/patches: ignore it.
quilt_in() {
	local dir=$1 series=$2
	shift 2
	(cd "$dir" && QUILT_PATCHES=$PATCHES_DIR QUILT_SERIES=$series quilt --quiltrc /dev/null "$@")
}

# exact WHAT OUTPUT: fail on any hunk that patch placed by offset or fuzz.
exact() {
	if grep -Ei 'offset|fuzz|reversed|previously applied' <<<"$2" >&2; then
		die "$1 does not apply exactly to the pristine pin (lines above); regenerate patches/ with 'make refresh'"
	fi
}

# listing DIR: every file and link with its mode, as the comparison sees them.
listing() {
	(cd "$1" && find . \( -name .git -o -name .pc \) -prune -o \( -type f -o -type l \) -printf '%m %p\n' | LC_ALL=C sort)
}

# same_tree EXPECTED ACTUAL WHAT: same files, modes and bytes.
same_tree() {
	local out
	if ! out=$(diff <(listing "$1") <(listing "$2")) ||
		! out=$(diff -r --no-dereference -x .git -x .pc "$1" "$2" 2>&1); then
		head -40 <<<"$out" >&2
		die "$3: the tree differs from what it should be (diff above)"
	fi
}

# copy_tree SRC DEST: the files of SRC without its .git (the tools never see it).
copy_tree() {
	mkdir -p "$2"
	(cd "$1" && find . -mindepth 1 -maxdepth 1 -not -name .git -exec cp -a {} "$2/" \;)
}

# check_layout NAME PRISTINE EXPECTED STRIP SERIES_FILE PATCH...: on copies of PRISTINE,
# patch -pSTRIP -F0 and quilt push -a apply every PATCH exactly, giving EXPECTED; then
# quilt pop -a gives PRISTINE back byte for byte.
check_layout() {
	local name=$1 pristine=$2 expected=$3 strip=$4 series=$5 patch out stray
	shift 5
	copy_tree "$pristine" "$work/$name-patch"
	for patch in "$@"; do
		out=$(patch -d "$work/$name-patch" -p"$strip" -F0 -N -f --no-backup-if-mismatch -i "$patch" 2>&1) ||
			die "patch -p$strip -F0 refuses $(basename "$patch") on the pristine pin ($name):
$out"
		exact "$(basename "$patch") (patch -p$strip -F0)" "$out"
	done
	stray=$(cd "$work/$name-patch" && find . -name '*.orig' -o -name '*.rej')
	[[ -z $stray ]] || die "patch -p$strip -F0 left backup or reject files ($name): $stray"
	same_tree "$expected" "$work/$name-patch" "patch -p$strip -F0 ($name)"

	copy_tree "$pristine" "$work/$name-quilt"
	out=$(quilt_in "$work/$name-quilt" "$series" push -a --fuzz=0 2>&1) ||
		die "quilt push -a failed on the pristine pin ($name):
$out"
	exact "quilt push -a ($name)" "$out"
	same_tree "$expected" "$work/$name-quilt" "quilt push -a ($name)"
	out=$(quilt_in "$work/$name-quilt" "$series" pop -a 2>&1) || die "quilt pop -a failed ($name):
$out"
	# quilt removes the files a patch created but not their new directories.
	(cd "$work/$name-quilt" && find . -depth -mindepth 1 -type d -not -path './.pc*' -printf '%P\n') |
		while read -r dir; do
			[[ -d $pristine/$dir ]] || rmdir "$work/$name-quilt/$dir" 2>/dev/null || true
		done
	same_tree "$pristine" "$work/$name-quilt" "quilt pop -a ($name)"
	note "$name: $# patches apply exactly with patch -p$strip -F0 and quilt push -a, as git applies them; quilt pop -a restores the pristine tree byte for byte"
}

pin=$(fetch_pin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unpack_wheel "$pin" "$work/pristine"
load_series
mkdir "$work/python-root"
"$ROOT/tools/python_root_series.sh" >"$work/python-root/series"
names=$(PATCHES_DIR=$work/python-root series_patches)
[[ -n $names ]] || die "tools/python_root_series.sh left every patch out; the python/-rooted layout would get nothing"
mapfile -t python_root <<<"$names"
python_root=("${python_root[@]/#/$PATCHES_DIR/}")

# The reference: what git makes of the series; GIT_DIR keeps any repository around out.
copy_tree "$work/pristine" "$work/git"
for patch in "${SERIES[@]}"; do
	(cd "$work/git" && GIT_DIR=$work/pristine/.git GIT_WORK_TREE=$work/git git apply "$patch") || die "git apply $(basename "$patch") failed on the pristine pin; run tools/check_series.sh for details"
done

# Upstream's layout (-p1), and the published package's python/-rooted one (-p2).
check_layout upstream-root "$work/pristine" "$work/git" 1 series "${SERIES[@]}"
check_layout python-root "$work/pristine/python" "$work/git/python" 2 "$work/python-root/series" "${python_root[@]}"
