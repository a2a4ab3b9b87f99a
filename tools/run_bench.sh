#!/usr/bin/env bash
# Run the GPU benchmarks with $VENV's Python on the patched tree: the metadata
# kernel against upstream 0.5.13's (bench/bench_moe_lora_info_kernel.py), the
# per-batch MoE LoRA metadata (bench/bench_moe_lora_info.py), the whole MoE layer
# (bench/bench_moe_layer.py), pre (pristine $PIN_TAG) vs ours, and the MoE LoRA
# hooks at decode (bench/bench_moe_lora_decode.py). Tables go to
# stdout and to ${BENCH_OUT:-build/bench}/*.txt, beside the JSON results and
# the plots. Arguments go to every script: --quick for a short first run,
# --smoke for the CPU check (Triton interpreter, no GPU timings), --no-plot
# without matplotlib. The full run takes several minutes on an H100.
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

smoke=false
for arg in "$@"; do
	[[ $arg == --smoke ]] && smoke=true
done
if ! $smoke; then
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
