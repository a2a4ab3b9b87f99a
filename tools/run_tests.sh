#!/usr/bin/env bash
# Run the registered tests of the patched tree, then our own tests, with $VENV.
# CUDA when a GPU is visible (compiled Triton kernels), else the CPU with
# Triton's interpreter (TRITON_INTERPRET=1) running the same kernels.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VENV=${VENV:-$ROOT/.venv}
SGLANG_DIR=${SGLANG_DIR:-$PIN_TREE}
python=$(realpath -m "$VENV")/bin/python

[[ -x $python ]] || die "no test environment at $VENV; run 'make test' (it builds one)"
[[ -d $SGLANG_DIR/python/sglang ]] || die "$SGLANG_DIR/python/sglang not found; run 'make apply' first"
export PYTHONPATH=$SGLANG_DIR/python${PYTHONPATH:+:$PYTHONPATH}
export SGLANG_DIR

if "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
	unset TRITON_INTERPRET
	note "mode: CUDA on $("$python" -c 'import torch; print(torch.cuda.get_device_name())') (compiled Triton kernels)"
else
	export TRITON_INTERPRET=1
	note "mode: CPU, no GPU visible (Triton interpreter, TRITON_INTERPRET=1)"
fi

mapfile -t registered < <(cd "$SGLANG_DIR" && "$python" "$ROOT/tools/collect_registered.py" test/registered)
[[ ${#registered[@]} -gt 0 ]] || die "found no registered tests in $SGLANG_DIR/test/registered"
note "registered tests: ${registered[*]}"

cd "$SGLANG_DIR"
exec "$python" -m pytest -p no:cacheprovider -q -W ignore::UserWarning \
	"${registered[@]}" "$ROOT/tests" "$@"
