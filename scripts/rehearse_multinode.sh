#!/usr/bin/env bash
# Multi-node rehearsal on one machine. An S3 server (moto's, from the test extra) plays the
# bucket; a Ray head and a second Ray node (1 CPU each, token authentication on) share no disk
# but it. `mssr run configs/tiny.yaml` is submitted with `ray job submit` (2 training workers:
# one lands on each node); it checkpoints to s3://rehearsal/storage and logs MLflow's artifacts
# to s3://rehearsal/mlflow. Mid-run, rank 1's worker on node 2 is killed (the run restores it
# from a checkpoint); then the driver is stopped with Ctrl-C (`ray job stop` sends SIGINT) and
# resumed by a second job (`--resume`). At the end the model is exported from the checkpoints
# in the bucket, the results are checked, and the nodes and the S3 server are stopped, also on
# failure or Ctrl-C.
#   bash scripts/rehearse_multinode.sh              # uses .venv (bash scripts/setup.sh makes it)
#   bash scripts/rehearse_multinode.sh OUT_DIR      # keep the results in OUT_DIR
#   REHEARSAL_KILL_STEP=0 bash scripts/rehearse_multinode.sh   # no worker killed
#   REHEARSAL_STOP_STEP=0 bash scripts/rehearse_multinode.sh   # no stop and resume
#   PYTHON=/path/to/venv/bin/python bash scripts/rehearse_multinode.sh
# The head node (and the driver) write OUT_DIR: the run directory (run.output_dir), the MLflow
# store (MLFLOW_TRACKING_URI=sqlite:///...), the jobs' logs, the export and a listing of the
# bucket. The second node runs in its own mount namespace (`unshare --mount`) where an empty
# tmpfs hides OUT_DIR, so the run passes only if no worker reads or writes the run directory.
# What this cannot check: the network between real machines (both nodes are on 127.0.0.1), a
# model cache per machine (both see this machine's) and a cloud's S3 (moto answers its API).
# Each node is stopped through the `ray start --block` process that runs it, so other Ray
# instances on this machine are left alone.
set -euo pipefail
if [ -n "${1:-}" ]; then mkdir -p "$1"; OUT=$(cd "$1" && pwd); else OUT=$(mktemp -d /tmp/mssr-rehearsal.XXXXXX); fi
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-.venv/bin/python}
BIN=$(cd "$(dirname "$PY")" && pwd)   # ray, mssr and moto_server live beside the interpreter
RAY="$BIN/ray"
KILL_STEP=${REHEARSAL_KILL_STEP:-20}   # rank 1's step at which its worker is killed (0: none)
STOP_STEP=${REHEARSAL_STOP_STEP:-28}   # rank 0's step at which the driver is stopped (0: none)
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
  # first, the S3 server last); one that has not finished after 30 s is killed, and its
  # processes die with it
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || continue
    for _ in $(seq 30); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 1; done
    kill -KILL "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ]; then
    for log in "$RAYTMP"/head.log "$RAYTMP"/node2.log "$RAYTMP"/s3.log; do
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

# The bucket: moto's S3 server on a free port. This shell, the driver and every worker (through
# the jobs' runtime env) reach it by the standard AWS variables, as they would reach AWS.
export AWS_ENDPOINT_URL="http://127.0.0.1:${P[15]}" AWS_ACCESS_KEY_ID=rehearsal AWS_SECRET_ACCESS_KEY=rehearsal \
  AWS_DEFAULT_REGION=us-east-1
"$BIN/moto_server" -H 127.0.0.1 -p "${P[15]}" > "$RAYTMP/s3.log" 2>&1 &
pids+=($!)
"$PY" -c "
import os, time
import boto3
s3 = boto3.client('s3')
for _ in range(120):
    try:
        s3.create_bucket(Bucket='rehearsal')
        break
    except Exception:
        time.sleep(0.5)
else:
    raise SystemExit('rehearsal: no S3 server answers at ' + os.environ['AWS_ENDPOINT_URL'])"
