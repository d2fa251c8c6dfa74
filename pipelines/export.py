"""The model out of a run: ``mssr export RUN_DIR --out DIR``.

    mssr export runs/demo --out exported/demo                 # the LoRA adapter after the last task
    mssr export runs/demo --after-task 4 --out exported/t4    # after task 4 (1-based; a kept checkpoint)
    mssr export runs/demo --merge --out exported/merged       # adapter merged into a plain model

A LoRA (or QLoRA) run gives a standard peft adapter folder (``adapter_config.json``,
``adapter_model.safetensors``) with the tokenizer, which plain peft loads without MSSR::

    base_path = json.load(open(DIR + "/adapter_config.json"))["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), DIR)

``--merge`` (and every full fine-tuning run) gives a plain transformers model folder
(safetensors) instead. Beside the weights, ``README.md`` is a small model card: the run's
config, its metrics and its accuracy matrix. The weights come from the run's task-boundary
checkpoints, of which Ray Train keeps the last two (``train.checkpoint`` settings aside), so
``--after-task`` reaches those tasks only. A QLoRA adapter is merged into the base in
full precision.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import yaml

from mssr.config import Config, config_to_dict
from mssr.errors import UserError

_TASK_CHECKPOINT = re.compile(r"^task_(\d+)$")


def checkpoint_root(run_dir: Path) -> str:
    """Where the run's Ray Train checkpoints are (run.json says; runs of older versions: ``ray/train``)."""
    record = json.loads((run_dir / "run.json").read_text())
    return record.get("checkpoints", str(run_dir / "ray" / "train"))


