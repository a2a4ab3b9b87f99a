#!/usr/bin/env bash
# build/dist/sglang-moe-lora-info-<pin version>-<newest Last-Update>.tar.gz for
# packagers: patches/ (with series.python-root), upstream.lock, a README and
# SHA256SUMS. Reproducible: names, dates, owners and order come from the content.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

DIST_DIR=$BUILD_DIR/dist
[[ $# -eq 0 ]] || die "usage: $0 (writes to $DIST_DIR)"

load_series
# The release date is the newest Last-Update: it names the tarball and dates its files.
updated=$(sed -n 's/^Last-Update:[[:space:]]*//p' "${SERIES[@]}" | LC_ALL=C sort | tail -1)
[[ $updated =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] ||
	die "no patch has a valid 'Last-Update: YYYY-MM-DD' line (newest found: '$updated'); run tools/check_patches.py"
epoch=$(date -u -d "$updated" +%s)
name=sglang-moe-lora-info-$(lock_value version)-${updated//-/}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/$name
mkdir -p "$stage/patches"
cp "${SERIES[@]}" "$PATCHES_DIR/series" "$stage/patches/"
"$ROOT/tools/python_root_series.sh" >"$stage/patches/series.python-root"
cp "$LOCK_FILE" "$stage/upstream.lock"
{
	sed '/^## /,$d' "$ROOT/README.md"
	echo
	echo "## Pin"
	echo
	echo "sglang $(lock_value version): $(lock_value file)"
	echo "sha256 $(lock_value sha256)"
	echo
	if [[ -f $ROOT/docs/distro.md ]]; then
		sed 's/^#/##/' "$ROOT/docs/distro.md"
	fi
} >"$stage/README"
(cd "$stage" && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs sha256sum) >"$work/SHA256SUMS"
mv "$work/SHA256SUMS" "$stage/SHA256SUMS"

# Fixed modes, owner, mtime and order; gzip -n keeps the name and time out of the header.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod 0644 {} +
writable_dir "$DIST_DIR"
tarball=$DIST_DIR/$name.tar.gz
tar -C "$work" --format=gnu --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
	-cf - "$name" | gzip -9n >"$work/out.tar.gz"
mv "$work/out.tar.gz" "$tarball"
note "dist: $tarball ($(sha256sum "$tarball" | cut -d' ' -f1))"
echo "$tarball"
