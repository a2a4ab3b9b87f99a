#!/usr/bin/env bash
# Run the pre-commit hooks (black, isort, ruff, codespell, shellcheck) on every file.
# pre-commit and its hook environments live in build/ and .cache/, not in $VENV.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

tool_venv=$BUILD_DIR/pre-commit
# black's cache too (else ~/.cache/black); pip's own cache stays pip's.
export PRE_COMMIT_HOME=$ROOT/.cache/pre-commit BLACK_CACHE_DIR=$ROOT/.cache/black
if [[ ! -x $tool_venv/bin/pre-commit ]]; then
	writable_dir "$BUILD_DIR"
	rm -rf "$tool_venv"
	python3 -m venv "$tool_venv" || die "python3 -m venv failed; install Python's venv module (Debian/Ubuntu: apt-get install python3-venv)"
	"$tool_venv/bin/pip" install --quiet pre-commit==4.0.1 ||
		die "could not install pre-commit into $tool_venv (is the package registry reachable?)"
fi
cd "$ROOT"
# pre-commit only sees files git knows about: lint what is tracked or staged.
"$tool_venv/bin/pre-commit" run --all-files --show-diff-on-failure --color never ||
	die "pre-commit hooks failed (above); fix those files, or commit what black and isort rewrote, and run this again"
