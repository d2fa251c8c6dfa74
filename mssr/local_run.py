"""A whole stream in one process, without Ray or MLflow: the continual loop of ``mssr run``
(``mssr.loop``) with the replay planner in this process and the tasks tokenised here.

    python -m mssr.local_run configs/tiny.yaml --out runs/local train.num_workers=1
    python -m mssr.local_run configs/demo.yaml --out /tmp/gpu model.dtype=bfloat16 train.use_gpu=true

For stepping through a strategy in a debugger, and for a machine that has a GPU but no Ray.
It trains as ``mssr run`` with one worker does, step for step: the same rows in the same
order, the same plans, the same matrices (a test compares them on the tiny model). It writes
``OUT/plans/rank_0.jsonl``, ``OUT/progress.json``, ``OUT/checkpoints/`` (Ray Train's layout)
and ``OUT/summary.json`` (the matrices and metrics), and logs nothing to MLflow. One worker
only (``train.num_workers=1``), and not the ``joint`` reference, which mixes the tasks
through Ray Data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from mssr.config import Config, load_config
from mssr.errors import ConfigError, UserError
from mssr.learner import Learner
from mssr.loop import ContinualLoop, ListFeed, seed_rank
from mssr.memory_service import LocalMemory
from mssr.metrics import all_metrics, format_matrix, loss_metrics
from mssr.models import load_tokenizer
from mssr.run_files import RunFiles
from mssr.run_plan import build_plan, format_plan, tasks_to_train
from mssr.sample_ids import sample_id
from mssr.strategies import build_strategy
from mssr.tasks import Task, load_stream
from mssr.tokenize import PromptEncoder, encode_rows, encoder_options, row_stats, training_order

TOKENIZE_BATCH = 256  # rows per tokenizer call, as Ray Data's tokenising tasks take them


class FolderSink(RunFiles):
    """The loop's records as files in ``out`` (``mssr.run_files``); its checkpoints copied to
    ``out/checkpoints/NAME``; its step metrics kept in ``metrics`` (no MLflow here)."""

    def __init__(self, out: Path):
        super().__init__(out)
        self.metrics: list[tuple[dict, int]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.metrics.append((metrics, step))

    def flush(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def report(self, metrics: dict, name: str, checkpoint: Optional[Path]) -> None:
        if checkpoint is not None:
            shutil.copytree(checkpoint, self.run_dir / "checkpoints" / name, dirs_exist_ok=True)


def tokenised_rows(tasks: list[Task], cfg: Config) -> tuple[list[list[tuple[int, list[int], int]]], list[dict]]:
    """Every task's training rows as ``(sample_id, input_ids, prompt_len)`` in training order,
    and per-task statistics: what ``pipelines.data.tokenise_tasks`` makes with Ray Data."""
    encoder = PromptEncoder(load_tokenizer(cfg.model), **encoder_options(cfg.stream))
    truncate_to = cfg.stream.max_length if cfg.stream.too_long == "truncate" else None
    rows, stats = [], []
    for k, task in enumerate(tasks):
        order = training_order(k, len(task.train), cfg.seed)
        examples = [task.train[i] for i in order]
        input_ids, prompt_len, truncated = [], [], []
        for start in range(0, len(examples), TOKENIZE_BATCH):
            part = examples[start : start + TOKENIZE_BATCH]
            ids, plens, cut = encode_rows(encoder, [e.prompt for e in part], [e.answer for e in part], truncate_to)
            input_ids += ids
            prompt_len += plens
            truncated += cut
        lengths = np.array([len(r) for r in input_ids])
        stats.append(row_stats(task, [e.line for e in examples], lengths, np.array(truncated), cfg.stream))
        rows.append([(sample_id(k, int(i)), r, p) for i, r, p in zip(order, input_ids, prompt_len)])
    return rows, stats


def run_local(cfg: Config, out: Path, log=print) -> dict:
    """Train ``cfg``'s stream in this process; the summary (also written to ``out/summary.json``)."""
    if cfg.train.num_workers != 1:
        raise ConfigError(f"train.num_workers={cfg.train.num_workers}: a local run trains one worker; set it to 1")
    strategy = build_strategy(cfg.replay.strategy, cfg.replay)
    if strategy.mixes_tasks:
        raise ConfigError(f"replay.strategy={cfg.replay.strategy} mixes the tasks through Ray Data: use mssr run")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty; give a new folder")
    tasks = load_stream(cfg.stream)
    rows, stats = tokenised_rows(tasks, cfg)
    plan = build_plan(cfg, tasks, stats, strategy)
    log(format_plan(plan))
    torch.set_num_threads(max(1, int(round(cfg.train.cpus_per_worker))))
    device = torch.device("cuda" if cfg.train.use_gpu else "cpu")
    learner = Learner(cfg, plan.total_steps, device)
    seed_rank(cfg, 0)
    memory = LocalMemory(plan.replay, cfg.seed, plan.new_samples, plan.replay_steps)
    loop = ContinualLoop(
        cfg,
        tasks_to_train(tasks, plan),
        plan.total_steps,
        learner,
        memory,
        ListFeed(rows, cfg.train.batch_size),
        FolderSink(out),
        needs_update_norm=cfg.replay.clock == "update_norm",
        needs_reference=memory.needs_reference,
    )
    loop.restore(None)
    progress = loop.run()
    summary = {
        "tasks": [t.name for t in tasks],
        "accuracy_matrix": progress.matrix,
        "loss_matrix": progress.loss_matrix,
        **all_metrics(progress.matrix),
        **loss_metrics(progress.loss_matrix),
        "tokens": progress.tokens,
        "train_seconds": round(progress.train_seconds, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(format_matrix(progress.matrix, summary["tasks"]))
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mssr.local_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the run's config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value settings over the config")
    parser.add_argument("--out", required=True, type=Path, help="a new or empty folder for the run's files")
    args = parser.parse_intermixed_args(argv)  # settings before or after --out, as in the docstring
    try:
        run_local(load_config(args.config, args.overrides), args.out)
    except UserError as e:
        print(f"mssr: error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
