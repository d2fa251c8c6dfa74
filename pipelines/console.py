"""A quiet console: environment defaults and warning filters for the driver and the workers.

Ray, Ray Data, Ray Train, transformers and peft each print things a user of ``mssr`` cannot
act on; these keep the console to the run's own progress lines and to warnings that matter.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from contextlib import contextmanager
from typing import Iterator

from pipelines.unstable_ray import ray_data_logging_config

# a tracking server that stops answering: a few quick tries, not MLflow's default minutes of
# retries (the run recorder keeps the step metrics and sends them when it answers again)
RAY_DATA_DEPRECATION = "`ExecutionOptions.exclude_resources` is deprecated"
MLFLOW_QUICK_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def quiet_env() -> None:
    """Environment defaults for Ray, Ray Data and tokenizers: one line per event. (Whether the
    Hugging Face Hub is reached is the user's ``HF_HUB_OFFLINE``: a hub model downloads once.)"""
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # workers print their own progress: keep every line once (Ray Train's print patch would
    # echo each print through its logger a second time)
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    if "RAY_DATA_LOGGING_CONFIG" not in os.environ and (layout := ray_data_logging_config()):
        os.environ["RAY_DATA_LOGGING_CONFIG"] = layout
    # Ray's C++ failure-signal handler catches SIGTERM too: it printed a stack dump and then
    # aborted the driver (exit -6) after the run had been stopped cleanly; without it, SIGTERM
    # (a cloud preemption) goes to Python and ends the run as Ctrl-C does. Read when Ray is
    # first imported: quiet_env() runs before that (pipelines.cli.main)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    for key, value in MLFLOW_QUICK_RETRIES.items():
        os.environ.setdefault(key, value)
    # a bar per logged or loaded model's files, in a console of one line per event
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's sqlite store announces each table it creates, and log_model that it checks the
    # input example, at INFO
    for name in ("mlflow.store.db.utils", "alembic", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray's processes (Ray Train's controller, Ray Data's tasks) inherit this; with it set, Ray
    # does not install its own filter that shows each of its deprecations once per module
    os.environ.setdefault("PYTHONWARNINGS", f"ignore:{RAY_DATA_DEPRECATION}")
    quiet_library_warnings()


def quiet_library_warnings() -> None:
    """Warnings that libraries raise about their own use of each other, which a user cannot act
    on; each matched by its message, so that any other warning still shows. Called again once
    Ray is imported: importing it puts its own filter for its deprecations in front of these."""
    # Ray Train's state export reads a Ray Data option that Ray Data itself deprecated
    warnings.filterwarnings("ignore", message=re.escape(RAY_DATA_DEPRECATION))
    # peft calls the old name of a transformers helper
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


@contextmanager
def warnings_hidden(text: str) -> Iterator[None]:
    """Drop shown warnings whose message contains ``text``, inside the block. For a library that
    sets its own warning filters inside its call (MLflow's ``log_model`` shows every UserWarning
    once, ahead of any filter of ours), so that only showing can be intercepted."""
    shown = warnings.showwarning

    def show(message, *args, **kwargs):
        if text not in str(message):
            shown(message, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
