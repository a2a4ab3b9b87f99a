# Shared helpers for the tooling; source it, do not run it.
# shellcheck shell=bash
# The one place that knows the pin file, the series format and the default paths.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
LOCK_FILE=${LOCK_FILE:-$ROOT/upstream.lock}
PATCHES_DIR=${PATCHES_DIR:-$ROOT/patches}
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
PIN_CACHE=${PIN_CACHE:-$ROOT/.cache/pin}
PIN_TREE=${PIN_TREE:-$BUILD_DIR/sglang}
PIN_TAG=${PIN_TAG:-v0.5.12}

# Fixed identity and dates make the pristine commit, and so every patch, reproducible.
PRISTINE_DATE="2000-01-01T00:00:00+0000"

die() {
	echo "error: $*" >&2
	exit 1
}

note() {
	echo "==> $*" >&2
}

# lock_value KEY: print KEY's value from the pin file.
lock_value() {
	local key=$1 value
	[[ -f $LOCK_FILE ]] || die "pin file $LOCK_FILE not found"
	value=$(sed -n "s/^$key=//p" "$LOCK_FILE")
	[[ -n $value ]] || die "pin file $LOCK_FILE has no '$key=' line"
	echo "$value"
}

# series_patches: print the patch file names of patches/series in order
# (quilt format: one name per line, '#' comments, optional -pN after the name).
series_patches() {
	local series=$PATCHES_DIR/series
	[[ -f $series ]] || die "series file $series not found"
	sed -e 's/#.*//' -e 's/[[:space:]]\{1,\}-p[0-9]*//' -e 's/[[:space:]]*$//' "$series" | grep -v '^$' || true
}

# series_paths: like series_patches, as paths; dies on a missing patch file.
series_paths() {
	local name
	while read -r name; do
		[[ -f $PATCHES_DIR/$name ]] || die "patches/series names $name, but $PATCHES_DIR/$name does not exist"
		echo "$PATCHES_DIR/$name"
	done < <(series_patches)
}

# load_series: set the array SERIES to the series' patch paths; exits on a missing
# file (a plain 'mapfile < <(series_paths)' would not stop on it).
# shellcheck disable=SC2034 # SERIES is read by the scripts that source this file
load_series() {
	local list
	list=$(series_paths) || exit 1
	SERIES=()
	[[ -z $list ]] || mapfile -t SERIES <<<"$list"
}

# series_digest: a hash of the series and every patch, to tell an applied tree's state.
series_digest() {
	{
		cat "$PATCHES_DIR/series"
		series_paths | xargs cat
	} | sha256sum | cut -d' ' -f1
}

# is_clean DIR: true when the git tree at DIR has no changes and no untracked files.
is_clean() {
	[[ -z $(git -C "$1" status --porcelain --untracked-files=normal) ]]
}

# with_lock FILE CMD...: run CMD holding an exclusive lock on FILE.
with_lock() {
	local file=$1
	shift
	mkdir -p "$(dirname "$file")"
	exec 9>"$file"
	flock 9 || die "could not lock $file"
	"$@"
}

pristine_git() {
	GIT_AUTHOR_NAME="sglang" GIT_AUTHOR_EMAIL="sglang@invalid" \
		GIT_COMMITTER_NAME="sglang" GIT_COMMITTER_EMAIL="sglang@invalid" \
		GIT_AUTHOR_DATE="$PRISTINE_DATE" GIT_COMMITTER_DATE="$PRISTINE_DATE" \
		git "$@"
}
