#!/usr/bin/env bash
# The GPU benchmarks (bench/*.py) with $VENV's Python on the patched tree, the
# pristine $PIN_TAG beside it; tables to stdout and ${BENCH_OUT:-build/bench}/.
# Arguments go to every script (--quick, --smoke for the CPU check, --no-plot).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VENV=${VENV:-$ROOT/.venv}
SGLANG_DIR=${SGLANG_DIR:-$PIN_TREE}
out=${BENCH_OUT:-$BUILD_DIR/bench}
python=$VENV/bin/python

[[ -x $python ]] || die "no environment at $VENV; run 'make venv' or set VENV"
[[ -d $SGLANG_DIR/python/sglang ]] || die "$SGLANG_DIR/python/sglang not found; run 'make apply' first"
git -C "$SGLANG_DIR" rev-parse --verify --quiet "$PIN_TAG^{commit}" >/dev/null ||
	die "$SGLANG_DIR has no tag $PIN_TAG: the pristine code the benchmarks compare with"
export PYTHONPATH=$SGLANG_DIR/python${PYTHONPATH:+:$PYTHONPATH}

if [[ " $* " != *" --smoke "* ]]; then
	"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' ||
		die "no CUDA GPU visible to $python: these benchmarks time GPU kernels (tools/run_bench.sh --smoke checks them on the CPU)"
	# Compiled kernels, not the interpreter, whatever the caller's environment says.
	unset TRITON_INTERPRET
fi

mkdir -p "$out"
for bench in bench_moe_lora_info_kernel bench_moe_lora_info bench_moe_layer bench_moe_lora_decode; do
	note "$bench -> $out/$bench.txt"
	PYTHONUNBUFFERED=1 "$python" "$ROOT/bench/$bench.py" \
		--sglang-dir "$SGLANG_DIR" --base "$PIN_TAG" --out-dir "$out" "$@" 2>&1 |
		tee "$out/$bench.txt" || die "bench/$bench.py failed (its output above, and in $out/$bench.txt)"
done
note "results in $out"
