#!/usr/bin/env bash
# Multi-node rehearsal on one machine: start a Ray head and a second Ray node (1 CPU each,
# token authentication on, the second node given the head's token), submit
# `mssr run configs/tiny.yaml` with `ray job submit` (2 training workers: one lands on each
# node), check that the run finished and that its workers ran on two different nodes, and stop
# both nodes at the end, also on failure or Ctrl-C.
#   bash scripts/rehearse_multinode.sh              # uses .venv (bash scripts/setup.sh makes it)
#   bash scripts/rehearse_multinode.sh OUT_DIR      # keep the results in OUT_DIR
#   PYTHON=/path/to/venv/bin/python bash scripts/rehearse_multinode.sh
# OUT_DIR plays the shared storage of a real cluster: the run directory (run.output_dir), the
# MLflow store (MLFLOW_TRACKING_URI=sqlite:///...) and Ray Train's checkpoints
# (MSSR_STORAGE_PATH). Each node is stopped through the `ray start --block` process that runs
# it, so other Ray instances on this machine are left alone.
set -euo pipefail
if [ -n "${1:-}" ]; then mkdir -p "$1"; OUT=$(cd "$1" && pwd); else OUT=$(mktemp -d /tmp/mssr-rehearsal.XXXXXX); fi
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-.venv/bin/python}
BIN=$(cd "$(dirname "$PY")" && pwd)   # ray and mssr live beside the interpreter
RAY="$BIN/ray"
# Ray's own files live in a short path (its socket paths must stay under 108 characters)
RAYTMP=$(mktemp -d /tmp/mssr-ray.XXXXXX)
echo "$RAYTMP" > "$OUT/ray_temp_dir"
export PATH="$BIN:$PATH" HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
# a busy 2-core machine with a fresh virtualenv (nothing compiled yet) can take over Ray's
# default 60 s to start the dashboard process
export RAY_DASHBOARD_STARTUP_TIMEOUT_S=300
unset RAY_ADDRESS RAY_AUTH_TOKEN

# Token authentication: a fresh token for this cluster; every node and client gets it.
"$PY" -c "import secrets; print(secrets.token_hex(32))" > "$RAYTMP/auth_token"
chmod 600 "$RAYTMP/auth_token"
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$RAYTMP/auth_token"

pids=()
stop_cluster() {
  local rc=$?
  # SIGTERM to each `ray start --block` makes it stop that node's Ray processes (second node
  # first); one that has not finished after 30 s is killed, and its processes die with it
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || continue
    for _ in $(seq 30); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 1; done
    kill -KILL "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for log in "$RAYTMP"/head.log "$RAYTMP"/node2.log; do
      [ -f "$log" ] && { echo "--- last lines of $log"; tail -n 20 "$log"; }
    done
  fi
  rm -rf "$RAYTMP"
  echo "rehearsal: cluster stopped"
  exit "$rc"
}
trap stop_cluster EXIT
trap 'exit 130' INT TERM

# 16 free TCP ports (the two nodes share this machine, so none may use a fixed default port)
read -r -a P <<< "$("$PY" -c "
import socket
socks = [socket.socket() for _ in range(16)]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))")"
HEAD="127.0.0.1:${P[0]}"
DASHBOARD="http://127.0.0.1:${P[1]}"

wait_for_start() {  # wait_for_start LOG PID: until `ray start --block` says the node runs
  for _ in $(seq 360); do
    grep -q "Ray runtime started" "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "rehearsal: ray start exited, see above"; return 1; }
    sleep 1
  done
  echo "rehearsal: node did not start within 360 s"; return 1
}

echo "rehearsal: head node at $HEAD, dashboard $DASHBOARD"
PYTHONUNBUFFERED=1 "$RAY" start --head --block --num-cpus=1 --num-gpus=0 --object-store-memory=500000000 --node-ip-address=127.0.0.1 \
  --port="${P[0]}" --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="${P[1]}" \
  --node-manager-port="${P[3]}" --object-manager-port="${P[4]}" \
  --dashboard-agent-listen-port="${P[5]}" --dashboard-agent-grpc-port="${P[6]}" \
  --runtime-env-agent-port="${P[7]}" --metrics-export-port="${P[8]}" \
  --temp-dir="$RAYTMP/head" --disable-usage-stats > "$RAYTMP/head.log" 2>&1 &
pids+=($!)
wait_for_start "$RAYTMP/head.log" "${pids[0]}"

echo "rehearsal: second node joins with the head's token ($RAY_AUTH_TOKEN_PATH)"
PYTHONUNBUFFERED=1 "$RAY" start --address="$HEAD" --block --num-cpus=1 --num-gpus=0 --object-store-memory=500000000 --node-ip-address=127.0.0.1 \
  --node-manager-port="${P[9]}" --object-manager-port="${P[10]}" \
  --dashboard-agent-listen-port="${P[11]}" --dashboard-agent-grpc-port="${P[12]}" \
  --runtime-env-agent-port="${P[13]}" --metrics-export-port="${P[14]}" \
  --temp-dir="$RAYTMP/node2" --disable-usage-stats > "$RAYTMP/node2.log" 2>&1 &
pids+=($!)
wait_for_start "$RAYTMP/node2.log" "${pids[1]}"

# the job API answers once the dashboard is up
for i in $(seq 60); do
  "$RAY" job list --address "$DASHBOARD" > /dev/null 2>&1 && break
  [ "$i" -eq 60 ] && { echo "rehearsal: the dashboard did not answer"; exit 1; }
  sleep 2
done

ENV_JSON=$("$PY" -c "import json, sys; print(json.dumps({'env_vars': {
    'MLFLOW_TRACKING_URI': 'sqlite:///' + sys.argv[1] + '/mlflow.db',
    'MSSR_STORAGE_PATH': sys.argv[1] + '/storage'}}))" "$OUT")
echo "rehearsal: submitting mssr run configs/tiny.yaml (results in $OUT)"
"$RAY" job submit --address "$DASHBOARD" --working-dir "$ROOT" --runtime-env-json "$ENV_JSON" \
  -- mssr run configs/tiny.yaml "run.output_dir=$OUT/runs" run.name=rehearsal \
     --summary-json "$OUT/summary.json"

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
summary = json.loads((out / "summary.json").read_text())
nodes = {p.stem: json.loads(p.read_text()) for p in sorted((out / "runs" / "rehearsal" / "workers").glob("rank_*.json"))}
for rank, info in nodes.items():
    print(f"rehearsal: {rank} ran on node {info['node_id'][:12]}... ({info['hostname']})")
ids = {info["node_id"] for info in nodes.values()}
if len(nodes) != 2 or len(ids) != 2:
    sys.exit(f"rehearsal: FAILED, expected 2 workers on 2 nodes, got {len(nodes)} on {len(ids)}")
print(f"rehearsal: OK, {len(summary['accuracy_matrix']) - 1} tasks trained, AP {summary['ap']:.3f}, "
      f"workers on {len(ids)} nodes")
EOF
