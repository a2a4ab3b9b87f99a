#!/usr/bin/env bash
# On a GPU machine: sglang's Engine from the pristine pin (a worktree of its tag in
# build/sglang-pin) and from the patched tree, side by side: tests/gpu, then
# bench/e2e/run.py with "$@" (docs/e2e.md). The wheelhouses, when there, are
# installed offline into E2E_SITE. E2E_SERIES=N: "ours" is the first N patches only.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PYTHON=${PYTHON:-python3}
WHEELHOUSES=${E2E_WHEELHOUSES:-$BUILD_DIR/gpu-wheels $BUILD_DIR/e2e-wheels}
SITE=${E2E_SITE:-$BUILD_DIR/e2e-site}
PIN_WORKTREE=$(realpath -m "${E2E_PIN_TREE:-$BUILD_DIR/sglang-pin}")

command -v nvidia-smi >/dev/null || die "no nvidia-smi: make e2e runs sglang's engine on a CUDA GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2

# worktree DIR REV: a fresh detached checkout of $PIN_TREE's REV in DIR.
worktree() {
	rm -rf "$1"
	git -C "$PIN_TREE" worktree prune
	git -C "$PIN_TREE" worktree add --quiet --detach "$1" "$2" ||
		die "could not check out $2 of $PIN_TREE into $1"
}

"$ROOT/apply.sh"
# The pin side: the pristine tag, checked out beside the patched tree.
worktree "$PIN_WORKTREE" "$PIN_TAG"
ours=$PIN_TREE
count=$(git -C "$PIN_TREE" rev-list --count "$PIN_TAG..HEAD")
if [[ -n ${E2E_SERIES:-} ]]; then
	[[ $E2E_SERIES =~ ^[0-9]+$ && $E2E_SERIES -ge 1 && $E2E_SERIES -le $count ]] ||
		die "E2E_SERIES=$E2E_SERIES: give a patch count from 1 to $count"
	ours=$BUILD_DIR/sglang-ours
	worktree "$ours" "HEAD~$((count - E2E_SERIES))"
	count=$E2E_SERIES
fi
note "pin: $PIN_WORKTREE ($PIN_TAG); ours: $ours ($count patches)"

wheels=()
for dir in $WHEELHOUSES; do
	[[ -d $dir ]] || continue
	wheels+=("$dir"/*.whl)
done
if [[ ${#wheels[@]} -gt 0 ]]; then
	stamp=$(printf '%s\n' "${wheels[@]##*/}" | sha256sum | cut -d' ' -f1)
	if [[ $(cat "$SITE/.stamp" 2>/dev/null || true) != "$stamp" ]]; then
		note "installing ${#wheels[@]} wheels into $SITE (offline, no dependencies)"
		rm -rf "$SITE"
		"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" ||
			die "installing the wheels of $WHEELHOUSES into $SITE failed"
		echo "$stamp" >"$SITE/.stamp"
	fi
	export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
else
	note "no wheelhouse in $WHEELHOUSES: using $PYTHON's own packages"
fi
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' ||
	die "$PYTHON sees no CUDA GPU"
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 E2E_PIN_TREE=$PIN_WORKTREE E2E_OURS_TREE=$ours

if [[ ${E2E_SKIP_TEST:-0} != 1 ]]; then
	note "tests/gpu: pin vs ours on a small model, graphs and eager"
	"$PYTHON" -m pytest -p no:cacheprovider -q -rA "$ROOT/tests/gpu" ||
		die "tests/gpu failed: the patched tree's engine does not match the pin (see above)"
fi
note "bench/e2e/run.py $*"
"$PYTHON" "$ROOT/bench/e2e/run.py" --pin-tree "$PIN_WORKTREE" --ours-tree "$ours" "$@"