def task_checkpoints(root: str) -> dict[int, str]:
    """Task number (1-based) -> its task-boundary checkpoint, for those kept under ``root``."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(root) if "://" in root else (pafs.LocalFileSystem(), root)
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        m = _TASK_CHECKPOINT.match(info.base_name)
        if m and info.type == pafs.FileType.Directory:
            found[int(m.group(1)) + 1] = f"{root.rstrip('/')}/{info.base_name}"
    return dict(sorted(found.items()))


@contextmanager
def local_copy(location: str) -> Iterator[Path]:
    """A checkpoint as a local folder (copied from remote storage such as s3:// first)."""
    if "://" not in location:
        yield Path(location)
        return
    import pyarrow.fs as pafs

    with tempfile.TemporaryDirectory() as tmp:
        pafs.copy_files(location, tmp)
        yield Path(tmp)


def is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file()


def finished_run(run_dir: Path, command: str) -> tuple[Config, dict]:
    """A finished run's config and summary; a one-line error naming ``command`` otherwise."""
    if not is_run_dir(run_dir):
        raise UserError(f"{command}: {run_dir} is not a run directory (no run.json)")
    if not (run_dir / "summary.json").is_file():
        raise UserError(f"{command}: {run_dir} has not finished (no summary.json); finish it with mssr run --resume")
    cfg = Config.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    return cfg, json.loads((run_dir / "summary.json").read_text())


def _model_card(cfg: Config, summary: dict, task: int, merged: bool) -> str:
    names = summary["tasks"]
    rows = summary["accuracy_matrix"]
    head = "| after | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    cells = [["-" if math.isnan(v) else f"{v:.3f}" for v in row] for row in rows[: task + 1]]  # "-": not scored
    body = "".join(
        f"| {'before training' if i == 0 else names[i - 1]} | " + " | ".join(row) + " |\n"
        for i, row in enumerate(cells)
    )
    metrics = ", ".join(f"{k} {summary[k]:.3f}" for k in ("ap", "bwt", "forgetting") if summary.get(k) is not None)
    kind = "a merged transformers model" if merged or cfg.model.finetune == "full" else "a peft LoRA adapter"
    return (
        f"# {Path(summary['run_dir']).name} after task {task} of {len(names)}\n\n"
        f"{kind.capitalize()} of `{cfg.model.name}`, continually fine-tuned with MSSR "
        f"(strategy `{cfg.replay.strategy}`, seed {cfg.seed}) on the tasks: {', '.join(names)}.\n\n"
        f"Final metrics of the run (after all {len(names)} tasks): {metrics}.\n\n"
        f"## Accuracy matrix (score on each task, up to task {task})\n\n{head}{body}\n"
        f"## Config\n\n```yaml\n{yaml.safe_dump(config_to_dict(cfg), sort_keys=False)}```\n"
    )


def run_model(run_dir: Path, after_task: Optional[int], command: str = "export"):
    """A finished run's model (base + trained weights) after task ``after_task`` (1-based;
    default the last), on the CPU: ``(model, tokenizer, config, summary, task)``."""
    from safetensors.torch import load_file

    from mssr.models import load_model, load_trainable_state_dict

    cfg, summary = finished_run(run_dir, command)
    if after_task is not None and after_task < 1:
        raise UserError(f"{command}: --after-task {after_task}: tasks are numbered from 1")
    kept = task_checkpoints(checkpoint_root(run_dir))
    task = after_task or len(summary["tasks"])
    if task not in kept:
        have = ", ".join(map(str, kept)) or "none"
        raise UserError(f"{command}: no checkpoint after task {task} in {run_dir} (kept: after task {have})")
    # an fp32 base, whatever the run trained on: merging adapters into bf16 weights would round
    # their small updates away; for QLoRA the same adapter on a full-precision base, exportable anywhere
    model_cfg = cfg.model.model_copy(update={"dtype": "float32"})
    if model_cfg.finetune == "qlora":
        model_cfg = model_cfg.model_copy(update={"finetune": "lora"})
    model, tok = load_model(model_cfg, seed=cfg.seed)
    with local_copy(kept[task]) as ckpt:
        load_trainable_state_dict(model, load_file(str(ckpt / "trainable.safetensors")))
    return model, tok, cfg, summary, task


def export_model(
    run_dir: str | Path, out: str | Path, after_task: Optional[int] = None, merge: bool = False, log=print
) -> Path:
    """Write the model after task ``after_task`` (1-based; default the last) of a finished run to ``out``."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    run_dir, out = Path(run_dir).resolve(), Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"export: --out {out} exists and is not empty")
    model, tok, cfg, summary, task = run_model(run_dir, after_task)
    if merge and hasattr(model, "peft_config"):
        model = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "README.md").write_text(_model_card(cfg, summary, task, merge))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    log(f"exported {run_dir.name} after task {task} to {out}")
    return out


def log_mlflow_model(run_dir: Path, uri: str, run_id: str, register: Optional[str] = None) -> str:
    """Log a finished run's final model in its MLflow run as a pyfunc that answers prompts
    (``pipelines/mlflow_answerer.py``; its artifact is the folder ``export_model`` writes), and
    with ``register`` add it to the Model Registry as a new version of that name. Returns the
    logged model's URI."""
    import importlib.metadata as md

    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from pipelines.mlflow_answerer import PROMPTING_FILE

    cfg, _ = finished_run(run_dir, "log model")
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(run_dir, Path(tmp) / "model", log=lambda *_: None)
        prompting = {
            "prompt_format": cfg.stream.prompt_format,
            "system_prompt": cfg.stream.system_prompt,
            "max_new_tokens": cfg.eval.max_new_tokens,
        }
        (folder / PROMPTING_FILE).write_text(json.dumps(prompting))
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("mlflow_answerer.py")),
                artifacts={"model": str(folder)},
                # a list of prompts in, a list of answers out
                signature=ModelSignature(Schema([ColSpec("string")]), Schema([ColSpec("string")])),
                # what loading it needs, at the versions it was made with (no slow inference)
                pip_requirements=[f"{p}=={md.version(p)}" for p in ("mlflow", "torch", "transformers", "peft")],
                registered_model_name=register,
            )
    return info.model_uri
