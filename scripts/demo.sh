#!/usr/bin/env bash
# Set up (if needed) and run the demo: SmolLM2-135M-Instruct + LoRA on the built-in 5-task
# stream with MSSR replay, 2 CPU workers. Extra arguments go to `mssr run`.
#   bash scripts/demo.sh
#   bash scripts/demo.sh replay.strategy=none
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mssr run configs/demo.yaml "$@"
