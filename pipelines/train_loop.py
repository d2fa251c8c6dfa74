"""The per-worker training loop run by Ray Train (one process per worker, DDP between them).

For each task: stream the worker's shard of the task's train split; at every step ask the
memory actor for the step's plan (the same for every rank); run this rank's share of the
plan's probe, if any (a no-grad forward pass: the loss and accuracy triggers' evaluation);
add this rank's share of the replayed samples to the batch, compute per-sample losses from
the one forward pass, step; rank 0 gathers every rank's losses (one collective) and sends
them to the actor in one message without waiting. At the task boundary: the task's
reservoir joins the replay pool, every task's test split is evaluated (split across
workers), one accuracy-matrix row is added, and a checkpoint is reported; a checkpoint is
also reported every ``train.checkpoint_every`` steps inside a task.

After a failure Ray Train restarts every worker with the last checkpoint: the model,
optimizer, LR schedule, RNG states, accuracy matrix and counters are restored, the memory
actor is reset to the checkpointed state, and the current task's data is skipped up to the
checkpointed position (the streaming split repeats the same order), so the run continues
as if nothing had happened. ``restores.jsonl`` in the run directory records each restore.

Workers write no file: the replay pool's rows come from Ray's object store
(``pipelines.pool``), and what they record (plans, restores, progress, step metrics) goes to
the run recorder (``pipelines.recorder``), which writes on the driver's node; the final
accuracy matrix reaches the driver in Ray Train's last checkpoint.

The driver (``pipelines.run``) builds the ``TorchTrainer`` that calls ``train_loop``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from mssr import provenance
from mssr.config import Config
from mssr.distributed import all_gather_objects, all_sum, barrier, rng_state, set_rng_state
from mssr.errors import UserError
from mssr.learner import Learner
from mssr.metrics import all_metrics, loss_metrics, tasks_to_score
from mssr.replay import StepObservation, reference_subset
from mssr.step_gather import gather_step
from mssr.tasks import Example
from pipelines.checkpoint import Progress, load_checkpoint, memory_digest, save_checkpoint
from pipelines.console import quiet_library_warnings
from pipelines.pool import PoolRows
from pipelines.recorder import RestoreRecord, WorkerRecord
from pipelines.unstable_ray import quiet_train_report_logger


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 60}m{s % 60:02d}s"


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


@dataclass
class LogWindow:
    """What this rank trained since the last progress line: summed over the ranks when logged."""

    loss_sum: float = 0.0
    steps: int = 0
    new_tokens: int = 0
    replay_tokens: int = 0
    replayed: int = 0  # samples, over all ranks (the plan is the same on every rank)
    events: int = 0
    probe_tokens: float = 0.0
    probe_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def add_step(self, loss: float, new_tokens: int, replay_tokens: int, replayed: int) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.new_tokens += new_tokens
        self.replay_tokens += replay_tokens
        self.replayed += replayed
        self.events += int(replayed > 0)

    def summed(self) -> list[float]:
        """The per-rank quantities, in the order ``all_sum`` reduces them."""
        return [self.loss_sum, self.steps, self.new_tokens, self.replay_tokens, self.probe_tokens, self.probe_seconds]


@dataclass(frozen=True)
class TaskToTrain:
    """A task as the workers see it: its name, scorer, steps, and test rows (prompt, answer)."""

    name: str
    scorer: str
    steps: int
    test: list[tuple[str, str]]


@dataclass(frozen=True)
class LoopConfig:
    """What the driver hands every worker (``TorchTrainer(train_loop_config={"loop": ...})``)."""

    cfg: dict  # the validated config, as JSON (validated again on the worker)
    total_steps: int
    actor_name: str  # the memory actor, found by name
    recorder_name: str  # the run recorder (pipelines.recorder), found by name
    needs_update_norm: bool  # the replay clock runs on the weights' update norm
    needs_reference: bool  # each finished task's pool samples get a reference loss (mssr.strategies)
    tasks: list[TaskToTrain]
    task_rows: list  # per task, its tokenised rows in Ray's object store (pipelines.pool)
    continue_from: Optional[str] = None  # a finished run's last checkpoint, for `mssr continue`


class Worker:
    """State of one training worker; ``run()`` trains the whole stream."""

    def __init__(self, config: LoopConfig):
        self.cfg = Config.model_validate(config.cfg)
        self.tasks = config.tasks
        self.total_steps = config.total_steps
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        torch.set_num_threads(max(1, int(round(self.cfg.train.cpus_per_worker))))
        self.device = ray.train.torch.get_device()
        # model, optimizer, schedule, isolation, the step and evaluation (DDP-wrapped by Ray Train)
        self.learner = Learner(self.cfg, self.total_steps, self.device, wrap_model=ray.train.torch.prepare_model)
        torch.manual_seed(self.cfg.seed * 1000 + self.rank)
        self.actor = ray.get_actor(config.actor_name)
        self.recorder = ray.get_actor(config.recorder_name)
        self._record_worker()
        self.per_rank_batch = self.cfg.train.batch_size // self.world
        # where and how this run trains (rank 0, where it trains; mssr.provenance): the floats
        # depend on the processor and the precision, so paired runs must share them
        self.provenance = self._provenance() if self.rank == 0 else {}
        # where the run stands and what it measured, restored from the checkpoint after a failure
        self.progress = Progress(
            task_names=[t.name for t in self.tasks],
            weights_dtype=self.learner.weights_dtype,
            autocast=self.learner.precision,
            eval_autocast=self.learner.eval_precision,
            provenance=self.provenance,
        )
        self.window = LogWindow()  # since the last progress line
        self.needs_update_norm = config.needs_update_norm and self.rank == 0
        self.needs_reference = config.needs_reference
        self.pool = PoolRows(config.task_rows)
        self.continue_from = config.continue_from
        self.unscored: list[int] = []  # tasks a continuation added: not yet scored on the loaded model
        self.read_ahead: dict[int, ReadAhead] = {}  # the next task's first epoch, started early

    # -- checkpoints -----------------------------------------------------------------
    def _provenance(self) -> dict:
        """This worker's commit, processor, threads, versions and the precisions the learner
        resolved (``mssr.provenance.collect``), as a dict for the progress."""
        learner = self.learner
        train, evaluation = provenance.precisions(
            learner.weights_dtype, learner.precision, learner.eval_precision, self.cfg.model.finetune
        )
        return provenance.to_dict(provenance.collect(self.device, train, evaluation))

    def _record_worker(self) -> None:
        """Where this rank runs (process id, Ray node): for failure drills and placement checks."""
        record = WorkerRecord(
            rank=self.rank,
            pid=os.getpid(),
            node_id=ray.get_runtime_context().get_node_id(),
            hostname=socket.gethostname(),
            actor_pid=ray.get(self.actor.pid.remote()) if self.rank == 0 else None,
        )
        self.recorder.worker.remote(record)

    def restore(self) -> None:
        """Load the last checkpoint of this run after a failure or ``--resume``; or, in a run that
        continues a finished one (``mssr continue``) and has no checkpoint of its own yet, that
        run's last checkpoint, its matrices widened by the new tasks' columns."""
        ckpt = ray.train.get_checkpoint()
        continuing = ckpt is None and self.continue_from is not None
        if continuing:
            ckpt = ray.train.Checkpoint(self.continue_from)
        if ckpt is None:
            self.recorder.start_plans.remote(self.rank, 0)
            return
        with ckpt.as_directory() as d:
            trainable, trainer_state, actor_state, progress = load_checkpoint(Path(d))
        self.learner.load_state_dict(trainable, trainer_state)
        set_rng_state(trainer_state["torch_rng"][self.rank % len(trainer_state["torch_rng"])], self.device)
        if continuing:
            before = len(progress.task_names)
            progress = progress.with_tasks([t.name for t in self.tasks]).without_costs()
            self.unscored = list(range(before, len(self.tasks)))
        # this part of the run is recorded as the run's provenance; an earlier part that ran
        # elsewhere (another machine, commit or precision) is kept beside it
        earlier = [*progress.earlier_provenance]
        if progress.provenance and progress.provenance != self.provenance and self.rank == 0:
            earlier.append(progress.provenance)
        self.progress = dataclasses.replace(progress, provenance=self.provenance, earlier_provenance=earlier)
        if self.rank == 0:  # the actor to the checkpoint's state (it may have run ahead, or been restarted empty)
            ray.get(self.actor.load_state_dict.remote(actor_state))
        if self.rank == 0 and not continuing:  # a restore: recorded, with the memory state's digests
            restored = ray.get(self.actor.state_dict.remote(self.progress.step))
            record = RestoreRecord(
                step=self.progress.step,
                next_task=self.progress.next_task,
                task_step=self.progress.task_step,
                checkpoint=Path(ckpt.path).name,
                memory_digest=memory_digest(restored["planner"]["memory"]),
                checkpoint_memory_digest=memory_digest(actor_state["planner"]["memory"]),
            )
            self.recorder.restored.remote(record)
        barrier()
        self.recorder.start_plans.remote(self.rank, self.progress.step)
        where = f"task {self.progress.next_task + 1}" + (
            f", batch {self.progress.task_step + 1}" if self.progress.task_step else ""
        )
        if continuing:
            self._say(
                f"continuing the finished run from its checkpoint after task {before}: {where}, "
                f"step {self.progress.step}"
            )
        else:
            self._say(f"resumed from checkpoint {Path(ckpt.path).name}: {where}, step {self.progress.step}")

    def checkpoint_and_report(self, next_task: int, task_step: int, metrics: dict, name: str) -> None:
        """Report a checkpoint (all ranks call this at the same step). ``next_task``/``task_step``:
        where training continues from it."""
        rng_states = all_gather_objects(rng_state(self.device))
        progress = dataclasses.replace(
            self.progress, next_task=next_task, task_step=task_step, isolation=self.learner.isolation_summary()
        )
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                actor_state = ray.get(self.actor.state_dict.remote(self.progress.step))
                trainable, trainer_state = self.learner.state_dict()
                save_checkpoint(Path(tmp), trainable, {**trainer_state, "torch_rng": rng_states}, actor_state, progress)
                self.recorder.progress.remote(progress.to_json())
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self) -> None:
        """Score the test rows of the tasks this row of the matrices needs (split across ranks;
        ``mssr.metrics.tasks_to_score``) and add the row to the accuracy and loss matrices, keeping every test
        row's score and loss; cells left unscored are NaN with no rows."""
        started = time.perf_counter()
        wanted = tasks_to_score(
            len(self.progress.matrix), len(self.tasks), self.cfg.eval.future_tasks, self.cfg.eval.seen_tasks
        )
        scored = dict(zip(wanted, self._score(wanted)))
        columns = [scored.get(j, ([], [])) for j in range(len(self.tasks))]
        self.progress.row_scores.append([scores for scores, _ in columns])
        self.progress.row_losses.append([losses for _, losses in columns])
        self.progress.matrix.append([_mean_or_nan(scores) for scores, _ in columns])
        self.progress.loss_matrix.append([_mean_or_nan(losses) for _, losses in columns])
        self.progress.pipeline["eval_wall"] += time.perf_counter() - started

    def score_unscored(self) -> None:
        """A continuation's new tasks, scored on the model as the finished run left it: their
        cells of the last row (the row before they are trained)."""
        started = time.perf_counter()
        for j, (scores, losses) in zip(self.unscored, self._score(self.unscored)):
            self.progress.row_scores[-1][j], self.progress.row_losses[-1][j] = scores, losses
            self.progress.matrix[-1][j] = _mean_or_nan(scores)
            self.progress.loss_matrix[-1][j] = _mean_or_nan(losses)
        self.unscored = []
        self.progress.pipeline["eval_wall"] += time.perf_counter() - started

    def _score(self, task_indices) -> list[tuple[list[float], list[float]]]:
        """Every test row's score and answer loss of the tasks ``task_indices`` (one collective;
        none when there is nothing to score, as every rank asks for the same tasks)."""
        if not task_indices:
            return []
        packed = []  # per task: scores and losses at their row positions (0 where another rank scored), tokens
        for k in task_indices:
            t = self.tasks[k]
            n = len(t.test)
            mine = np.arange(self.rank, n, self.world)
            result = self.learner.evaluate([Example(*t.test[i]) for i in mine], t.scorer)
            scores, losses = np.zeros(n), np.zeros(n)
            scores[mine], losses[mine] = result.scores, result.losses
            packed.append(np.concatenate([scores, losses, [result.tokens]]))
        totals = np.asarray(all_sum(np.concatenate(packed)))
        scored, start = [], 0
        for k in task_indices:
            n = len(self.tasks[k].test)
            scored.append((totals[start : start + n].tolist(), totals[start + n : start + 2 * n].tolist()))
            self.progress.tokens["eval"] += float(totals[start + 2 * n])
            start += 2 * n + 1
        return scored

    # -- training --------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    def probe(self, ids: list[int]) -> tuple[list[float], list[bool]]:
        """Loss and greedy exact match of pool samples (this rank's share of the plan's probe)."""
        result = self.learner.probe(self.pool.get(ids))
        self.window.probe_tokens += result.tokens  # summed over ranks in _log_window
        self.window.probe_seconds += result.seconds
        return result.losses, result.correct

    def train_step(self, batch: dict) -> tuple[float, int, int, int]:
        """One optimizer step; returns mean loss, new and replay tokens (this rank), replayed samples (all ranks)."""
        t = time.perf_counter()
        plan = ray.get(self.actor.plan.remote(self.progress.step))
        self.progress.pipeline["plan_wait"] += time.perf_counter() - t
        self.recorder.plan.remote(self.rank, self.progress.step, plan)
        mine, probe_ids = plan.share(self.rank, self.world)
        probe_losses, probe_correct = self.probe(probe_ids)
        new_ids = [int(i) for i in batch["sample_id"]]
        new_rows = [(list(r), int(p)) for r, p in zip(batch["input_ids"], batch["prompt_len"])]
        # the replay clock's "model time" needs how far the step moved the weights (rank 0 measures)
        result = self.learner.train_step(new_rows, self.pool.get(mine), update_norm=self.needs_update_norm)
        self._log_isolation(result.isolation_metrics, at_step=self.progress.step + 1)
        values, n_new = result.losses, len(new_ids)
        observed = gather_step(
            StepObservation(
                new_ids,
                values[:n_new],
                mine,
                values[n_new:],
                probe_ids,
                probe_losses,
                probe_correct,
                result.update_norm,
            ),
            plan,
            self.rank,
            self.world,
            self.per_rank_batch,
        )
        if observed is not None:  # rank 0: one message with every rank's losses, not waited for
            self.actor.observe.remote(self.progress.step, observed)
        return float(values.mean()), result.new_tokens, result.replay_tokens, len(plan.replay)

    def train_task(self, k: int) -> None:
        task = self.tasks[k]
        skip, self.progress.task_step = self.progress.task_step, 0  # batches already trained before a restore
        ray.get(
            self.actor.start_task.remote(k, self.progress.step - skip)
        )  # idempotent: a restored actor knows it started
        if skip == 0:  # after a mid-task restore the checkpoint holds the task's isolation state
            self._log_isolation(self.learner.start_task(k), at_step=self.progress.step)
        shard = ray.train.get_dataset_shard(f"train_{k}")
        ahead = self.read_ahead.pop(k, None)
        self._read_ahead(k + 1)  # the next task's stream starts now: it takes seconds to start
        self.window = LogWindow()
        task_step = 0
        every = self.cfg.train.checkpoint_every
        started = waiting = time.perf_counter()
        for epoch in range(self.cfg.train.epochs_per_task):
            batches = ahead if epoch == 0 and ahead is not None else ReadAhead(shard, self.per_rank_batch)
            for batch in batches:
                if task_step < skip:  # the same order as before the failure: skip what was trained
                    task_step += 1
                    continue
                t0 = time.perf_counter()
                self.progress.pipeline["data_wait"] += t0 - waiting
                loss, new_tok, replay_tok, replayed = self.train_step(batch)
                self.progress.step_seconds.append(round(time.perf_counter() - t0, 4))
                self.progress.train_seconds += self.progress.step_seconds[-1]
                self.window.add_step(loss, new_tok, replay_tok, replayed)
                self.progress.step += 1
                task_step += 1
                if self.progress.step % self.cfg.train.log_every == 0:
                    self._log_window(k, task, task_step)
                if every and self.progress.step % every == 0 and task_step < task.steps:
                    if self.window.steps:
                        self._log_window(k, task, task_step)
                    self.progress.pipeline["train_wall"] += time.perf_counter() - started
                    self.checkpoint_and_report(
                        k,
                        task_step,
                        {"task_index": k, "step": self.progress.step},
                        name=f"step_{self.progress.step:06d}",
                    )
                    started = time.perf_counter()
                waiting = time.perf_counter()
        if self.window.steps:
            self._log_window(k, task, task_step)
        self.progress.pipeline["train_wall"] += time.perf_counter() - started

    def _log_isolation(self, metrics, at_step: int) -> None:
        """MLflow metrics of a mask change (isolated fraction, overlap with the previous mask, state
        size), at the number of steps whose gradients it has seen."""
        if not metrics:
            return
        if "isolation/mask_overlap" in metrics:
            self.progress.mask_overlaps.append(round(metrics["isolation/mask_overlap"], 4))
        if self.rank == 0:
            self.recorder.log_metrics.remote(metrics, at_step)

    def _log_window(self, k: int, task: TaskToTrain, task_step: int) -> None:
        """The progress line and the step metrics of the window; a collective (every rank calls it)."""
        w, self.window = self.window, LogWindow()
        loss_sum, n, new, replay, probe_tok, probe_s = all_sum(w.summed())
        elapsed = time.perf_counter() - w.started
        self.progress.tokens["train_new"] += new
        self.progress.tokens["train_replay"] += replay
        self.progress.tokens["probe"] += probe_tok
        self.progress.probe_seconds += probe_s
        tps = (new + replay) / max(elapsed, 1e-9)
        loss = loss_sum / max(n, 1)
        if self.rank == 0:
            eta = self.progress.train_seconds / max(1, self.progress.step) * (self.total_steps - self.progress.step)
            print(
                f"[task {k + 1}/{len(self.tasks)} {task.name}] step {task_step}/{task.steps} "
                f"(total {self.progress.step}/{self.total_steps})  loss {loss:.3f}  tok/s {tps:.0f}  "
                f"replayed {w.replayed} samples  train ETA {_fmt_seconds(eta)}",
                flush=True,
            )
            self.recorder.log_metrics.remote(
                {
                    "train/loss": loss,
                    "train/tokens_per_s": tps,
                    "train/new_tokens": new,
                    "train/replay_tokens": replay,
                    "train/replay_samples": w.replayed,
                    "train/replay_events": w.events,
                    "train/probe_tokens": probe_tok,
                },
                self.progress.step,
            )

    def end_task(self, k: int) -> None:
        """The task's reservoir joins the replay pool (in the memory actor: its rows need no move);
        where the strategy reads them, each rank measures the reference loss of its share of
        ``replay.reference_samples`` of the new pool samples (a no-grad pass, counted as probe
        cost) and hands it to the actor."""
        ids = ray.get(self.actor.end_task.remote(k, self.progress.step))
        if not self.needs_reference:
            return
        measured = reference_subset(ids, self.cfg.replay.reference_samples, self.cfg.seed, k)
        mine = measured[self.rank :: self.world]
        result = self.learner.probe(self.pool.get(mine))
        ray.get(self.actor.set_reference.remote(k, self.rank, self.world, mine, result.losses))
        seconds, tokens = all_sum([result.seconds, result.tokens])
        self.progress.probe_seconds += seconds
        self.progress.reference_seconds += seconds
        self.progress.tokens["probe"] += tokens

    def _read_ahead(self, k: int) -> None:
        if k < len(self.tasks):
            self.read_ahead[k] = ReadAhead(ray.train.get_dataset_shard(f"train_{k}"), self.per_rank_batch)

    def run(self) -> None:
        eval_precision = self.learner.eval_precision
        self._say(
            f"matmul precision: base weights {self.learner.weights_dtype} (model.dtype={self.cfg.model.dtype}), "
            f"training {'bf16 autocast' if self.learner.precision == 'bf16' else 'no autocast'} "
            f"(train.autocast={self.cfg.train.autocast} on {self.device.type}), evaluation "
            f"{'bf16 autocast' if eval_precision == 'bf16' else 'no autocast'} "
            f"(eval.autocast={self.cfg.eval.autocast}); "
            f"evaluation: {self.cfg.eval.mode} (exact-match tasks; other scorers generate)"
        )
        self.restore()
        self._read_ahead(self.progress.next_task)
        if not self.progress.matrix:
            self._say("evaluating the model before training (row 0 of the accuracy matrix)")
            self.evaluate()
        if self.unscored:
            names = ", ".join(self.tasks[j].name for j in self.unscored)
            self._say(f"scoring the model as the finished run left it on the new tasks: {names}")
            self.score_unscored()
        for k in range(self.progress.next_task, len(self.tasks)):
            self._say(f"== task {k + 1}/{len(self.tasks)}: {self.tasks[k].name} ({self.tasks[k].steps} steps)")
            self.train_task(k)
            self.end_task(k)
            t = time.perf_counter()
            self.evaluate()
            row, loss_row = self.progress.matrix[-1], self.progress.loss_matrix[-1]
            stats = ray.get(self.actor.stats.remote())
            if self.rank == 0:
                names = [t_.name for t_ in self.tasks]
                scores = "  ".join(f"{n}={v:.3f}" for n, v in zip(names, row) if not np.isnan(v))
                print(
                    f"   after task {k + 1}: {scores}  (eval {time.perf_counter() - t:.0f}s, "
                    f"pool {stats['pool_size']}, replayed {stats['replay_samples']})",
                    flush=True,
                )
                print(
                    "   answer loss: " + "  ".join(f"{n}={v:.3f}" for n, v in zip(names, loss_row) if not np.isnan(v)),
                    flush=True,
                )
                self.recorder.log_metrics.remote(
                    {
                        **{f"score/{n}": v for n, v in zip(names, row) if not np.isnan(v)},
                        **{f"loss/{n}": v for n, v in zip(names, loss_row) if not np.isnan(v)},
                        # the mean over the tasks trained so far that this row scored
                        "score/mean_seen": float(np.nanmean(row[: k + 1])),
                        "loss/mean_seen": float(np.nanmean(loss_row[: k + 1])),
                        "replay/samples": stats["replay_samples"],
                        "replay/events": stats["replay_events"],
                        "replay/pool_size": stats["pool_size"],
                    },
                    k + 1,
                )
                self.recorder.flush.remote()
            # the metrics of the tasks seen so far (the final metrics after the last task): what
            # a sweep's early-stopping scheduler compares, with tasks_done as its time
            seen = [r[: k + 1] for r in self.progress.matrix[: k + 2]]
            seen_loss = [r[: k + 1] for r in self.progress.loss_matrix[: k + 2]]
            self.checkpoint_and_report(
                k + 1,
                0,
                {"task_index": k, "tasks_done": k + 1, **all_metrics(seen), **loss_metrics(seen_loss)},
                name=f"task_{k:02d}",
            )
        ray.get(self.recorder.flush.remote())  # every record this rank sent has been written


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


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
        Worker(loop).run()
    except UserError as e:
        rank = ray.train.get_context().get_world_rank()
        ray.get(ray.get_actor(loop.recorder_name).stopped.remote(rank, str(e)))
