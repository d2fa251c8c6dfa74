"""The run recorder: the one process that writes what the training workers report.

Workers may run on other machines than the driver, with no disk in common. They write
nothing themselves: every record they make (where they run, the replay plan of each step,
each restore from a checkpoint, the progress at each checkpoint, the step metrics for
MLflow) is a small message to this actor, which the driver starts on its own node and which
writes the run directory and logs to MLflow there::

    <run_dir>/workers/rank_R.json     where rank R runs (process id, Ray node, host)
    <run_dir>/plans/rank_R.jsonl      the replay plan rank R received, step by step
    <run_dir>/restores.jsonl          one line per restore from a checkpoint
    <run_dir>/progress.json           where the run stood at its last checkpoint

Messages from one worker are applied in the order it sent them (Ray keeps the order of one
caller's calls to an actor); workers do not wait for them, except ``flush`` at the end of a
task and of the run. If MLflow cannot be reached, the step metrics stay buffered and are
sent when it answers again (tried every ``RETRY_S`` seconds at most, so that a server that is
away does not slow the recorder down); whatever is still unsent when the run ends is written to
``<run_dir>/unlogged_metrics.jsonl`` and counted in ``close()``'s answer, so a metrics
server that goes away costs no training and loses no figure.

    recorder = RecorderActor.options(**recorder_options()).remote(run_dir, tracking_uri, run_id)
    recorder.plan.remote(rank, step, plan)          # a worker, fire and forget
    unlogged = ray.get(recorder.close.remote())     # the driver, after training
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Optional

import ray

from mssr.run_files import RunFiles


@dataclass(frozen=True)
class WorkerRecord:
    """Where one training worker runs (failure drills and placement checks read it)."""

    rank: int
    pid: int
    node_id: str
    hostname: str
    actor_pid: Optional[int] = None  # the memory actor's process (rank 0 asks it)


STOPPED_FILE = "stopped.json"  # in the run directory: why a worker ended the run (one line)
RETRY_S = 20.0  # after a failed send to MLflow, the next try waits this long


class RunRecorder(RunFiles):
    """The recorder's code as a plain class (``RecorderActor`` is its Ray actor): the run's
    files (``mssr.run_files``), plus the step metrics for MLflow and the workers' records."""

    def __init__(self, run_dir: str, tracking_uri: Optional[str], run_id: Optional[str]):
        super().__init__(run_dir)
        self.tracking_uri, self.run_id = tracking_uri, run_id
        self.client = None  # made on the first flush
        self.metrics: list[tuple[dict[str, float], int]] = []  # buffered until sent
        self.send_failures = 0
        self.last_error = ""
        self.retry_at = 0.0  # after a failed send, the next try waits until then (time.monotonic)

    def worker(self, record: WorkerRecord) -> None:
        self._write(f"workers/rank_{record.rank}.json", json.dumps(asdict(record)))

    def stopped(self, rank: int, error: str) -> None:
        """A worker ended on an error a restart cannot fix (``pipelines.train_loop.train_loop``)."""
        self._write(STOPPED_FILE, json.dumps({"rank": rank, "error": error}))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((metrics, step))
        if len(self.metrics) >= 16:
            self.flush()

    def flush(self, force: bool = False) -> int:
        """Send the buffered metrics to MLflow; on failure keep them, and wait RETRY_S before
        trying again (unless ``force``), so that a server that is away does not slow the
        recorder down. Returns how many entries are still unsent."""
        if not self.metrics or self.run_id is None or (time.monotonic() < self.retry_at and not force):
            return len(self.metrics)
        from pipelines.tracking import log_metric_batches, mlflow_client

        try:
            if self.client is None:
                self.client = mlflow_client(self.tracking_uri)
            log_metric_batches(self.client, self.run_id, self.metrics)
            self.metrics.clear()
        except Exception as e:  # the server is away: training goes on, the figures wait here
            self.send_failures += 1
            self.retry_at = time.monotonic() + RETRY_S
            self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
        return len(self.metrics)

    def close(self, wait_s: float = 0.0) -> dict:
        """The last flush, tried again every few seconds for up to ``wait_s`` seconds; entries
        that still cannot be sent go to ``unlogged_metrics.jsonl``. Returns ``{"unlogged":
        entries, "failures": failed flushes, "error": the last error}``."""
        deadline = time.monotonic() + wait_s
        left = self.flush(force=True)
        while left and time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            left = self.flush(force=True)
        if left:
            for metrics, step in self.metrics:
                self._append("unlogged_metrics.jsonl", json.dumps({"step": step, "metrics": metrics}))
            self.metrics.clear()
        return {"unlogged": left, "failures": self.send_failures, "error": self.last_error}


# A tracking server that stops answering must not hold the recorder (and the plan log behind
# it) for MLflow's default minutes of retries: a few quick tries (the driver's settings, made by
# quiet_env), the rest waits for the next flush.
RecorderActor = ray.remote(num_cpus=0, max_restarts=-1)(RunRecorder)


def recorder_options() -> dict:
    """Options of the run's recorder: on the calling process's node (the driver's: its disk),
    with the driver's MLflow retry settings."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from pipelines.console import MLFLOW_QUICK_RETRIES

    node = ray.get_runtime_context().get_node_id()
    env = {k: os.environ.get(k, v) for k, v in MLFLOW_QUICK_RETRIES.items()}
    return {
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        "runtime_env": {"env_vars": env},
    }
