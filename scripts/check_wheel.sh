#!/usr/bin/env bash
# Builds aead's wheel, installs it (not editable) into a fresh virtual environment and runs a
# one-epoch job with the console script from an empty folder: the configs must ship inside
# the package. Needs the real data in $AEAD_DATA_DIR (CI sets it). Run from anywhere.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
"$work/venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$work/dist" "$repo"
wheel="$(ls "$work"/dist/aead-*.whl)"
echo "built $(basename "$wheel")"

"$work/venv/bin/pip" install --quiet --progress-bar off "$wheel"

mkdir "$work/empty" && cd "$work/empty"
"$work/venv/bin/aead-run" experiment=one_class_zero --cfg job >/dev/null   # experiments ship too
"$work/venv/bin/aead-run" trainer.epochs=1 data.train_limit=600 data.test_limit=200 \
  data.download=false tracking.log_model=false
"$work/venv/bin/aead-report" --help >/dev/null
test -f mlruns/mlflow.db || { echo "no run store in $PWD" >&2; exit 1; }
echo "wheel check passed: $(basename "$wheel") runs from an empty folder"
