"""The per-worker training loop run by Ray Train (one process per worker, DDP between them):
``mssr.loop.ContinualLoop`` with Ray's services.

- the memory: the run's memory actor (``pipelines.memory_actor``), shared by every worker;
  rank 0 sends each step's gathered losses without waiting for them to be applied;
- the batches: this worker's shard of each task's tokenised split (Ray Data's streaming split,
  read ahead by a thread), and the replay pool's rows from Ray's object store
  (``pipelines.pool``);
- the records: the run recorder (``pipelines.recorder``), which writes on the driver's node,
  and Ray Train's checkpoints (``ray.train.report``).

After a failure Ray Train restarts every worker with the last checkpoint: the model,
optimizer, LR schedule, RNG states, accuracy matrix and counters are restored, the memory
actor is reset to the checkpointed state, and the current task's data is skipped up to the
checkpointed position (the streaming split repeats the same order), so the run continues
as if nothing had happened. ``restores.jsonl`` in the run directory records each restore.

Workers write no file; the final accuracy matrix reaches the driver in Ray Train's last
checkpoint. The driver (``pipelines.trainer``) builds the ``TorchTrainer`` that calls ``train_loop``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import ray
import ray.train
import ray.train.torch
import torch

from mssr.config import Config
from mssr.errors import UserError
from mssr.learner import Learner
from mssr.loop import ContinualLoop, TaskToTrain, seed_rank
from mssr.replay import ReplayPlan, StepObservation
from mssr.run_plan import RunPlan
from pipelines.console import quiet_library_warnings
from pipelines.pool import PoolRows
from pipelines.recorder import WorkerRecord
from pipelines.unstable_ray import quiet_train_report_logger


class ReadAhead:
    """A task shard's batches, read by a background thread into a queue of up to ``depth``
    batches: the training thread never waits on Ray Data (starting the streaming split takes
    seconds, and each batch a round trip to its coordinator). Started when the previous task
    starts training, the first batches are ready when training reaches them."""

    _END = object()

    def __init__(self, shard, batch_size: int, depth: int = 64):
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._read, args=(shard, batch_size), name="read-ahead", daemon=True)
        self.thread.start()

    def _read(self, shard, batch_size: int) -> None:
        try:
            for batch in shard.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
                self.queue.put(batch)
            self.queue.put(self._END)
        except BaseException as e:  # raised again in the training thread
            self.queue.put(e)

    def __iter__(self):
        while (item := self.queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass(frozen=True)
class LoopConfig:
    """What the driver hands every worker (``TorchTrainer(train_loop_config={"loop": ...})``)."""

    cfg: Config  # the validated config, as it is
    plan: RunPlan  # the resolved plan (steps, budget, ...)
    actor_name: str  # the memory actor, found by name
    recorder_name: str  # the run recorder (pipelines.recorder), found by name
    needs_update_norm: bool  # the replay clock runs on the weights' update norm
    needs_reference: bool  # each finished task's pool samples get a reference loss (mssr.strategies)
    tasks: list[TaskToTrain]
    task_rows: list  # per task, its tokenised rows in Ray's object store (pipelines.pool)
    continue_from: Optional[str] = None  # a finished run's last checkpoint, for `mssr continue`


class RayMemory:
    """The memory actor behind ``mssr.loop.MemoryService``: every call waits for its answer,
    but ``observe`` (rank 0 goes on training while the actor applies the step)."""

    def __init__(self, actor):
        self.actor = actor

    def start_task(self, task_index: int, step: int) -> None:
        ray.get(self.actor.start_task.remote(task_index, step))

    def plan(self, step: int) -> ReplayPlan:
        return ray.get(self.actor.plan.remote(step))

    def observe(self, step: int, observations: list[StepObservation]) -> None:
        self.actor.observe.remote(step, observations)

    def end_task(self, task_index: int, end_step: int) -> list[int]:
        return ray.get(self.actor.end_task.remote(task_index, end_step))

    def set_reference(self, task_index: int, rank: int, world: int, ids: list[int], losses: list[float]) -> None:
        ray.get(self.actor.set_reference.remote(task_index, rank, world, ids, losses))

    def stats(self) -> dict:
        return ray.get(self.actor.stats.remote())

    def state_dict(self, step: int) -> dict:
        return ray.get(self.actor.state_dict.remote(step))

    def load_state_dict(self, state: dict) -> None:
        ray.get(self.actor.load_state_dict.remote(state))


class RayFeed:
    """This worker's shard of each task (``train_K``), read ahead by a thread; the pool's rows
    from Ray's object store."""

    def __init__(self, per_rank_batch: int, task_rows: list, n_tasks: int):
        self.per_rank_batch, self.n_tasks = per_rank_batch, n_tasks
        self.pool = PoolRows(task_rows)
        self.ahead: dict[int, ReadAhead] = {}  # a task's first epoch, started early

    def prefetch(self, task_index: int) -> None:
        if task_index < self.n_tasks and task_index not in self.ahead:
            self.ahead[task_index] = ReadAhead(self._shard(task_index), self.per_rank_batch)

    def batches(self, task_index: int, epoch: int):
        ahead = self.ahead.pop(task_index, None)
        return ahead if epoch == 0 and ahead is not None else ReadAhead(self._shard(task_index), self.per_rank_batch)

    def rows(self, ids):
        return self.pool.get(ids)

    @staticmethod
    def _shard(task_index: int):
        return ray.train.get_dataset_shard(f"train_{task_index}")


