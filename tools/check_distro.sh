#!/usr/bin/env bash
# Apply the series the way distro tools do, on the pristine pin, and prove:
#  - patch -p1 -F0 (dpkg-source, rpm %autosetup) applies every patch exactly:
#    no fuzz, no offset, no .orig/.rej, and yields what git yields;
#  - quilt push -a gives the same tree and quilt pop -a restores the pristine
#    tree byte for byte (files, contents, modes);
#  - for trees rooted at sglang's python/ directory (the published package),
#    patch -p2 and quilt with tools/python_root_series.sh do the same.
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

pin=$("$ROOT/tools/fetch_pin.sh")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$ROOT/tools/unpack_pin.sh" "$pin" "$work/pristine"
load_series
mkdir "$work/python-root"
"$ROOT/tools/python_root_series.sh" >"$work/python-root/series"
names=$(PATCHES_DIR=$work/python-root series_patches)
[[ -n $names ]] || die "tools/python_root_series.sh left every patch out; the python/-rooted layout would get nothing"
mapfile -t python_root <<<"$names"

# The reference: what git makes of the series (as 'make apply' does); GIT_DIR
# keeps git from picking up a repository around $work.
copy_tree "$work/pristine" "$work/git"
for patch in "${SERIES[@]}"; do
	(cd "$work/git" && GIT_DIR=$work/pristine/.git GIT_WORK_TREE=$work/git git apply "$patch") || die "git apply $(basename "$patch") failed on the pristine pin; run tools/check_series.sh for details"
done

# 1. patch -p1 -F0, in series order.
copy_tree "$work/pristine" "$work/p1"
for patch in "${SERIES[@]}"; do
	out=$(patch -d "$work/p1" -p1 -F0 -N -f --no-backup-if-mismatch -i "$patch" 2>&1) ||
		die "patch -p1 -F0 refuses $(basename "$patch") on the pristine pin:
$out"
	exact "$(basename "$patch") (patch -p1 -F0)" "$out"
done
stray=$(cd "$work/p1" && find . -name '*.orig' -o -name '*.rej')
[[ -z $stray ]] || die "patch -p1 -F0 left backup or reject files: $stray"
same_tree "$work/git" "$work/p1" "patch -p1 -F0"
note "patch -p1 -F0: ${#SERIES[@]} patches apply exactly and match git's result"

# 2. quilt push -a, then quilt pop -a back to the pristine tree.
copy_tree "$work/pristine" "$work/quilt"
out=$(quilt_in "$work/quilt" series push -a --fuzz=0 2>&1) || die "quilt push -a failed on the pristine pin:
$out"
exact "quilt push -a" "$out"
same_tree "$work/git" "$work/quilt" "quilt push -a"
out=$(quilt_in "$work/quilt" series pop -a 2>&1) || die "quilt pop -a failed:
$out"
# quilt removes the files a patch created but not their new directories.
(cd "$work/quilt" && find . -depth -mindepth 1 -type d -not -path './.git*' -not -path './.pc*' -printf '%P\n') |
	while read -r dir; do
		[[ -d $work/pristine/$dir ]] || rmdir "$work/quilt/$dir" 2>/dev/null || true
	done
same_tree "$work/pristine" "$work/quilt" "quilt pop -a"
note "quilt: push -a matches git's result, pop -a restores the pristine pin byte for byte"

# 3. The python/-rooted layout: -p2 with the series that leaves out test/ patches.
cp -a "$work/pristine/python" "$work/p2"
for name in "${python_root[@]}"; do
	out=$(patch -d "$work/p2" -p2 -F0 -N -f --no-backup-if-mismatch -i "$PATCHES_DIR/$name" 2>&1) ||
		die "patch -p2 -F0 refuses $name on the pin's python/ tree:
$out"
	exact "$name (patch -p2 -F0)" "$out"
done
same_tree "$work/git/python" "$work/p2" "patch -p2 -F0 on python/"
cp -a "$work/pristine/python" "$work/quilt-p2"
out=$(quilt_in "$work/quilt-p2" "$work/python-root/series" push -a --fuzz=0 2>&1) ||
	die "quilt push -a with the python/-rooted series failed:
$out"
exact "quilt push -a (python/-rooted)" "$out"
same_tree "$work/git/python" "$work/quilt-p2" "quilt push -a on python/"
quilt_in "$work/quilt-p2" "$work/python-root/series" pop -a >/dev/null 2>&1 || die "quilt pop -a with the python/-rooted series failed"
same_tree "$work/pristine/python" "$work/quilt-p2" "quilt pop -a on python/"
note "python/-rooted tree: ${#python_root[@]} of ${#SERIES[@]} patches apply with -p2 (patch and quilt); pop restores it"
