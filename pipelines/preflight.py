"""Checks of the environment a run needs, made before anything is created.

A run needs CPUs (and GPUs) for its workers, a writable output directory with room for its
checkpoints and, when the config names one, a reachable MLflow tracking server. Each check is
cheap and says what it found and what was needed, so that a run that cannot work stops in
seconds with one line instead of waiting, retrying or leaving a half-made run directory behind.

    preflight(cfg)        # raises ConfigError with one line, or returns
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mssr.config import Config
from mssr.errors import ConfigError
from mssr.sources import is_remote
from pipelines.storage import STORAGE_ENV, check_writable, storage_root
from pipelines.tracking import check_artifact_location

TRACKING_TIMEOUT_S = 5.0  # a tracking server on the same network answers /health in milliseconds


def on_cluster() -> bool:
    """Is the run going to a Ray cluster (``RAY_ADDRESS``), where the autoscaler adds nodes?"""
    return bool(os.environ.get("RAY_ADDRESS"))


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_cpus(cfg: Config) -> None:
    """Locally, the workers' CPUs must exist: Ray would start them all on fewer cores, each
    loading a model, and nothing would train for minutes. On a cluster, waiting for the
    autoscaler is right, and Ray Train says what it waits for."""
    need = cfg.train.num_workers * cfg.train.cpus_per_worker
    have = available_cpus()
    if not on_cluster() and need > have:
        raise ConfigError(
            f"train.num_workers={cfg.train.num_workers} x train.cpus_per_worker={cfg.train.cpus_per_worker:g} "
            f"needs {need:g} CPUs and this machine has {have}; lower train.num_workers (or run on a "
            "cluster: RAY_ADDRESS)"
        )


def check_gpus(cfg: Config) -> None:
    if not cfg.train.use_gpu or on_cluster():
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have == 0:
        raise ConfigError("train.use_gpu=true but this machine has no CUDA GPU; set train.use_gpu=false")
    if cfg.train.num_workers > have:
        raise ConfigError(
            f"train.use_gpu=true: train.num_workers={cfg.train.num_workers} needs {cfg.train.num_workers} GPUs "
            f"and this machine has {have}; lower train.num_workers"
        )


def check_output_dir(cfg: Config) -> None:
    """The output directory exists and is writable, or can be made: a directory can be made in
    its nearest existing ancestor (tried, and removed again: permission bits do not tell on a
    read-only filesystem, or for root)."""
    path = Path(cfg.run.output_dir).resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"run.output_dir: cannot create {path}: {existing} is not a directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mssr-write-check-", dir=existing))
    except OSError as e:
        raise ConfigError(f"run.output_dir: cannot create or write {path}: {e.strerror} in {existing}") from None


CHECKPOINTS_ON_DISK = 3  # Ray Train keeps two, and writes the next before it drops the oldest
DISK_MARGIN = 1 << 30  # tokenised splits, pool, plans, MLflow artifacts: well under a GiB for a run
_LORA_SHAPES = {"q_proj": 1, "k_proj": 1, "v_proj": 1, "o_proj": 1, "gate_proj": 2, "up_proj": 2, "down_proj": 2}


def checkpoint_bytes(cfg: Config) -> int:
    """About what one checkpoint takes: the trainable weights and AdamW's two moments (fp32).
    Full fine-tuning: the model's weight files; LoRA: r x (in + out) per adapted matrix, from the
    model's config.json (an upper bound: key and value projections are narrower under GQA)."""
    from mssr.models import TINY_MODEL, resolve_model_path

    if cfg.model.name == TINY_MODEL:
        return 0
    folder = Path(resolve_model_path(cfg.model.name, cfg.model.revision))
    if cfg.model.finetune == "full":
        weights = sum(f.stat().st_size for f in folder.glob("*.safetensors")) or sum(
            f.stat().st_size for f in folder.glob("*.bin")
        )
        per_param = 2 if cfg.model.dtype == "bfloat16" else 1  # fp32 weights: file size; bf16: twice in fp32
        return 3 * weights * per_param
    import json

    conf = json.loads((folder / "config.json").read_text())
    hidden, layers = conf.get("hidden_size", 0), conf.get("num_hidden_layers", 0)
    per_layer = sum(
        cfg.model.lora.r * hidden * (1 + _LORA_SHAPES.get(m, 1) * 2) for m in cfg.model.lora.target_modules
    )  # A: r x in, B: out x r; out taken as 2x hidden (attention) or 4x (MLP): an upper bound
    return 3 * 4 * per_layer * layers


def check_disk(cfg: Config) -> None:
    """The filesystem of the run directory (and of the checkpoints' storage, when a local path)
    has room for the checkpoints Ray Train keeps, plus a margin; remote storage (s3://...) is
    not checked."""
    need = CHECKPOINTS_ON_DISK * checkpoint_bytes(cfg) + DISK_MARGIN
    storage = storage_root(cfg) or ""
    places = [Path(cfg.run.output_dir).resolve()] + ([Path(storage)] if storage and not is_remote(storage) else [])
    for path in places:
        existing = path
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        if free < need:
            raise ConfigError(
                f"run.output_dir: {free / 2**30:.1f} GiB free on the filesystem of {existing}, and a run "
                f"needs about {need / 2**30:.1f} GiB ({CHECKPOINTS_ON_DISK} checkpoints of "
                f"{checkpoint_bytes(cfg) / 2**30:.2f} GiB, plus {DISK_MARGIN / 2**30:.0f} GiB); free some "
                "space or set run.output_dir (or train.storage_path) elsewhere"
            )


def check_tracking_server(uri: str) -> None:
    """An HTTP tracking server must answer its ``/health`` endpoint within a few seconds."""
    from pipelines.tracking import redact

    if not uri.startswith(("http://", "https://")):
        return  # a local store (sqlite, file): made with the run directory
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=TRACKING_TIMEOUT_S) as response:
            if response.status != 200:
                raise urllib.error.URLError(f"HTTP {response.status}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"mlflow.tracking_uri: no MLflow server answers at {redact(uri)} ({reason}; waited "
            f"{TRACKING_TIMEOUT_S:g} s); start it, or unset the URI to log to a local store"
        ) from None


def check_storage(cfg: Config) -> None:
    """Remote checkpoint storage and artifact location take a write (see ``pipelines.storage``)."""
    if root := storage_root(cfg):
        check_writable(root, STORAGE_ENV if os.environ.get(STORAGE_ENV) else "train.storage_path")
    if cfg.mlflow.artifact_location:
        check_writable(cfg.mlflow.artifact_location, "mlflow.artifact_location")


def preflight(cfg: Config, tracking_uri: str) -> None:
    """Every check, cheapest first."""
    check_cpus(cfg)
    check_gpus(cfg)
    check_output_dir(cfg)
    check_disk(cfg)
    check_tracking_server(tracking_uri)
    check_storage(cfg)
    check_artifact_location(tracking_uri, cfg.mlflow.experiment, cfg.mlflow.artifact_location)
