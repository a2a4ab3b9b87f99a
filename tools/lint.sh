#!/usr/bin/env bash
# Run the pre-commit hooks (black, isort, ruff, codespell, shellcheck) on every file.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

VENV=${VENV:-$ROOT/.venv}
if [[ ! -x $VENV/bin/pre-commit ]]; then
	"$VENV/bin/pip" install --quiet pre-commit==4.0.1 || die "could not install pre-commit into $VENV"
fi
cd "$ROOT"
# pre-commit only sees files git knows about: lint what is tracked or staged.
"$VENV/bin/pre-commit" run --all-files --show-diff-on-failure --color never
