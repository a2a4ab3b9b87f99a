#!/usr/bin/env bash
# On a GPU machine: the sglang tests with compiled kernels, then under
# compute-sanitizer memcheck, logged to LOG_DIR (build/gpu-validation); offline with WHEELHOUSE.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

[[ $# -le 1 ]] || die "usage: $0 [LOG_DIR]"
LOG_DIR=${1:-$BUILD_DIR/gpu-validation}
VENV=${VENV:-$ROOT/.venv}
mkdir -p "$LOG_DIR"
command -v nvidia-smi >/dev/null || die "no nvidia-smi: this needs a CUDA GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOG_DIR/card.txt"

"$ROOT/tools/make_venv.sh"
# The tooling tests are CPU-only and run in CI; here, the sglang tests.
sglang_tests=(--ignore="$ROOT/tests/tooling")

status=0
note "tests, compiled Triton kernels on CUDA"
"$ROOT/tools/run_tests.sh" "${sglang_tests[@]}" -rA 2>&1 | tee "$LOG_DIR/test.log" || status=1

note "the same tests under compute-sanitizer memcheck (caching allocator off)"
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[[ -x $sanitizer ]] || die "compute-sanitizer not found"
# The profiler (CUPTI) cannot attach under the sanitizer: the one test that
# counts kernels with it runs in the plain run above only.
PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool memcheck --error-exitcode 99 \
	--target-processes all --print-limit 100 \
	"$ROOT/tools/run_tests.sh" "${sglang_tests[@]}" \
	-k "not test_one_kernel_per_call" \
	2>&1 | tee "$LOG_DIR/memcheck.log" || status=1
grep -E "ERROR SUMMARY" "$LOG_DIR/memcheck.log" | tail -3 || true
exit $status
