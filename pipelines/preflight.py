"""Checks of the environment a run needs, made before anything is created.

A run needs CPUs (and GPUs) for its workers, a writable output directory and, when the config
names one, a reachable MLflow tracking server. Each check is cheap and says what it found and
what was needed, so that a run that cannot work stops in seconds with one line instead of
waiting, retrying or leaving a half-made run directory behind.

    preflight(cfg)        # raises ConfigError with one line, or returns
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mssr.config import Config
from mssr.errors import ConfigError

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


def preflight(cfg: Config, tracking_uri: str) -> None:
    """Every check, cheapest first."""
    check_cpus(cfg)
    check_gpus(cfg)
    check_output_dir(cfg)
    check_tracking_server(tracking_uri)
