"""The model out of a run: ``mssr export RUN_DIR --out DIR``.

    mssr export runs/demo --out exported/demo                 # the LoRA adapter after the last task
    mssr export runs/demo --after-task 4 --out exported/t4    # after task 4 (1-based; a kept checkpoint)
    mssr export runs/demo --merge --out exported/merged       # adapter merged into a plain model

A LoRA (or QLoRA) run gives a standard peft adapter folder (``adapter_config.json``,
``adapter_model.safetensors``) with the tokenizer, which plain peft loads without MSSR::

    model = AutoPeftModelForCausalLM.from_pretrained(DIR)    # its base by the name in adapter_config.json

The adapter names its base so that another machine can find it (``base_reference``): a hub
model by its id and the commit the run trained on, a local folder by its path, the packaged
SmolLM2 by ``smollm2-135m-instruct`` (``mssr prepare-model`` writes it; docs/usage.md says
where). ``--merge`` (and every full fine-tuning run) gives a plain transformers model folder
(safetensors, in the base's own dtype) that needs nothing else. Beside the weights,
``README.md`` is a model card: the Hub's metadata (base model, library, tags, datasets), the
run's config, its metrics and its accuracy matrix. The weights come from the run's
task-boundary checkpoints, of which Ray Train keeps the last two (``train.checkpoint``
settings aside), so ``--after-task`` reaches those tasks only. A QLoRA adapter is merged into
the base in full precision.
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


PACKAGED_LINEAGE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the packaged GGUF was quantised from


def base_reference(cfg: Config) -> tuple[str, Optional[str]]:
    """How an exported adapter names its base: ``(name or path, revision)``. A hub model by
    its id at the commit the run pinned; the packaged SmolLM2 by its MSSR name (its weights
    are the package's 4-bit ones, dequantised, not the hub's: an adapter belongs on those);
    a local folder (and the tiny test model) by its path, which only its owner can resolve."""
    from mssr.models import DEFAULT_MODEL, TINY_MODEL, is_hub_id, prepare_tiny_model

    if is_hub_id(cfg.model.name):
        return cfg.model.name, cfg.model.revision
    if cfg.model.name == DEFAULT_MODEL:
        return DEFAULT_MODEL, None
    if cfg.model.name == TINY_MODEL:
        return str(prepare_tiny_model(cfg.seed)), None
    return str(Path(cfg.model.name).expanduser().resolve()), None


def hub_datasets(cfg: Config) -> list[str]:
    """The hub datasets the run's tasks came from (for the model card's ``datasets``)."""
    from mssr.config import DatasetSource
    from mssr.sources import is_hub_name

    names = [
        source.dataset
        for t in cfg.stream.tasks
        for source in (t.train, t.test, t.validation)
        if isinstance(source, DatasetSource) and is_hub_name(source.dataset)
    ]
    return sorted(set(names))


def _front_matter(cfg: Config, adapter: bool) -> str:
    """The model card's YAML header, which the Hugging Face Hub reads."""
    from mssr.models import DEFAULT_MODEL, is_hub_id

    base = (
        cfg.model.name if is_hub_id(cfg.model.name) else (PACKAGED_LINEAGE if cfg.model.name == DEFAULT_MODEL else None)
    )
    datasets = hub_datasets(cfg)
    meta = {
        **({"base_model": base} if base else {}),
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["mssr", "continual-learning", *(["lora"] if adapter else [])],
        **({"datasets": datasets} if datasets else {}),
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n"


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
    adapter = not merged and cfg.model.finetune != "full"
    kind = "a peft LoRA adapter" if adapter else "a merged transformers model"
    base, revision = base_reference(cfg)
    at = f" at revision `{revision}`" if revision else ""
    return (
        _front_matter(cfg, adapter) + f"# {Path(summary['run_dir']).name} after task {task} of {len(names)}\n\n"
        f"{kind.capitalize()} of `{cfg.model.name}`{at}, continually fine-tuned with MSSR "
        f"(strategy `{cfg.replay.strategy}`, seed {cfg.seed}) on the tasks: {', '.join(names)}.\n\n"
        + (f"Its base, as `adapter_config.json` names it: `{base}`.\n\n" if adapter else "")
        + f"Final metrics of the run (after all {len(names)} tasks): {metrics}.\n\n"
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
    adapter = hasattr(model, "peft_config") and not merge
    if hasattr(model, "peft_config") and merge:
        model = model.merge_and_unload()
    if not adapter:  # in the base's own dtype (bf16 for most hub models): what loads it expects
        model = model.to(base_dtype(cfg))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if adapter:
        _name_base(tmp / "adapter_config.json", *base_reference(cfg))
    (tmp / "README.md").write_text(_model_card(cfg, summary, task, merge))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    log(f"exported {run_dir.name} after task {task} to {out}")
    return out


def base_dtype(cfg: Config):
    """The dtype the base model's own config gives its weights (float32 when it names none)."""
    import torch

    from mssr.models import TINY_MODEL, resolve_model_path

    if cfg.model.name == TINY_MODEL:
        return torch.float32
    config = json.loads((Path(resolve_model_path(cfg.model.name, cfg.model.revision)) / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, name) if isinstance(getattr(torch, name, None), torch.dtype) else torch.float32


def _name_base(adapter_config: Path, base: str, revision: Optional[str]) -> None:
    """Point a saved adapter at its base by ``base_reference`` instead of this machine's path."""
    config = json.loads(adapter_config.read_text())
    config["base_model_name_or_path"], config["revision"] = base, revision
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def log_mlflow_model(run_dir: Path, uri: str, run_id: str, register: Optional[str] = None) -> str:
    """Log a finished run's final model in its MLflow run as a pyfunc that answers prompts
    (``pipelines/mlflow_answerer.py``), and with ``register`` add it to the Model Registry as a
    new version of that name. Returns the logged model's URI.

    What it carries is what another machine cannot fetch: a LoRA adapter over a hub model
    names its base by id and commit (downloaded where it is served); any other base (the
    packaged SmolLM2, a local folder) is merged in, so the model needs nothing else."""
    import importlib.metadata as md

    import mlflow
    from mlflow.models import infer_signature

    from mssr.models import is_hub_id
    from pipelines.console import warnings_hidden

    cfg, _ = finished_run(run_dir, "log model")
    merge = not is_hub_id(cfg.model.name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_model(run_dir, Path(tmp) / "model", merge=merge, log=lambda *_: None)
        prompting = {"prompt_format": cfg.stream.prompt_format, "system_prompt": cfg.stream.system_prompt}
        (folder / "prompting.json").write_text(json.dumps(prompting))  # mlflow_answerer.PROMPTING_FILE
        # inference parameters a caller may pass to predict(..., params=...), with their defaults
        params = {"max_new_tokens": cfg.eval.max_new_tokens, "temperature": 0.0, "batch_size": cfg.eval.batch_size}
        example = ["State the final answer: 2 + 3 ="]
        mlflow.set_tracking_uri(uri)
        # MLflow advises type hints on predict when it loads the model's code; the model has an
        # explicit signature with params instead (type hints would replace it, params dropped)
        with mlflow.start_run(run_id=run_id), warnings_hidden("Add type hints to the `predict` method"):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("mlflow_answerer.py")),
                artifacts={"model": str(folder)},
                signature=infer_signature(example, ["5"], params=params),  # prompts in, answers out
                input_example=example,
                # what loading it needs, installable from PyPI (torch without a local build tag such as +cpu)
                pip_requirements=[
                    f"{p}=={md.version(p).split('+')[0]}" for p in ("mlflow", "torch", "transformers", "peft")
                ],
                registered_model_name=register,
            )
    return info.model_uri
