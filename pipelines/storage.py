"""Where a run keeps what must outlive its machines: Ray Train's checkpoints and MLflow's
artifacts, on a local folder or in object storage (``s3://``, ``gs://``).

    mssr run configs/demo.yaml train.storage_path=s3://my-bucket/mssr \\
        mlflow.artifact_location=s3://my-bucket/mlflow

A run on one machine needs neither: checkpoints go to ``<run dir>/ray`` and artifacts beside
the local MLflow store. A run on several machines needs checkpoints that every node reaches,
so it is refused without a storage path (``check_durable_storage``). Both places are written
to once before any compute starts (``check_writable``): a missing bucket or missing
credentials end the run there in one line, not at the first checkpoint. Endpoints and
credentials come from the environment, as pyarrow and boto3 read them (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, an instance profile, ``GOOGLE_APPLICATION_CREDENTIALS``...).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Optional

from mssr.config import Config
from mssr.errors import ConfigError
from mssr.sources import is_remote

STORAGE_ENV = "MSSR_STORAGE_PATH"  # overrides train.storage_path: one setting for every run of a cluster


def storage_root(cfg: Config) -> Optional[str]:
    """The durable storage named for checkpoints (``$MSSR_STORAGE_PATH``, else
    ``train.storage_path``), or None for the run directory on this machine."""
    return os.environ.get(STORAGE_ENV) or cfg.train.storage_path


def train_storage_path(cfg: Config, run_dir: Path) -> str:
    """Where Ray Train keeps the run's checkpoints: ``<storage root>/<run name>`` when
    ``storage_root`` names one (an ``s3://`` or ``gs://`` URI, or a folder every node mounts:
    what a run on several machines needs), else ``<run_dir>/ray``. The run directory itself
    stays on the driver's machine: the workers write no file there."""
    root = storage_root(cfg)
    return f"{root.rstrip('/')}/{run_dir.name}" if root else str(run_dir / "ray")


def check_durable_storage(cfg: Config) -> None:
    """A run whose Ray cluster has more than one node needs checkpoints that every node can
    reach: refused, before anything is created, when the config names no storage for them."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if nodes > 1 and not storage_root(cfg):
        raise ConfigError(
            f"train.storage_path: this Ray cluster has {nodes} nodes, and its workers cannot reach checkpoints "
            "on the driver's disk; give an s3:// or gs:// URI (or a folder every node mounts)"
        )


def check_writable(location: str, field: str) -> None:
    """Write and delete one small object under a remote ``location``; a ConfigError naming
    ``field`` when that fails (no such bucket, no credentials, no endpoint). Local folders are
    made with the run and checked for room by the preflight's disk check."""
    if not is_remote(location):
        return
    import pyarrow.fs as pafs

    probe = f".mssr-write-check-{uuid.uuid4().hex[:12]}"
    try:
        fs, path = pafs.FileSystem.from_uri(location)
        target = f"{path.rstrip('/')}/{probe}"
        with fs.open_output_stream(target) as out:
            out.write(b"mssr")
        fs.delete_file(target)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"{field}: cannot write to {location} ({reason}); check the bucket's name, the credentials and "
            "the endpoint (AWS_ENDPOINT_URL) this process sees"
        ) from None
