#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with aead, its dev and docs tools and the
# cluster extra (Ray, Slurm, PostgreSQL launchers and drivers), plus Debian's Chromium (the report's
# browser test) and PostgreSQL (the tracking-server tests). Safe to run again.
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
.venv/bin/python -m pip install --progress-bar off -e '.[dev,docs,cluster]'

# The report tests render HTML in a real headless browser (Debian's chromium + chromedriver);
# the cluster tests run a real PostgreSQL server (as an unprivileged user).
missing=()
command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  else
    echo "note: the tests need Debian's ${missing[*]}" >&2
    echo "      (sudo apt-get install ${missing[*]})" >&2
  fi
fi
echo "aead is set up: run 'source .venv/bin/activate' and then 'pytest'"
