"""Score any model on a stream's test splits: ``mssr eval SOURCE CONFIG``.

    mssr eval smollm2-135m-instruct configs/demo.yaml          # the base model: the "before" row
    mssr eval runs/mssr-20261121-101500 configs/demo.yaml      # a finished run, after its last task
    mssr eval runs/mssr-20261121-101500 configs/long.yaml --after-task 4 --json t4.json
    mssr eval exported/demo configs/demo.yaml                   # a folder written by mssr export

SOURCE is a run directory (its model after the last task, or ``--after-task K``, from a kept
checkpoint), a folder written by ``mssr export`` (a peft adapter or a merged model), or
anything ``model.name`` accepts (the packaged model's name, a model folder, a cached hub id).
CONFIG gives the tasks (its ``stream``), how they are prompted and scored (``stream`` and
``eval``), and where MLflow is (``mlflow``, ``run.output_dir``). The result is one row of the
accuracy matrix and one of the loss matrix, printed, written with ``--json``, and logged as an
MLflow run tagged ``mssr.kind=evaluation`` in the config's experiment.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np

from mssr.config import Config, config_to_dict, flatten
from mssr.errors import ModelError
from mssr.models import load_model, load_tokenizer, resolve_model_path
from mssr.tasks import load_stream
from pipelines.export import is_run_dir, run_model


def _export_folder(path: Path):
    """A folder written by ``mssr export``: a peft adapter over its base, or a plain model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        adapter = json.loads((path / "adapter_config.json").read_text())
        try:  # the packaged model's name, a hub id (downloaded if need be) or a folder
            base = resolve_model_path(adapter["base_model_name_or_path"], adapter.get("revision"))
        except ModelError as e:
            raise ModelError(f"eval: the adapter's base model: {e}") from None
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), path), tok
    return AutoModelForCausalLM.from_pretrained(path), tok


def load_source(source: str, cfg: Config, after_task: Optional[int]):
    """The model SOURCE names (see the module docstring), its tokenizer, and a description."""
    path = Path(source).expanduser()
    if path.is_dir() and is_run_dir(path.resolve()):
        model, tok, _, _, task = run_model(path.resolve(), after_task, command="eval")
        return model, tok, f"{path.resolve().name} after task {task}"
    if after_task is not None:
        raise ModelError(f"eval: --after-task needs a run directory; {source} is not one (no run.json)")
    if path.is_dir() and (path / "README.md").is_file() and any(path.glob("*.safetensors")):
        model, tok = _export_folder(path.resolve())
        return model, tok, f"export {path.resolve().name}"
    model_cfg = cfg.model.model_copy(update={"name": source, "finetune": "full"})
    model, _ = load_model(model_cfg, seed=cfg.seed)
    return model, load_tokenizer(model_cfg), source


def _log_evaluation(cfg: Config, source: str, described: str, scores: dict, losses: dict, mean: float) -> str:
    """An MLflow run of its own for the evaluation (the stream and eval settings as params, a
    score and a loss per task); returns its id."""
    from pipelines.tracking import finish_run, resolve_tracking_uri, start_run

    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, Path(cfg.run.output_dir))
    settings = {k: v for k, v in flatten(config_to_dict(cfg)).items() if k.startswith(("stream.", "eval."))}
    run_id = start_run(
        uri,
        cfg.mlflow.experiment,
        f"eval {described}",
        {"source": source, **settings},
        tags={"mssr.kind": "evaluation"},
        artifact_location=cfg.mlflow.artifact_location,
    )
    metrics = {**{f"score/{k}": v for k, v in scores.items()}, **{f"loss/{k}": v for k, v in losses.items()}}
    finish_run(uri, run_id, {**metrics, "score/mean": mean}, artifacts=[])
    return run_id


def evaluate_source(
    source: str, cfg: Config, after_task: Optional[int] = None, json_path: Optional[str] = None, log=print
) -> dict:
    """Score SOURCE on every task of ``cfg``'s stream; returns (and logs) the accuracy and loss rows."""
    import torch
    import transformers

    from mssr.evaluation import evaluate_examples
    from mssr.optim import autocast_context
    from mssr.tokenize import PromptEncoder, encoder_options

    transformers.utils.logging.disable_progress_bar()
    tasks = load_stream(cfg.stream)
    started = time.perf_counter()
    model, tok, described = load_source(source, cfg, after_task)
    device = torch.device("cuda" if cfg.train.use_gpu and torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    encoder = PromptEncoder(tok, **encoder_options(cfg.stream))
    scores, losses = {}, {}
    for task in tasks:
        result = evaluate_examples(
            model,
            encoder,
            task.test,
            task.scorer,
            cfg.eval.mode,
            cfg.eval.max_new_tokens,
            cfg.eval.batch_size,
            autocast_context(cfg.eval.autocast, device.type, "eval"),
        )
        scores[task.name], losses[task.name] = float(np.mean(result.scores)), float(np.mean(result.losses))
        log(f"  {task.name}: score {scores[task.name]:.3f}  answer loss {losses[task.name]:.3f}")
    out = {
        "source": described,
        "tasks": [t.name for t in tasks],
        "accuracy_row": [scores[t.name] for t in tasks],
        "loss_row": [losses[t.name] for t in tasks],
        "mean_score": float(np.mean(list(scores.values()))),
        "seconds": round(time.perf_counter() - started, 1),
    }
    run_id = _log_evaluation(cfg, source, described, scores, losses, out["mean_score"])
    out["mlflow_run_id"] = run_id
    log(f"{described}: mean score {out['mean_score']:.3f} over {len(tasks)} tasks (MLflow run {run_id})")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(out, indent=1))
    return out
