#!/usr/bin/env bash
# Fill build/gpu-wheels with the wheels an air-gapped GPU host (Python 3.12, torch and
# triton installed) lacks, as pinned in requirements/gpu-offline.txt, for
# 'make test WHEELHOUSE=build/gpu-wheels' there; sglang-kernel trimmed to what the
# LoRA and MoE paths load on Hopper. Rerunnable. docs/gpu-offline.md says why.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

WHEELS_DIR=$BUILD_DIR/gpu-wheels
MAX_MB=${GPU_WHEELS_MAX_MB:-45}
REQUIREMENTS=$ROOT/requirements/gpu-offline.txt
# Any Python with pip will do: the downloads are for CPython 3.12 whatever runs pip.
PIP_PYTHON=${PIP_PYTHON:-python3}

# The registry's sglang-kernel wheel that gets trimmed, and its digest.
KERNEL_NAME=sglang-kernel
KERNEL_VERSION=0.4.2.post2
KERNEL_WHEEL=sglang_kernel-$KERNEL_VERSION-cp310-abi3-manylinux2014_x86_64.whl
KERNEL_SHA256=f275ce01010933c4ea655e832a05442b766ab8f23dcfd6ff678b15e295d42203

# Where the 322 MB sglang-kernel wheel is downloaded and trimmed; a run killed
# outright leaves it, so every run starts by removing it.
SCRATCH=$BUILD_DIR/.gpu-wheels.download

[[ -f $REQUIREMENTS ]] || die "$REQUIREMENTS not found"
"$PIP_PYTHON" -m pip --version >/dev/null 2>&1 || die "$PIP_PYTHON has no pip (set PIP_PYTHON)"
writable_dir "$WHEELS_DIR"
rm -rf "$SCRATCH"
trap 'rm -rf "$SCRATCH"' EXIT

# Every pin without its wheel (after removing the wheels no pin names): all but
# sglang-kernel come from the registry; 'check' below proves the set closed.
missing=$("$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" missing "$REQUIREMENTS" "$WHEELS_DIR")
kernel_pin=$(grep "^$KERNEL_NAME==" <<<"$missing" || true)
mapfile -t registry < <(grep -v -e "^$KERNEL_NAME==" -e '^$' <<<"$missing" || true)
[[ ${#registry[@]} -eq 0 ]] || download_wheels "$REQUIREMENTS" "$WHEELS_DIR" "${registry[@]}"

if [[ -n $kernel_pin ]]; then
	version=${kernel_pin#*==}
	[[ ${version%%+*} == "$KERNEL_VERSION" && $version == *+* ]] ||
		die "$REQUIREMENTS pins $kernel_pin; this script trims $KERNEL_NAME $KERNEL_VERSION (pin it as $KERNEL_VERSION+LABEL)"
	mkdir "$SCRATCH"
	note "downloading $KERNEL_WHEEL (322 MB) to trim it"
	"$PIP_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
		--dest "$SCRATCH" "$KERNEL_NAME==$KERNEL_VERSION" ||
		die "downloading $KERNEL_NAME==$KERNEL_VERSION failed (is the package registry reachable?)"
	[[ -f $SCRATCH/$KERNEL_WHEEL ]] || die "the registry gave $(ls "$SCRATCH") instead of $KERNEL_WHEEL"
	actual=$(sha256sum "$SCRATCH/$KERNEL_WHEEL" | cut -d' ' -f1)
	[[ $actual == "$KERNEL_SHA256" ]] ||
		die "$KERNEL_WHEEL has sha256 $actual, expected $KERNEL_SHA256"
	note "trimming it to sgl_kernel's Python files, sm90/common_ops.abi3.so and triton_kernels"
	trimmed=$("$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" trim "$SCRATCH/$KERNEL_WHEEL" "$WHEELS_DIR" "${version#*+}")
	note "wrote $trimmed"
fi

"$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" check "$REQUIREMENTS" "$WHEELS_DIR" "$REQUIREMENTS"
"$PIP_PYTHON" "$ROOT/tools/wheelhouse.py" report "$WHEELS_DIR" "$MAX_MB"
note "wheelhouse ready: one wheel per pin, every dependency met by it or by the machine"