echo "rehearsal: S3 server at $AWS_ENDPOINT_URL, bucket s3://rehearsal"

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
HEAD_PID_INDEX=$((${#pids[@]} - 1))
# Ray gives a node 30 s (fixed) to register; a busy 2-core machine can miss that: one more try
if ! wait_for_start "$RAYTMP/head.log" "${pids[$HEAD_PID_INDEX]}"; then
  grep -q "timed out during startup" "$RAYTMP/head.log" || exit 1
  echo "rehearsal: the head node timed out starting (a busy machine); starting it again"
  wait "${pids[$HEAD_PID_INDEX]}" 2>/dev/null || true
  pkill -KILL -f -- "$RAYTMP/head" || true   # what the failed start left running (GCS, raylet)
  sleep 2
  unset "pids[$HEAD_PID_INDEX]"
  pids=("${pids[@]}")
  rm -rf "$RAYTMP/head"
  start_head
  wait_for_start "$RAYTMP/head.log" "${pids[$HEAD_PID_INDEX]}"
fi

# the second node's own view of the disk: OUT_DIR is an empty tmpfs there
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
mount -t tmpfs -o size=64m mssr-node2 "$1"
[ ! -e "$1/head_only" ] || { echo "node 2 still sees the head files"; exit 1; }
echo "node 2 sees none of $1"
shift
exec "$@"'
echo "rehearsal: second node joins with the head's token ($RAY_AUTH_TOKEN_PATH), in its own mount namespace"
PYTHONUNBUFFERED=1 "${NS[@]}" bash -c "$NODE2_VIEW" node2 "$OUT" "$RAY" start --address="$HEAD" --block --num-cpus=1 --num-gpus=0 --object-store-memory=500000000 --node-ip-address=127.0.0.1 \
  --node-manager-port="${P[9]}" --object-manager-port="${P[10]}" \
  --dashboard-agent-listen-port="${P[11]}" --dashboard-agent-grpc-port="${P[12]}" \
  --runtime-env-agent-port="${P[13]}" --metrics-export-port="${P[14]}" \
  --temp-dir="$RAYTMP/node2" --disable-usage-stats > "$RAYTMP/node2.log" 2>&1 &
pids+=($!)
wait_for_start "$RAYTMP/node2.log" "${pids[-1]}"

# the job API answers once the dashboard is up
for i in $(seq 60); do
  "$RAY" job list --address "$DASHBOARD" > /dev/null 2>&1 && break
  [ "$i" -eq 60 ] && { echo "rehearsal: the dashboard did not answer"; exit 1; }
  sleep 2
done
grep -q "node 2 sees none of" "$RAYTMP/node2.log" || { echo "rehearsal: node 2's view was not set up"; exit 1; }
echo "rehearsal: node 2 sees none of $OUT: only the bucket is shared"

# The jobs' environment: the MLflow store on the head, the bucket's endpoint and credentials;
# `ray job stop` sends SIGINT (Ctrl-C) and gives the run up to 120 s to stop cleanly.
ENV_JSON=$("$PY" -c "import json, os, sys; print(json.dumps({'env_vars': {
    'MLFLOW_TRACKING_URI': 'sqlite:///' + sys.argv[1] + '/mlflow.db',
    'RAY_JOB_STOP_SIGNAL': 'SIGINT', 'RAY_JOB_STOP_WAIT_TIME_S': '120',
    **{k: os.environ[k] for k in ('AWS_ENDPOINT_URL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_DEFAULT_REGION')}}}))" "$OUT")
RUN_DIR="$OUT/runs/rehearsal"
# The jobs, submitted and watched through Ray's job SDK (what `ray job submit`, `ray job stop`
# and `ray job logs` call): kill rank 1's worker (on node 2: one CPU each) at KILL_STEP, once
# it has restored stop the driver at STOP_STEP, then resume the run in a second job.
"$PY" - "$DASHBOARD" "$ROOT" "$OUT" "$KILL_STEP" "$STOP_STEP" "$ENV_JSON" <<'EOF'
import json, logging, os, shlex, signal, sys, time
from pathlib import Path

from ray.job_submission import JobStatus, JobSubmissionClient

logging.getLogger("ray").setLevel(logging.WARNING)  # the working dir's packaging, line by line
dashboard, root, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
kill_step, stop_step, runtime_env = int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
run_dir = out / "runs" / "rehearsal"
client = JobSubmissionClient(dashboard)
run = ["mssr", "run", "configs/tiny.yaml", f"run.output_dir={out}/runs", "run.name=rehearsal",
       "train.checkpoint_every=6", "train.storage_path=s3://rehearsal/storage",
       "mlflow.artifact_location=s3://rehearsal/mlflow", "--summary-json", f"{out}/summary.json"]


