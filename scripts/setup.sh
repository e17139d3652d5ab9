#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with aead and its dev tools, plus Debian's
# Chromium for the report's browser test. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"aead needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]}")
PY

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --progress-bar off -e '.[dev]'

# The report tests render HTML in a real headless browser (Debian's chromium + chromedriver).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
  else
    echo "note: install Debian's chromium and chromium-driver for the browser test" >&2
    echo "      (sudo apt-get install chromium chromium-driver)" >&2
  fi
fi
echo "aead is set up: run 'source .venv/bin/activate' and then 'pytest'"
