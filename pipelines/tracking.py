"""MLflow: one run per ``mssr run``, created by the driver, appended to by the run recorder.

The driver creates the store, the experiment and the run before any worker starts (first
use of a sqlite store from several processes at once races); rank 0's step metrics reach it
through the run recorder (``pipelines.recorder``), an actor on the driver's node.
Credentials come only from the environment (MLflow reads ``MLFLOW_TRACKING_*``).

    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, output_dir)
    run_id = start_run(uri, "mssr", run_name, params)
    log_metric_batches(mlflow_client(uri), run_id, [({"train/loss": 0.4}, 10)])
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Optional


def resolve_tracking_uri(configured: Optional[str], output_dir: Path) -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else a sqlite store in the output dir."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


def redact(uri: str) -> str:
    """The URI without any ``user:password@`` part, for console lines and files."""
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1***@", uri)


def mlflow_client(uri: str):
    """The one place an ``MlflowClient`` is made (tracking, sweeps, reports)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


# MLflow 3's UI shows an experiment by its kind; untagged ones may open in the GenAI views
# (traces, evaluations). Ours train models: its "custom model development" kind.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client, uri: str, name: str, artifact_location: Optional[str]) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if "mlflow.experimentKind" not in exp.tags:  # made by an older version, or by hand
            client.set_experiment_tag(exp.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return exp.experiment_id
    if artifact_location is None and uri.startswith("sqlite:///"):
        # keep artifacts beside the DB, not under the current directory
        artifact_location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)


def check_artifact_location(uri: str, experiment: str, artifact_location: Optional[str]) -> None:
    """An experiment keeps the artifact location it was created with: a run that names another
    one for an existing experiment is refused (its artifacts would not go where the config says)."""
    from mssr.errors import ConfigError

    if not artifact_location:
        return
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return  # a new store: the experiment is made with the run
    exp = mlflow_client(uri).get_experiment_by_name(experiment)
    if exp is not None and exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        raise ConfigError(
            f"mlflow.artifact_location: experiment {experiment!r} keeps its artifacts at {exp.artifact_location}; "
            "name another mlflow.experiment for the new location, or leave artifact_location unset"
        )


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    tags: Optional[dict] = None,
    artifact_location: Optional[str] = None,
) -> str:
    """A new MLflow run in ``experiment`` (made on first use, its artifacts at ``artifact_location``
    or MLflow's default); returns its id."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = mlflow_client(uri)
    experiment_id = _experiment_id(client, uri, experiment, artifact_location)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags or {})
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def finish_run(
    uri: str,
    run_id: str,
    metrics: dict[str, float],
    artifacts: list[Path],
    status: str = "FINISHED",
    tags: Optional[dict[str, str]] = None,
) -> None:
    """The run's final metrics, its ``tags`` (a run's provenance: ``mssr.provenance.tags``) and
    artifacts; then its status."""
    client = mlflow_client(uri)
    log_metrics(client, run_id, metrics, step=0)
    set_tags(client, run_id, tags or {})
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)


def reopen_run(uri: str, run_id: str) -> None:
    """Mark an interrupted run RUNNING again: a resumed run logs into the same MLflow run."""
    mlflow_client(uri).update_run(run_id, status="RUNNING")


def fail_run(uri: str, run_id: str) -> None:
    """Mark the run FAILED; what it logged so far stays."""
    mlflow_client(uri).set_terminated(run_id, status="FAILED")


def log_metrics(client, run_id: str, metrics: dict[str, float], step: int) -> None:
    log_metric_batches(client, run_id, [(metrics, step)])


def set_tags(client, run_id: str, tags: dict[str, str]) -> None:
    """Set the run's ``tags`` in as few requests as possible (a resumed run sets them again)."""
    from mlflow.entities import RunTag

    items = [RunTag(k, str(v)) for k, v in tags.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, tags=items[i : i + 100])


def log_metric_batches(client, run_id: str, entries: list[tuple[dict[str, float], int]]) -> None:
    """Log several (metrics, step) entries in as few requests as possible."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for metrics, step in entries for k, v in metrics.items()]
    for i in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[i : i + 500])
