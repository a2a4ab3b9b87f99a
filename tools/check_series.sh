#!/usr/bin/env bash
# Check the series against the pristine pin, independently of build/:
#  - every prefix applies with exact context and imports (bisectable);
#  - the mirror equals what the whole series produces.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VENV=${VENV:-$ROOT/.venv}
python=$(realpath -m "$VENV")/bin/python
[[ -x $python ]] || die "no environment at $VENV to import the patched modules with; run 'make venv'"

pin=$(fetch_pin)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unpack_wheel "$pin" "$work/sglang"
load_series

step=0
for patch in "${SERIES[@]}"; do
	step=$((step + 1))
	name=$(basename "$patch")
	git -C "$work/sglang" apply "$patch" || die "prefix $step: $name does not apply on top of the patches before it"
	# Import every Python module this patch touches (tests by file, the rest by name).
	mapfile -t modules < <(sed -n 's|^+++ b/python/\(.*\)\.py$|\1|p' "$patch" | tr / . | sed 's/\.__init__$//')
	mapfile -t tests < <(sed -n 's|^+++ b/\(test/.*\.py\)$|\1|p' "$patch")
	(
		cd "$work/sglang"
		export PYTHONPATH=$work/sglang/python TRITON_INTERPRET=1
		"$python" -W ignore -c 'import importlib, runpy, sys
for arg in sys.argv[1:]:
    runpy.run_path(arg) if arg.endswith(".py") else importlib.import_module(arg)' "${modules[@]}" "${tests[@]}"
	) || die "prefix $step: the tree with patches 1..$step applied does not import ($name)"
	note "prefix $step/${#SERIES[@]} applies and imports: $name"
done

"$ROOT/tools/mirror.sh" check "$work/sglang"