class RaySink:
    """The run recorder (fire and forget) and Ray Train's checkpoints."""

    def __init__(self, recorder):
        self.recorder = recorder

    def start_plans(self, rank: int, from_step: int) -> None:
        self.recorder.start_plans.remote(rank, from_step)

    def plan(self, rank: int, step: int, plan: ReplayPlan) -> None:
        self.recorder.plan.remote(rank, step, plan)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.recorder.log_metrics.remote(metrics, step)

    def progress(self, progress_json: dict) -> None:
        self.recorder.progress.remote(progress_json)

    def restored(self, record) -> None:
        self.recorder.restored.remote(record)

    def flush(self) -> None:
        self.recorder.flush.remote()

    def drain(self) -> None:
        ray.get(self.recorder.flush.remote())

    def report(self, metrics: dict, name: str, checkpoint: Optional[Path]) -> None:
        folder = ray.train.Checkpoint.from_directory(checkpoint) if checkpoint is not None else None
        ray.train.report(metrics, checkpoint=folder, checkpoint_dir_name=name)


def _record_worker(rank: int, actor, recorder) -> None:
    """Where this rank runs (process id, Ray node): for failure drills and placement checks."""
    record = WorkerRecord(
        rank=rank,
        pid=os.getpid(),
        node_id=ray.get_runtime_context().get_node_id(),
        hostname=socket.gethostname(),
        actor_pid=ray.get(actor.pid.remote()) if rank == 0 else None,
    )
    recorder.worker.remote(record)


def _restore(loop: ContinualLoop, continue_from: Optional[str]) -> None:
    """This run's last checkpoint after a failure or ``--resume``; or, in a run that continues
    a finished one (``mssr continue``) and has no checkpoint of its own yet, that run's last."""
    ckpt = ray.train.get_checkpoint()
    continuing = ckpt is None and continue_from is not None
    if continuing:
        ckpt = ray.train.Checkpoint(continue_from)
    if ckpt is None:
        loop.restore(None)
        return
    with ckpt.as_directory() as d:
        loop.restore(Path(d), name=Path(ckpt.path).name, continuing=continuing)


def run_worker(config: LoopConfig) -> None:
    """Build this worker's loop from Ray Train's context and the run's actors, and run it."""
    cfg, total_steps = config.cfg, config.plan.total_steps
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(round(cfg.train.cpus_per_worker))))
    device = ray.train.torch.get_device()
    # model, optimizer, schedule, isolation, the step and evaluation (DDP-wrapped by Ray Train)
    learner = Learner(cfg, total_steps, device, wrap_model=ray.train.torch.prepare_model)
    seed_rank(cfg, rank)
    actor, recorder = ray.get_actor(config.actor_name), ray.get_actor(config.recorder_name)
    _record_worker(rank, actor, recorder)
    loop = ContinualLoop(
        cfg,
        config.tasks,
        total_steps,
        learner,
        RayMemory(actor),
        RayFeed(cfg.train.batch_size // world, config.task_rows, len(config.tasks)),
        RaySink(recorder),
        rank=rank,
        world=world,
        needs_update_norm=config.needs_update_norm,
        needs_reference=config.needs_reference,
    )
    _restore(loop, config.continue_from)
    loop.run()


def _quiet_worker() -> None:
    """Keep the console to our progress lines: Ray Train's per-report INFO lines and two
    library deprecation notices (peft calling a renamed transformers helper, Ray Data's own
    use of a deprecated option) say nothing a user can act on."""
    import transformers

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    quiet_train_report_logger()  # the "Reporting training result" line
    transformers.utils.logging.disable_progress_bar()
    quiet_library_warnings()


def train_loop(config: dict) -> None:
    """Ray Train entry point (``TorchTrainer(train_loop, train_loop_config={"loop": LoopConfig(...)})``).

    An error the user must fix (``UserError``: a model this node cannot load, a user scorer
    refusing its rows, ...) would meet every restart the same way: the worker reports it to
    the run's recorder and ends without failing, and the driver ends the run once with it."""
    _quiet_worker()
    loop = config["loop"]
    try:
        run_worker(loop)
    except UserError as e:
        rank = ray.train.get_context().get_world_rank()
        ray.get(ray.get_actor(loop.recorder_name).stopped.remote(rank, str(e)))
