"""The continual loop: train a stream of tasks one after another, replaying from the pool,
scoring every task after each one. No Ray here: the loop runs wherever its three services do.

    loop = ContinualLoop(cfg, tasks, total_steps, learner, memory, feed, sink, rank=0, world=1)
    loop.restore(None)          # or a checkpoint folder, after a failure or to continue a run
    loop.run()                  # loop.progress: the matrices, counters and times

At every step: ask the memory for the step's plan (the same on every rank); run this rank's
share of the plan's probe, if any (a no-grad forward pass); add this rank's share of the
replayed samples to the batch, compute per-sample losses from the one forward pass, step;
rank 0 gathers every rank's losses (one collective) and hands them to the memory. At each
task boundary: the task's reservoir joins the pool, the reference pass where the strategy
reads one, every task's test split is scored (split across ranks), one row is added to the
matrices, and a checkpoint is made; a checkpoint is also made every
``train.checkpoint_every`` steps inside a task.

The services:

- ``MemoryService``: the replay planner (``mssr.memory_service.LocalMemory`` in this process,
  or the Ray actor every worker shares: ``pipelines.train_loop``);
- ``BatchFeed``: this rank's batches of each task, and the pool's rows by sample id;
- ``RunSink``: where records and checkpoints go (the run recorder and Ray Train's checkpoints
  on Ray; nothing, for the GPU check).

The process group, when there is one, is ``torch.distributed``'s (``mssr.distributed``);
without one every collective is the identity.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol, Sequence

import numpy as np
import torch

from mssr import provenance
from mssr.checkpoint import Progress, RestoreRecord, load_checkpoint, memory_digest, save_checkpoint
from mssr.config import Config
from mssr.distributed import all_gather_objects, all_sum, barrier, rng_state, set_rng_state
from mssr.learner import Learner
from mssr.metrics import all_metrics, loss_metrics, tasks_to_score
from mssr.replay import ReplayPlan, StepObservation, reference_subset
from mssr.step_gather import gather_step
from mssr.tasks import Example


class MemoryService(Protocol):
    """The replay planner as every rank sees it (``mssr.memory_service.LocalMemory``'s methods)."""

    def start_task(self, task_index: int, step: int) -> None: ...
    def plan(self, step: int) -> ReplayPlan: ...
    def observe(self, step: int, observations: list[StepObservation]) -> None: ...  # rank 0; may return at once
    def end_task(self, task_index: int, end_step: int) -> list[int]: ...
    def set_reference(self, task_index: int, rank: int, world: int, ids: list[int], losses: list[float]) -> None: ...
    def stats(self) -> dict: ...
    def state_dict(self, step: int) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class BatchFeed(Protocol):
    """This rank's batches (``{"sample_id", "input_ids", "prompt_len"}`` arrays), in the same
    order every epoch and after a restore; and any finished task's rows by sample id."""

    def batches(self, task_index: int, epoch: int) -> Iterable[dict]: ...
    def prefetch(self, task_index: int) -> None: ...  # may start reading a task early
    def rows(self, ids: Sequence[int]) -> list[tuple[list[int], int]]: ...  # (input_ids, prompt_len)


class RunSink(Protocol):
    """Where the loop's records go; none of these calls waits, but ``drain``."""

    def start_plans(self, rank: int, from_step: int) -> None: ...
    def plan(self, rank: int, step: int, plan: ReplayPlan) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def progress(self, progress_json: dict) -> None: ...
    def restored(self, record: RestoreRecord) -> None: ...
    def flush(self) -> None: ...
    def drain(self) -> None: ...  # until every record sent so far is written
    def report(self, metrics: dict, name: str, checkpoint: Optional[Path]) -> None: ...  # every rank; rank 0 a folder


class NullSink:
    """Records nothing and keeps no checkpoint (the GPU check)."""

    def start_plans(self, rank, from_step):
        pass

    def plan(self, rank, step, plan):
        pass

    def log_metrics(self, metrics, step):
        pass

    def progress(self, progress_json):
        pass

    def restored(self, record):
        pass

    def flush(self):
        pass

    def drain(self):
        pass

    def report(self, metrics, name, checkpoint):
        pass


class ListFeed:
    """Each task's tokenised training rows, ``(sample_id, input_ids, prompt_len)`` in training
    order, ``batch`` at a time; any task's rows by sample id. A feed without Ray, for one process."""

    def __init__(self, task_rows: list[list[tuple[int, list[int], int]]], batch: int):
        self.task_rows, self.batch = task_rows, batch
        self.by_id = {sid: (ids, plen) for rows in task_rows for sid, ids, plen in rows}

    def prefetch(self, task_index: int) -> None:
        pass

    def batches(self, task_index: int, epoch: int) -> Iterable[dict]:
        rows = self.task_rows[task_index]
        for start in range(0, len(rows), self.batch):
            chunk = rows[start : start + self.batch]
            yield {
                "sample_id": [r[0] for r in chunk],
                "input_ids": [r[1] for r in chunk],
                "prompt_len": [r[2] for r in chunk],
            }

    def rows(self, ids: Sequence[int]) -> list[tuple[list[int], int]]:
        return [self.by_id[int(i)] for i in ids]


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 60}m{s % 60:02d}s"


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


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
    """A task as the loop sees it: its name, scorer, steps, and test rows (prompt, answer)."""

    name: str
    scorer: str
    steps: int
    test: list[tuple[str, str]]