def steps(rank: int) -> int:
    plans = run_dir / "plans" / f"rank_{rank}.jsonl"
    return len(plans.read_text().splitlines()) if plans.exists() else 0


def job(name: str, entrypoint: list[str], watch=lambda: None) -> JobStatus:
    """Submit, watch until the job ends, keep and show its log."""
    client.submit_job(entrypoint=shlex.join(entrypoint), submission_id=name,
                      runtime_env={"working_dir": root, **runtime_env})
    while not (status := client.get_job_status(name)).is_terminal():
        watch()
        time.sleep(0.5)
    logs = client.get_job_logs(name)
    (out / f"job_{name.removeprefix('rehearsal-')}.log").write_text(logs)
    print("".join(f"  | {line}\n" for line in logs.splitlines()), end="")
    return status


done = set()


def kill_then_stop():
    if kill_step and "kill" not in done and steps(1) >= kill_step:
        pid = json.loads((run_dir / "workers" / "rank_1.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        print(f"rehearsal: killed rank 1 (pid {pid}, node 2) at step {kill_step}", flush=True)
        done.add("kill")
    restored = not kill_step or (run_dir / "restores.jsonl").exists()
    if stop_step and "stop" not in done and restored and steps(0) >= stop_step:
        print(f"rehearsal: Ctrl-C to the driver (ray job stop) at step {stop_step}", flush=True)
        client.stop_job("rehearsal-run")
        done.add("stop")


print("rehearsal: submitting mssr run configs/tiny.yaml (results in %s)" % out, flush=True)
status = job("rehearsal-run", run, kill_then_stop)
if not stop_step:
    sys.exit(0 if status == JobStatus.SUCCEEDED else f"rehearsal: FAILED, the job ended {status}")
if status != JobStatus.STOPPED or "--resume" not in (out / "job_run.log").read_text():
    sys.exit(f"rehearsal: FAILED, the job ended {status}, not stopped with a --resume hint")
print("rehearsal: the run stopped; a second job resumes it", flush=True)
status = job("rehearsal-resume", [*run, "--resume", str(run_dir)])
sys.exit(0 if status == JobStatus.SUCCEEDED else f"rehearsal: FAILED, the resumed run ended {status}")
EOF

# the model, from the checkpoints in the bucket, exported on the head (where the run directory is)
"$BIN/mssr" export "$RUN_DIR" --out "$OUT/export"
# what the bucket holds, for the checks below
"$PY" -c "
import sys
import boto3
pages = boto3.client('s3').get_paginator('list_objects_v2').paginate(Bucket='rehearsal')
keys = [o['Key'] for page in pages for o in page.get('Contents', [])]
open(sys.argv[1], 'w').write(''.join(k + '\n' for k in keys))" "$OUT/bucket.txt"

"$PY" - "$OUT" "$KILL_STEP" "$STOP_STEP" <<'EOF'
import json, sys
from pathlib import Path

out, kill_step, stop_step = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
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
if len(restores) != (kill_step > 0) + (stop_step > 0):
    sys.exit(f"rehearsal: FAILED, {len(restores)} restore(s) recorded for kill step {kill_step}, stop step {stop_step}")
keys = (out / "bucket.txt").read_text().split()
checkpoints = sorted({k.split("/")[3] for k in keys if k.startswith("storage/rehearsal/train/task_")})
artifacts = [k for k in keys if k.startswith("mlflow/")]
if not checkpoints or not any(k.endswith("/accuracy_matrix.png") for k in artifacts):
    sys.exit(f"rehearsal: FAILED, the bucket holds checkpoints {checkpoints} and {len(artifacts)} MLflow artifacts")
if not (out / "export" / "adapter_config.json").is_file():
    sys.exit("rehearsal: FAILED, no adapter exported from the bucket's checkpoints")
print(f"rehearsal: OK, {len(summary['accuracy_matrix']) - 1} tasks trained, AP {summary['ap']:.3f}, "
      f"workers on {len(ids)} nodes, replay steps per rank {replayed}, {len(restores)} restore(s), "
      f"checkpoints {', '.join(checkpoints)} and {len(artifacts)} MLflow artifacts in s3://rehearsal")
EOF
