#!/usr/bin/env bash
# The schedule of the xs16 and xs16f comparisons (docs/results.md), resumable on any machine
# from the runs kept in docs/results/: each comparison runs in a checkout of its own commit.
#   bash docs/results/xs16-schedule/run.sh prepare   # the checkouts, with every kept run put back
#   bash docs/results/xs16-schedule/run.sh queue     # every run left, one after another (many hours)
#   bash docs/results/xs16-schedule/run.sh keep      # finished runs copied into docs/results/
# WORK (default: the folder above this checkout) holds the checkouts and the logs; the queue
# uses this checkout's .venv (bash scripts/setup.sh).
set -u
MAIN=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=${WORK:-$(dirname "$MAIN")}
PY=$MAIN/.venv/bin/python
HERE=$MAIN/docs/results/xs16-schedule
RES=$MAIN/docs/results
X16=$WORK/xs16-at-8f4c1a3     # xs16: every run at the tuning pass's commit
X16F=$WORK/xs16f-at-9470ade   # xs16f and its tuning pass tl16f
KEPT=(config.yaml summary.json eval_rows.json diagnostics.json REUSED)

log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$WORK/queue.log"; }
copy_runs() { # DEST SRC_DIR...: each finished run's kept files
  local dest=$1; shift
  for d in "$@"; do
    [ -f "$d/summary.json" ] || continue
    mkdir -p "$dest/$(basename "$d")"
    for f in "${KEPT[@]}"; do [ -f "$d/$f" ] && cp "$d/$f" "$dest/$(basename "$d")/"; done
  done
  return 0
}
retry() { # NAME COMMAND...: three tries (a run cut off resumes from its checkpoint)
  local name=$1; shift
  for i in 1 2 3; do
    log "start $name (try $i)"
    if "$@"; then log "done $name"; return 0; fi
    log "failed $name (try $i)"; sleep 30
  done
  log "giving up on $name"; return 1
}
merge_tuned() { # fixed from xs16's pass (tl16), every other strategy from tl16f's
  "$PY" - "$X16" "$X16F" <<'PY'
import sys, yaml
old, root = sys.argv[1:]
base = yaml.safe_load(open(f"{old}/docs/results/tuned-long.yaml"))
new = yaml.safe_load(open(f"{root}/keep/tl16f-runs/tuned.yaml"))
out = {"fixed": base["fixed"], **{k: v for k, v in new.items() if k not in ("fixed", "tuned_on")}}
out["tuned_on"] = new.get("tuned_on", base["tuned_on"])
head = "# fixed: xs16's tuning pass (tl16); every other strategy: its best trial in tl16f's pass; for mssr compare --tuned\n"
open(f"{root}/docs/results/tuned-long-f.yaml", "w").write(head + yaml.safe_dump(out, sort_keys=False))
PY
}

prepare() {
  [ -d "$X16" ] || git -C "$MAIN" worktree add --detach "$X16" 8f4c1a3
  [ -d "$X16F" ] || git -C "$MAIN" worktree add --detach "$X16F" 9470ade
  cp "$RES/tuned-long.yaml" "$X16/docs/results/"
  mkdir -p "$X16/runs" "$X16F/runs" "$X16F/keep/tl16f-runs"
  for d in "$RES"/xs16-runs/xs16-*; do [ -e "$X16/runs/$(basename "$d")" ] || cp -r "$d" "$X16/runs/"; done
  for d in "$RES"/tl16f-runs/tl16f-*; do [ -e "$X16F/keep/tl16f-runs/$(basename "$d")" ] || cp -r "$d" "$X16F/keep/tl16f-runs/"; done
  for d in "$RES"/xs16f-runs/xs16f-*; do [ -e "$X16F/runs/$(basename "$d")" ] || cp -r "$d" "$X16F/runs/"; done
  for f in same_run.ok same_run.differs same_run.txt; do [ -f "$RES/xs16f-runs/$f" ] && cp "$RES/xs16f-runs/$f" "$X16F/"; done
  return 0
}