@dataclass(frozen=True)
class StepDone:
    """One finished step, for an ``on_step`` hook (the GPU check times and checks them)."""

    task_index: int
    step: int
    loss: float
    seconds: float
    new_tokens: int
    replay_tokens: int
    replayed: int


class ContinualLoop:
    """One rank's continual loop; ``run()`` trains the stream from where ``restore`` left it."""

    def __init__(
        self,
        cfg: Config,
        tasks: list[TaskToTrain],
        total_steps: int,
        learner: Learner,
        memory: MemoryService,
        feed: BatchFeed,
        sink: RunSink,
        rank: int = 0,
        world: int = 1,
        needs_update_norm: bool = False,
        needs_reference: bool = False,
        evaluate: bool = True,
        on_step: Optional[Callable[[StepDone], None]] = None,
    ):
        self.cfg, self.tasks, self.total_steps = cfg, tasks, total_steps
        self.learner, self.memory, self.feed, self.sink = learner, memory, feed, sink
        self.rank, self.world = rank, world
        self.device = learner.device
        self.per_rank_batch = cfg.train.batch_size // world
        # where and how this run trains (rank 0, where it trains; mssr.provenance): the floats
        # depend on the processor and the precision, so paired runs must share them
        self.provenance = self._provenance() if rank == 0 else {}
        # where the run stands and what it measured, restored from the checkpoint after a failure
        self.progress = Progress(
            task_names=[t.name for t in tasks],
            weights_dtype=learner.weights_dtype,
            autocast=learner.precision,
            eval_autocast=learner.eval_precision,
            provenance=self.provenance,
        )
        self.window = LogWindow()  # since the last progress line
        self.needs_update_norm = needs_update_norm and rank == 0
        self.needs_reference = needs_reference
        self.scores_tasks = evaluate  # False: no scoring, no matrices, no task-boundary checkpoints (the GPU check)
        self.on_step = on_step
        self.unscored: list[int] = []  # tasks a continuation added: not yet scored on the loaded model

    def _provenance(self) -> dict:
        """This process's commit, processor, threads, versions and the precisions the learner
        resolved (``mssr.provenance.collect``), as a dict for the progress."""
        learner = self.learner
        train, evaluation = provenance.precisions(
            learner.weights_dtype, learner.precision, learner.eval_precision, self.cfg.model.finetune
        )
        return provenance.to_dict(provenance.collect(self.device, train, evaluation))

    def _say(self, text: str) -> None:
        if self.rank == 0:
            print(text, flush=True)

    # -- checkpoints -----------------------------------------------------------------
    def restore(self, checkpoint: Optional[Path], name: str = "", continuing: bool = False) -> None:
        """Load a checkpoint folder (after a failure or ``--resume``: this run's last; with
        ``continuing``: a finished run's last, its matrices widened by the new tasks' columns),
        or start fresh (None)."""
        if checkpoint is None:
            self.sink.start_plans(self.rank, 0)
            return
        trainable, trainer_state, memory_state, progress = load_checkpoint(checkpoint)
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
        if self.rank == 0:  # the memory to the checkpoint's state (it may have run ahead, or been restarted empty)
            self.memory.load_state_dict(memory_state)
        if self.rank == 0 and not continuing:  # a restore: recorded, with the memory state's digests
            restored = self.memory.state_dict(self.progress.step)
            record = RestoreRecord(
                step=self.progress.step,
                next_task=self.progress.next_task,
                task_step=self.progress.task_step,
                checkpoint=name,
                memory_digest=memory_digest(restored["planner"]["memory"]),
                checkpoint_memory_digest=memory_digest(memory_state["planner"]["memory"]),
            )
            self.sink.restored(record)
        barrier()
        self.sink.start_plans(self.rank, self.progress.step)
        where = f"task {self.progress.next_task + 1}" + (
            f", batch {self.progress.task_step + 1}" if self.progress.task_step else ""
        )
        if continuing:
            self._say(
                f"continuing the finished run from its checkpoint after task {before}: {where}, "
                f"step {self.progress.step}"
            )
        else:
            self._say(f"resumed from checkpoint {name}: {where}, step {self.progress.step}")

    def checkpoint(self, next_task: int, task_step: int, metrics: dict, name: str) -> None:
        """Make a checkpoint (all ranks call this at the same step). ``next_task``/``task_step``:
        where training continues from it."""
        rng_states = all_gather_objects(rng_state(self.device))
        progress = dataclasses.replace(
            self.progress, next_task=next_task, task_step=task_step, isolation=self.learner.isolation_summary()
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = None
            if self.rank == 0:
                memory_state = self.memory.state_dict(self.progress.step)
                trainable, trainer_state = self.learner.state_dict()
                save_checkpoint(
                    Path(tmp), trainable, {**trainer_state, "torch_rng": rng_states}, memory_state, progress
                )
                self.sink.progress(progress.to_json())
                folder = Path(tmp)
            self.sink.report(metrics, name, folder)

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
    def probe(self, ids: list[int]) -> tuple[list[float], list[bool]]:
        """Loss and greedy exact match of pool samples (this rank's share of the plan's probe)."""
        result = self.learner.probe(self.feed.rows(ids))
        self.window.probe_tokens += result.tokens  # summed over ranks in _log_window
        self.window.probe_seconds += result.seconds
        return result.losses, result.correct

    def train_step(self, batch: dict) -> tuple[float, int, int, int]:
        """One optimizer step; returns mean loss, new and replay tokens (this rank), replayed samples (all ranks)."""
        t = time.perf_counter()
        plan = self.memory.plan(self.progress.step)
        self.progress.pipeline["plan_wait"] += time.perf_counter() - t
        self.sink.plan(self.rank, self.progress.step, plan)
        mine, probe_ids = plan.share(self.rank, self.world)
        probe_losses, probe_correct = self.probe(probe_ids)
        new_ids = [int(i) for i in batch["sample_id"]]
        new_rows = [(list(r), int(p)) for r, p in zip(batch["input_ids"], batch["prompt_len"])]
        # the replay clock's "model time" needs how far the step moved the weights (rank 0 measures)
        result = self.learner.train_step(new_rows, self.feed.rows(mine), update_norm=self.needs_update_norm)
        self._log_isolation(result.isolation_metrics, at_step=self.progress.step + 1)
        values, n_new = result.losses, len(new_ids)
        observation = StepObservation(
            new_ids, values[:n_new], mine, values[n_new:], probe_ids, probe_losses, probe_correct, result.update_norm
        )
        observed = gather_step(observation, plan, self.rank, self.world, self.per_rank_batch)
        if observed is not None:  # rank 0: one message with every rank's losses
            self.memory.observe(self.progress.step, observed)
        return float(values.mean()), result.new_tokens, result.replay_tokens, len(plan.replay)

    def train_task(self, k: int) -> None:
        task = self.tasks[k]
        skip, self.progress.task_step = self.progress.task_step, 0  # batches already trained before a restore
        self.memory.start_task(k, self.progress.step - skip)  # idempotent: a restored memory knows it started
        if skip == 0:  # after a mid-task restore the checkpoint holds the task's isolation state
            self._log_isolation(self.learner.start_task(k), at_step=self.progress.step)
        self.feed.prefetch(k + 1)  # the next task's stream may take seconds to start
        self.window = LogWindow()
        task_step = 0
        started = waiting = time.perf_counter()
        for epoch in range(self.cfg.train.epochs_per_task):
            for batch in self.feed.batches(k, epoch):
                if task_step < skip:  # the same order as before the failure: skip what was trained
                    task_step += 1
                    continue
                t0 = time.perf_counter()
                self.progress.pipeline["data_wait"] += t0 - waiting
                self._one_step(k, batch, t0)
                task_step += 1
                if self.progress.step % self.cfg.train.log_every == 0:
                    self._log_window(k, task, task_step)
                if self._checkpoint_due(task, task_step):
                    self.progress.pipeline["train_wall"] += time.perf_counter() - started
                    self._checkpoint_within(k, task, task_step)
                    started = time.perf_counter()
                waiting = time.perf_counter()
        if self.window.steps:
            self._log_window(k, task, task_step)
        self.progress.pipeline["train_wall"] += time.perf_counter() - started

    def _one_step(self, k: int, batch: dict, started: float) -> None:
        probed_before = self.window.probe_seconds
        loss, new_tok, replay_tok, replayed = self.train_step(batch)
        seconds = time.perf_counter() - started
        self.progress.step_seconds.append(round(seconds, 4))
        # training time leaves out the step's probes (counted in probe_seconds): the overhead
        # of a probing strategy is probe time against training time, not against both
        self.progress.train_seconds += round(seconds - (self.window.probe_seconds - probed_before), 4)
        self.window.add_step(loss, new_tok, replay_tok, replayed)
        self.progress.step += 1
        if self.on_step is not None:
            self.on_step(StepDone(k, self.progress.step, loss, seconds, new_tok, replay_tok, replayed))

    def _checkpoint_due(self, task: TaskToTrain, task_step: int) -> bool:
        every = self.cfg.train.checkpoint_every
        return bool(every) and self.progress.step % every == 0 and task_step < task.steps

    def _checkpoint_within(self, k: int, task: TaskToTrain, task_step: int) -> None:
        """A mid-task checkpoint, after the progress line of the steps since the last one."""
        if self.window.steps:
            self._log_window(k, task, task_step)
        name = f"step_{self.progress.step:06d}"
        self.checkpoint(k, task_step, {"task_index": k, "step": self.progress.step}, name=name)

    def _log_isolation(self, metrics, at_step: int) -> None:
        """MLflow metrics of a mask change (isolated fraction, overlap with the previous mask, state
        size), at the number of steps whose gradients it has seen."""
        if not metrics:
            return
        if "isolation/mask_overlap" in metrics:
            self.progress.mask_overlaps.append(round(metrics["isolation/mask_overlap"], 4))
        if self.rank == 0:
            self.sink.log_metrics(metrics, at_step)

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
        if self.rank != 0:
            return
        eta = self.progress.train_seconds / max(1, self.progress.step) * (self.total_steps - self.progress.step)
        print(
            f"[task {k + 1}/{len(self.tasks)} {task.name}] step {task_step}/{task.steps} "
            f"(total {self.progress.step}/{self.total_steps})  loss {loss:.3f}  tok/s {tps:.0f}  "
            f"replayed {w.replayed} samples  train ETA {_fmt_seconds(eta)}",
            flush=True,
        )
        metrics = {
            "train/loss": loss,
            "train/tokens_per_s": tps,
            "train/new_tokens": new,
            "train/replay_tokens": replay,
            "train/replay_samples": w.replayed,
            "train/replay_events": w.events,
            "train/probe_tokens": probe_tok,
        }
        self.sink.log_metrics(metrics, self.progress.step)

    def end_task(self, k: int) -> None:
        """The task's reservoir joins the replay pool (in the memory: its rows need no move);
        where the strategy reads them, each rank measures the reference loss of its share of
        ``replay.reference_samples`` of the new pool samples (a no-grad pass, counted as probe
        cost) and hands it to the memory."""
        ids = self.memory.end_task(k, self.progress.step)
        if not self.needs_reference:
            return
        measured = reference_subset(ids, self.cfg.replay.reference_samples, self.cfg.seed, k)
        mine = measured[self.rank :: self.world]
        result = self.learner.probe(self.feed.rows(mine))
        self.memory.set_reference(k, self.rank, self.world, mine, result.losses)
        seconds, tokens = all_sum([result.seconds, result.tokens])
        self.progress.probe_seconds += seconds
        self.progress.reference_seconds += seconds
        self.progress.tokens["probe"] += tokens

    # -- the stream ------------------------------------------------------------------
    def run(self) -> Progress:
        """Train every task from ``progress.next_task`` on; the progress at the end."""
        self._say_precision()
        self.feed.prefetch(self.progress.next_task)
        if not self.progress.matrix and self.scores_tasks:
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
            if self.scores_tasks:
                t = time.perf_counter()
                self.evaluate()
                self._after_task(k, time.perf_counter() - t)
        self.sink.drain()  # every record this rank sent has been written
        return self.progress

    def _say_precision(self) -> None:
        cfg, learner = self.cfg, self.learner
        self._say(
            f"matmul precision: base weights {learner.weights_dtype} (model.dtype={cfg.model.dtype}), "
            f"training {'bf16 autocast' if learner.precision == 'bf16' else 'no autocast'} "
            f"(train.autocast={cfg.train.autocast} on {self.device.type}), evaluation "
            f"{'bf16 autocast' if learner.eval_precision == 'bf16' else 'no autocast'} "
            f"(eval.autocast={cfg.eval.autocast}); "
            f"evaluation: {cfg.eval.mode} (exact-match tasks; other scorers generate)"
        )

    def _after_task(self, k: int, eval_seconds: float) -> None:
        """The row's console lines and metrics, and the task-boundary checkpoint."""
        row, loss_row = self.progress.matrix[-1], self.progress.loss_matrix[-1]
        stats = self.memory.stats()
        if self.rank == 0:
            self._report_row(k, row, loss_row, stats, eval_seconds)
        # the metrics of the tasks seen so far (the final metrics after the last task): what
        # a sweep's early-stopping scheduler compares, with tasks_done as its time
        seen = [r[: k + 1] for r in self.progress.matrix[: k + 2]]
        seen_loss = [r[: k + 1] for r in self.progress.loss_matrix[: k + 2]]
        metrics = {"task_index": k, "tasks_done": k + 1, **all_metrics(seen), **loss_metrics(seen_loss)}
        self.checkpoint(k + 1, 0, metrics, name=f"task_{k:02d}")

    def _report_row(self, k: int, row: list, loss_row: list, stats: dict, eval_seconds: float) -> None:
        names = [t.name for t in self.tasks]
        scores = "  ".join(f"{n}={v:.3f}" for n, v in zip(names, row) if not np.isnan(v))
        print(
            f"   after task {k + 1}: {scores}  (eval {eval_seconds:.0f}s, "
            f"pool {stats['pool_size']}, replayed {stats['replay_samples']})",
            flush=True,
        )
        print(
            "   answer loss: " + "  ".join(f"{n}={v:.3f}" for n, v in zip(names, loss_row) if not np.isnan(v)),
            flush=True,
        )
        metrics = {
            **{f"score/{n}": v for n, v in zip(names, row) if not np.isnan(v)},
            **{f"loss/{n}": v for n, v in zip(names, loss_row) if not np.isnan(v)},
            # the mean over the tasks trained so far that this row scored
            "score/mean_seen": float(np.nanmean(row[: k + 1])),
            "loss/mean_seen": float(np.nanmean(loss_row[: k + 1])),
            "replay/samples": stats["replay_samples"],
            "replay/events": stats["replay_events"],
            "replay/pool_size": stats["pool_size"],
        }
        self.sink.log_metrics(metrics, k + 1)
        self.sink.flush()


def seed_rank(cfg: Config, rank: int) -> None:
    """Each rank's torch seed, set after the learner is built (dropout, sampling in generation)."""
    torch.manual_seed(cfg.seed * 1000 + rank)
