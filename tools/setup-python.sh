#!/usr/bin/env bash
# Creates .venv/ (git-ignored) with the Python packages the reference and golden-file scripts in
# tools/ use, all from PyPI. Idempotent: returns at once when the pinned set is installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQ="$ROOT/tools/requirements.txt"
STAMP="$VENV/.detnas-requirements"
if [[ -x "$VENV/bin/python" && -f "$STAMP" ]] && cmp -s "$REQ" "$STAMP"; then
    exit 0
fi
echo "detnas: installing Python tools into $VENV" >&2
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
cp "$REQ" "$STAMP"
