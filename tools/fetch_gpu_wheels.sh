#!/usr/bin/env bash
# Fill build/gpu-wheels with the wheels that an air-gapped GPU host lacks (Python 3.12,
# torch 2.11.0 and triton 3.6.0 already installed), as pinned in
# requirements/gpu-offline.txt, so that 'make test WHEELHOUSE=build/gpu-wheels'
# builds its environment there offline. sglang-kernel is repacked from the
# registry's 322 MB wheel down to what the LoRA and MoE paths load on Hopper
# (its Python files and sm90/common_ops.abi3.so). Rerunnable: wheels already
# there are kept, wheels no longer pinned are removed. docs/gpu-offline.md says why.
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

# trim_kernel WHEEL DIR LOCAL: repack WHEEL into DIR with its Python files and the SM90
# ops library only, as version +LOCAL; prints the new wheel's name.
trim_kernel() {
	"$PIP_PYTHON" - "$@" <<'EOF'
import base64, hashlib, re, sys, zipfile
from pathlib import Path

def trim_kernel(src, dst_dir, local):
    """Repack the sglang-kernel wheel with its Python files and the SM90 ops library only."""
    def keep(name):
        if name.startswith("triton_kernels/"):
            return True  # pure Python, imported by sglang's MoE code
        if name.startswith("sgl_kernel/"):
            return not (name.startswith("sgl_kernel/sm100/")
                        or name in ("sgl_kernel/flash_ops.abi3.so", "sgl_kernel/flashmla_ops.abi3.so"))
        return ".dist-info/" in name and not name.endswith("/RECORD")
    src = Path(src)
    name, version, *tags = src.name[:-len(".whl")].split("-")
    new_version = f"{version}+{local}"
    old_info, new_info = f"{name}-{version}.dist-info/", f"{name}-{new_version}.dist-info/"
    dst = Path(dst_dir) / f"{name}-{new_version}-{'-'.join(tags)}.whl"
    tmp = dst.with_suffix(".tmp")
    record = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        for info in zin.infolist():
            if info.is_dir() or not keep(info.filename):
                continue
            data = zin.read(info)
            arcname = info.filename
            if arcname.startswith(old_info):
                arcname = new_info + arcname[len(old_info):]
                if arcname == new_info + "METADATA":
                    text, n = re.subn(r"^Version: .*$", f"Version: {new_version}", data.decode(),
                                      count=1, flags=re.M)
                    assert n == 1, "no Version line in METADATA"
                    data = text.encode()
            out = zipfile.ZipInfo(arcname, date_time=info.date_time)
            out.external_attr = info.external_attr
            out.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(out, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arcname},sha256={digest},{len(data)}")
        record.append(f"{new_info}RECORD,,")
        out = zipfile.ZipInfo(new_info + "RECORD", date_time=(2000, 1, 1, 0, 0, 0))
        out.external_attr = 0o100644 << 16
        out.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(out, "\n".join(record) + "\n")
    names = {r.split(",", 1)[0] for r in record}
    for needed in ("sgl_kernel/__init__.py", "sgl_kernel/load_utils.py",
                   "sgl_kernel/sm90/common_ops.abi3.so", "triton_kernels/__init__.py"):
        if needed not in names:
            tmp.unlink()
            sys.exit(f"error: {src.name} has no {needed}; the trim would be unusable")
    tmp.rename(dst)
    print(dst.name)

trim_kernel(*sys.argv[1:])
EOF
}

# The registry's wheels: everything pinned but sglang-kernel, fetched for CPython 3.12 on
# x86-64 Linux (glibc 2.39 there, so any manylinux tag up to 2_39), without dependencies:
# requirements/gpu-offline.txt pins each one, and 'check' below proves the set closed
# (tools/e2e_wheels.py: the pins, the closure check and the sizes of both wheelhouses).
missing_out=$("$PIP_PYTHON" "$ROOT/tools/e2e_wheels.py" missing "$REQUIREMENTS" "$WHEELS_DIR")
missing=()
[[ -z $missing_out ]] || mapfile -t missing <<<"$missing_out"
registry=()
kernel_pin=
for pin in "${missing[@]}"; do
	if [[ ${pin%%==*} == "$KERNEL_NAME" ]]; then
		kernel_pin=$pin
	else
		registry+=("$pin")
	fi
done

if [[ ${#registry[@]} -gt 0 ]]; then
	platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
	for n in 5 12 $(seq 17 39); do
		platforms+=(--platform "manylinux_2_${n}_x86_64")
	done
	note "downloading ${#registry[@]} wheels for CPython 3.12: ${registry[*]}"
	"$PIP_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
		--python-version 3.12 --implementation cp "${platforms[@]}" \
		--dest "$WHEELS_DIR" "${registry[@]}" ||
		die "downloading the wheels of $REQUIREMENTS failed (is the package registry reachable?)"
fi

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
	trimmed=$(trim_kernel "$SCRATCH/$KERNEL_WHEEL" "$WHEELS_DIR" "${version#*+}")
	note "wrote $trimmed"
fi

"$PIP_PYTHON" "$ROOT/tools/e2e_wheels.py" check "$REQUIREMENTS" "$WHEELS_DIR" "$REQUIREMENTS"
"$PIP_PYTHON" "$ROOT/tools/e2e_wheels.py" report "$WHEELS_DIR" "$MAX_MB"
note "wheelhouse ready: one wheel per pin, every dependency met by it or by the machine"
