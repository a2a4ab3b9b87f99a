#!/usr/bin/env bash
# Fill build/e2e-wheels (after build/gpu-wheels) with what sglang's offline Engine
# needs on the GPU machine, as pinned in requirements/e2e.txt. docs/e2e.md says why.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WHEELS_DIR=${E2E_WHEELS_DIR:-$BUILD_DIR/e2e-wheels}
MAX_MB=${E2E_WHEELS_MAX_MB:-15}
REQUIREMENTS=$ROOT/requirements/e2e.txt
BASE_REQUIREMENTS=$ROOT/requirements/gpu-offline.txt
PIP_PYTHON=${PIP_PYTHON:-python3}

[[ -f $REQUIREMENTS ]] || die "$REQUIREMENTS not found"
"$ROOT/tools/fetch_gpu_wheels.sh"
mkdir -p "$WHEELS_DIR"
# Every pin whose wheel is missing, after removing wheels that no pin names.
mapfile -t registry < <("$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" missing "$REQUIREMENTS" "$WHEELS_DIR")
[[ ${#registry[@]} -eq 0 ]] || download_wheels "$REQUIREMENTS" "$WHEELS_DIR" "${registry[@]}"

"$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" check "$REQUIREMENTS" "$WHEELS_DIR" "$BASE_REQUIREMENTS"
"$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" report "$WHEELS_DIR" "$MAX_MB"
note "e2e wheelhouse ready: $WHEELS_DIR (with $BUILD_DIR/gpu-wheels)"
