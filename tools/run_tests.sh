#!/usr/bin/env bash
# Run the registered tests of the patched tree (SGLANG_DIR, by default build/sglang,
# only read), then ours, with $VENV: CUDA when a GPU is visible, else the CPU with
# Triton's interpreter. --tooling: tests/tooling only (make check).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VENV=${VENV:-$ROOT/.venv}
SGLANG_DIR=${SGLANG_DIR:-$PIN_TREE}
python=$(realpath -m "$VENV")/bin/python
# make passes its command line (SGLANG_DIR=...) to child makes through MAKEFLAGS:
# the tooling tests run make on their own copies and must not inherit it.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES
writable_dir "$BUILD_DIR"
export PYTHONPYCACHEPREFIX=$BUILD_DIR/pycache TRITON_CACHE_DIR=$BUILD_DIR/triton-cache

if [[ ${1:-} == --tooling ]]; then
	shift
	[[ -x $python ]] || die "no test environment at $VENV; run 'make venv'"
	cd "$ROOT"
	exec "$python" -m pytest -p no:cacheprovider -q "$ROOT/tests/tooling" "$@"
fi

if [[ ! -d $SGLANG_DIR ]]; then
	[[ $SGLANG_DIR == "$PIN_TREE" ]] && die "$PIN_TREE not found; run 'make apply' first"
	die "SGLANG_DIR $SGLANG_DIR does not exist; pass the root of a patched sglang clone"
fi
SGLANG_DIR=$(cd "$SGLANG_DIR" && pwd)
[[ -d $SGLANG_DIR/python/sglang ]] || die "$SGLANG_DIR has no python/sglang/; pass the root of an sglang clone (patched with 'make apply SGLANG_DIR=...')"
# After the tree checks, so that a wrong SGLANG_DIR fails before minutes of installing.
"$ROOT/tools/make_venv.sh"
export PYTHONPATH=$SGLANG_DIR/python${PYTHONPATH:+:$PYTHONPATH}
export SGLANG_DIR

if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
	unset TRITON_INTERPRET
	note "mode: CUDA on $("$python" -c 'import torch; print(torch.cuda.get_device_name())') (compiled Triton kernels)"
else
	export TRITON_INTERPRET=1
	note "mode: CPU, no GPU visible (Triton interpreter, TRITON_INTERPRET=1)"
fi

# The registered CUDA tests, found by sglang's own parser, as its CI finds them.
mapfile -t registered < <(cd "$SGLANG_DIR" && "$python" -c 'from pathlib import Path
from sglang.test.ci.ci_register import HWBackend, ut_parse_one_file
for path in sorted(Path("test/registered").rglob("test_*.py")):
    found, has_main = ut_parse_one_file(str(path))
    if has_main and any(r.backend == HWBackend.CUDA and not r.disabled for r in found):
        print(path)')
[[ ${#registered[@]} -gt 0 ]] || die "found no registered tests in $SGLANG_DIR/test/registered"
note "registered tests: ${registered[*]}"

cd "$SGLANG_DIR"
exec "$python" -m pytest -p no:cacheprovider -q -W ignore::UserWarning \
	"${registered[@]}" "$ROOT/tests" "$@"