queue() {
  local XP="env PYTHONPATH=$X16F $PY"
  cd "$X16" || exit 1
  env PYTHONPATH="$X16:$HERE" "$PY" "$HERE/set_aside.py" xs16 fixed,mssr | tee -a "$WORK/queue.log"
  retry xs16 env PYTHONPATH="$X16" "$PY" -m pipelines.cli compare configs/long.yaml --strategies fixed,mssr \
    --seeds 2 --orders 8 --budgets 0.1 --tuned docs/results/tuned-long.yaml --name xs16 >> "$WORK/xs16.log" 2>&1 || exit 1
  cd "$X16F" || exit 1
  retry tl16f-mssr $XP benchmarks/grid_tune.py configs/long.yaml --name tl16f \
    --spaces tune_spaces/mssr.yaml --keep keep/tl16f-runs >> "$WORK/tl16f.log" 2>&1 || exit 1
  merge_tuned || exit 1
  # fixed's reuse: one xs16 fixed run made on this machine, rerun at 9470ade; if benchmarks/same_run.py
  # finds the same run, xs16's fixed runs are reused in the blocks that ran on this machine
  if [ ! -f same_run.ok ] && [ ! -f same_run.differs ]; then
    local B
    B=$($XP "$HERE/reuse_fixed.py" check-block "$X16/runs")
    if [ -n "$B" ]; then
      if [ ! -f "runs/${B/xs16-/xs16f-}/summary.json" ]; then
        retry fixed-rerun $XP -m pipelines.cli run "$X16/runs/$B/config.yaml" \
          "run.name=${B/xs16-/xs16f-}" run.output_dir=runs >> "$WORK/xs16f.log" 2>&1 || exit 1
      fi
      if $XP benchmarks/same_run.py "runs/${B/xs16-/xs16f-}" "$X16/runs/$B" > same_run.txt 2>&1; then
        log "same_run $B: the same run; xs16's fixed runs of this machine are reused"; touch same_run.ok
      else
        log "same_run $B: not the same run; fixed runs again in every block"; touch same_run.differs
      fi
    else
      log "no xs16 fixed run on this machine to check: none reused this time"
    fi
  fi
  env PYTHONPATH="$X16F:$HERE" "$PY" "$HERE/set_aside.py" xs16f fixed,mssr | tee -a "$WORK/queue.log"
  [ -f same_run.ok ] && $XP "$HERE/reuse_fixed.py" copy "$X16/runs" | tee -a "$WORK/queue.log"
  retry xs16f $XP -m pipelines.cli compare configs/long.yaml --strategies fixed,mssr \
    --seeds 2 --orders 8 --budgets 0.1 --tuned docs/results/tuned-long-f.yaml --name xs16f >> "$WORK/xs16f.log" 2>&1 || exit 1
  # exploratory arms: each tuned by one pass over its grid, then on the 8 blocks of seed 0
  retry tl16f-x $XP benchmarks/grid_tune.py configs/long.yaml --name tl16f \
    --spaces tune_spaces/mssr.yaml,tune_spaces/observed-loss.yaml,tune_spaces/mir.yaml,tune_spaces/leitner.yaml,tune_spaces/sure.yaml \
    --keep keep/tl16f-runs >> "$WORK/tl16f.log" 2>&1 || exit 1
  merge_tuned || exit 1
  retry xs16x $XP -m pipelines.cli compare configs/long.yaml --strategies fixed,observed-loss,mir,leitner,sure \
    --seeds 1 --orders 8 --budgets 0.1 --tuned docs/results/tuned-long-f.yaml --name xs16f >> "$WORK/xs16x.log" 2>&1 || exit 1
  log "queue finished"
}

keep() {
  copy_runs "$RES/xs16-runs" "$X16"/runs/xs16-*
  copy_runs "$RES/tl16f-runs" "$X16F"/keep/tl16f-runs/tl16f-*
  copy_runs "$RES/xs16f-runs" "$X16F"/runs/xs16f-*
  for f in trials.md tuned.yaml; do [ -f "$X16F/keep/tl16f-runs/$f" ] && cp "$X16F/keep/tl16f-runs/$f" "$RES/tl16f-runs/"; done
  for f in same_run.ok same_run.differs same_run.txt; do
    [ -f "$X16F/$f" ] && mkdir -p "$RES/xs16f-runs" && cp "$X16F/$f" "$RES/xs16f-runs/"
  done
  [ -f "$X16F/docs/results/tuned-long-f.yaml" ] && cp "$X16F/docs/results/tuned-long-f.yaml" "$RES/"
  for k in xs16 tl16f xs16f; do
    ls -d "$RES/$k-runs/$k"-* > /dev/null 2>&1 || continue
    "$PY" -m pipelines.cli provenance "$RES/$k-runs" --out "$RES/$k-runs/provenance.csv" > /dev/null
  done
  return 0
}

case "${1:-}" in
  prepare | queue | keep) "$1" ;;
  *) echo "usage: bash $0 prepare|queue|keep" >&2; exit 2 ;;
esac
