#!/usr/bin/env bash
# Multi-node rehearsal on one machine: start a Ray head and a second Ray node (1 CPU each,
# token authentication on, the second node given the head's token), submit
# `mssr run configs/tiny.yaml` with `ray job submit` (2 training workers: one lands on each
# node), check that the run finished, that its workers ran on two different nodes and both
# replayed, and stop both nodes at the end, also on failure or Ctrl-C.
#   bash scripts/rehearse_multinode.sh              # uses .venv (bash scripts/setup.sh makes it)
#   bash scripts/rehearse_multinode.sh OUT_DIR      # keep the results in OUT_DIR
#   REHEARSAL_KILL_STEP=20 bash scripts/rehearse_multinode.sh OUT_DIR   # SIGKILL node 2's worker at step 20
#   PYTHON=/path/to/venv/bin/python bash scripts/rehearse_multinode.sh
# The nodes share no disk but a bucket. The head node (and the driver) write OUT_DIR: the run
# directory (run.output_dir) and the MLflow store (MLFLOW_TRACKING_URI=sqlite:///...). The
# second node runs in its own mount namespace (`unshare --mount`) where an empty tmpfs hides
# OUT_DIR, all but OUT_DIR/storage: the folder that plays the bucket of MSSR_STORAGE_PATH,
# where Ray Train keeps checkpoints. So the run passes only if no worker reads or writes the
# run directory. What this cannot check: the network between real machines (both nodes are on
# 127.0.0.1) and a model cache per machine (both see this machine's). Each node is stopped
# through the `ray start --block` process that runs it, so other Ray instances on this machine
# are left alone.
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
start_head() {
PYTHONUNBUFFERED=1 "$RAY" start --head --block --num-cpus=1 --num-gpus=0 --object-store-memory=500000000 --node-ip-address=127.0.0.1 \
  --port="${P[0]}" --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="${P[1]}" \
  --node-manager-port="${P[3]}" --object-manager-port="${P[4]}" \
  --dashboard-agent-listen-port="${P[5]}" --dashboard-agent-grpc-port="${P[6]}" \
  --runtime-env-agent-port="${P[7]}" --metrics-export-port="${P[8]}" \
  --temp-dir="$RAYTMP/head" --disable-usage-stats > "$RAYTMP/head.log" 2>&1 &
pids+=($!)
}
start_head
# Ray gives a node 30 s (fixed) to register; a busy 2-core machine can miss that: one more try
if ! wait_for_start "$RAYTMP/head.log" "${pids[0]}"; then
  grep -q "timed out during startup" "$RAYTMP/head.log" || exit 1
  echo "rehearsal: the head node timed out starting (a busy machine); starting it again"
  wait "${pids[0]}" 2>/dev/null || true
  pkill -KILL -f -- "$RAYTMP/head" || true   # what the failed start left running (GCS, raylet)
  sleep 2
  pids=()
  rm -rf "$RAYTMP/head"
  start_head
  wait_for_start "$RAYTMP/head.log" "${pids[0]}"
fi

# the second node's own view of the disk: OUT_DIR is an empty tmpfs there, with the bucket
# (OUT_DIR/storage) mounted back into it
mkdir -p "$OUT/storage" "$RAYTMP/bucket"
touch "$OUT/head_only"
if unshare --mount --propagation private true 2>/dev/null; then
  NS=(unshare --mount --propagation private)
elif unshare --user --map-root-user --mount --propagation private true 2>/dev/null; then
  NS=(unshare --user --map-root-user --mount --propagation private)
else
  echo "rehearsal: needs a mount namespace for the second node (unshare --mount: root, or user namespaces)"
  exit 1
fi
NODE2_VIEW='set -e
mount --bind "$1/storage" "$2"
mount -t tmpfs -o size=64m mssr-node2 "$1"
mkdir -p "$1/storage" && mount --bind "$2" "$1/storage"
[ ! -e "$1/head_only" ] || { echo "node 2 still sees the head files"; exit 1; }
echo "node 2 sees only the bucket of $1"
shift 2
exec "$@"'
echo "rehearsal: second node joins with the head's token ($RAY_AUTH_TOKEN_PATH), in its own mount namespace"
PYTHONUNBUFFERED=1 "${NS[@]}" bash -c "$NODE2_VIEW" node2 "$OUT" "$RAYTMP/bucket" "$RAY" start --address="$HEAD" --block --num-cpus=1 --num-gpus=0 --object-store-memory=500000000 --node-ip-address=127.0.0.1 \
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
grep -q "node 2 sees only the bucket" "$RAYTMP/node2.log" || { echo "rehearsal: node 2's view was not set up"; exit 1; }
echo "rehearsal: node 2 sees only the bucket ($OUT/storage), not the run directory"

RUN_DIR="$OUT/runs/rehearsal"
if [ -n "${REHEARSAL_KILL_STEP:-}" ]; then
  # rank 1 runs on node 2 (one CPU each): SIGKILL it once its plan log reaches the step
  (
    for _ in $(seq 2400); do
      if [ -f "$RUN_DIR/plans/rank_1.jsonl" ] && [ "$(wc -l < "$RUN_DIR/plans/rank_1.jsonl")" -ge "$REHEARSAL_KILL_STEP" ]; then
        pid=$("$PY" -c "import json, sys; print(json.load(open(sys.argv[1]))['pid'])" "$RUN_DIR/workers/rank_1.json")
        kill -KILL "$pid" && echo "rehearsal: killed rank 1 (pid $pid, node 2) at step $REHEARSAL_KILL_STEP"
        exit 0
      fi
      sleep 0.5
    done
  ) &
fi
echo "rehearsal: submitting mssr run configs/tiny.yaml (results in $OUT)"
"$RAY" job submit --address "$DASHBOARD" --working-dir "$ROOT" --runtime-env-json "$ENV_JSON" \
  -- mssr run configs/tiny.yaml "run.output_dir=$OUT/runs" run.name=rehearsal train.checkpoint_every=6 \
     --summary-json "$OUT/summary.json"

"$PY" - "$OUT" "${REHEARSAL_KILL_STEP:-}" <<'EOF'
import json, sys
from pathlib import Path

out, kill_step = Path(sys.argv[1]), sys.argv[2]
run_dir = out / "runs" / "rehearsal"
summary = json.loads((out / "summary.json").read_text())
nodes = {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "workers").glob("rank_*.json"))}
for rank, info in nodes.items():
    print(f"rehearsal: {rank} ran on node {info['node_id'][:12]}... ({info['hostname']})")
ids = {info["node_id"] for info in nodes.values()}
if len(nodes) != 2 or len(ids) != 2:
    sys.exit(f"rehearsal: FAILED, expected 2 workers on 2 nodes, got {len(nodes)} on {len(ids)}")
replayed = {}
for rank in (0, 1):
    plans = [json.loads(line) for line in (run_dir / "plans" / f"rank_{rank}.jsonl").read_text().splitlines()]
    replayed[rank] = sum(1 for p in plans if p["replay"])
if not all(replayed.values()):
    sys.exit(f"rehearsal: FAILED, replay steps per rank: {replayed}")
restores = (run_dir / "restores.jsonl").read_text().splitlines() if (run_dir / "restores.jsonl").exists() else []
if kill_step and not restores:
    sys.exit("rehearsal: FAILED, rank 1 was to be killed but no restore was recorded")
print(f"rehearsal: OK, {len(summary['accuracy_matrix']) - 1} tasks trained, AP {summary['ap']:.3f}, "
      f"workers on {len(ids)} nodes, replay steps per rank {replayed}, {len(restores)} restore(s)")
EOF
