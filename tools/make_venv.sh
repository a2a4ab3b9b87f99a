#!/usr/bin/env bash
# Build $VENV from the package registry (requirements/test.txt), or offline from
# $WHEELHOUSE on top of the machine's own torch (docs/gpu-offline.md); reused when
# built from the same requirements. pip's own lines are the progress.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-}

if [[ -n $WHEELHOUSE ]]; then
	requirements=$ROOT/requirements/gpu-offline.txt
	[[ -d $WHEELHOUSE ]] || die "WHEELHOUSE $WHEELHOUSE does not exist; build it with 'make gpu-wheels'"
else
	requirements=$ROOT/requirements/test.txt
fi
stamp=$VENV/.requirements.sha256
wanted=$( (cat "$requirements"; echo "$PYTHON $WHEELHOUSE") | sha256sum | cut -d' ' -f1)

if [[ -x $VENV/bin/python && $(cat "$stamp" 2>/dev/null) == "$wanted" ]]; then
	note "environment $VENV is up to date"
	exit 0
fi
# Only our own .venv is ever rebuilt; an environment given by VENV=... is used as it is.
if [[ -e $VENV && $(realpath -m "$VENV") != "$ROOT/.venv" ]]; then
	[[ -x $VENV/bin/python ]] || die "VENV $VENV has no bin/python this user can run; pass a virtual environment, or leave VENV unset to build .venv"
	note "using $VENV as it is (not built from $requirements by this checkout; it is left alone)"
	exit 0
fi

writable_dir "$(dirname "$VENV")"
rm -rf "$VENV"
if [[ -n $WHEELHOUSE ]]; then
	note "building $VENV offline from $WHEELHOUSE on top of $PYTHON's torch"
	"$PYTHON" -m venv --system-site-packages "$VENV" || die "$PYTHON -m venv failed; install Python's venv module (Debian/Ubuntu: apt-get install python3-venv)"
	# $PYTHON may itself be a venv (the GPU machine's python3 is): --system-site-packages
	# then reaches its base interpreter, not its torch. Chain its site-packages in too.
	"$PYTHON" -c 'import site, sys
if sys.prefix != sys.base_prefix:
    print("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages()))' \
		>"$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_base_venv.pth"
	"$VENV/bin/pip" install --progress-bar off --no-index --find-links "$WHEELHOUSE" -r "$requirements" >&2 ||
		die "offline install from $WHEELHOUSE failed; rebuild it with 'make gpu-wheels'"
else
	note "building $VENV from the package registry ($requirements): about 5 GB, 3-4 minutes the first time"
	"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed; install Python's venv module (Debian/Ubuntu: apt-get install python3-venv)"
	"$VENV/bin/pip" install --quiet --upgrade pip >/dev/null ||
		die "upgrading pip in $VENV failed (is the package registry reachable?)"
	"$VENV/bin/pip" install --progress-bar off -r "$requirements" >&2 ||
		die "installing $requirements into $VENV failed (is the package registry reachable?)"
fi
echo "$wanted" >"$stamp"
note "environment ready: $("$VENV/bin/python" -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)')"
