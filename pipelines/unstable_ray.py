"""Every private Ray API MSSR uses, each behind one function with a fallback.

Ray keeps no promise about ``ray._private`` and ``*._internal`` modules: any minor release may
move or drop them. What MSSR needs from them is small (a better error line, the logs' path, a
quieter console, and the placement-group records a sweep's cleaner reads), so each use lives
here, inside a function that keeps the run going when the installed Ray no longer has it.
``tests/test_unstable_ray.py`` checks that the installed Ray still has each one, so an
upgrade that removes one fails that test instead of degrading quietly.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

SESSION_LOGS_FALLBACK = "/tmp/ray/session_latest/logs"  # where a local Ray keeps its logs by default


def worker_death_errors() -> tuple[type[BaseException], ...]:
    """The errors that say a Ray Train worker's process died (rather than raised): the public
    ``RayActorError``, and Ray Train's health-check failure where this Ray has it."""
    from ray.exceptions import RayActorError

    try:
        from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError
    except ImportError:
        return (RayActorError,)
    return (RayActorError, WorkerHealthCheckFailedError)


def session_logs_dir() -> str:
    """The logs of this process's Ray session (the workers' output is there)."""
    try:
        import ray._private.worker as ray_worker

        return ray_worker._global_node.get_logs_dir_path()
    except (AttributeError, ImportError):  # no session, or another Ray layout: the usual place
        return SESSION_LOGS_FALLBACK


def quiet_train_report_logger() -> bool:
    """Silence Ray Train's per-report INFO line in this worker; False where this Ray has no such
    logger (the line then stays)."""
    try:  # the line comes from a logger named after its file path, not "ray.train"
        from ray.train.v2._internal.execution import context as train_context

        train_context.logger.setLevel(logging.WARNING)
        return True
    except (ImportError, AttributeError):
        return False


class PlacementGroupRecord(NamedTuple):
    placement_group_id: bytes
    live: bool  # pending, prepared, created or being rescheduled
    creator_actor_id: bytes
    creator_actor_dead: bool
    detached: bool


def placement_group_records() -> Iterator[PlacementGroupRecord]:
    """Every placement group's full record from Ray's GCS, with the creator fields that the
    public ``ray.util.placement_group_table()`` leaves out; nothing where this Ray has no such
    accessor (a sweep then leaves orphaned groups to Ray, which frees them when the sweep ends)."""
    try:
        from ray._private.state import state
        from ray.core.generated import gcs_pb2

        table = gcs_pb2.PlacementGroupTableData
        raw_records = state._connect_and_get_accessor().get_placement_group_table()
    except (ImportError, AttributeError):
        return
    live = (table.PENDING, table.PREPARED, table.CREATED, table.RESCHEDULING)
    for raw in raw_records:
        info = table.FromString(raw)
        yield PlacementGroupRecord(
            placement_group_id=info.placement_group_id,
            live=info.state in live,
            creator_actor_id=info.creator_actor_id,
            creator_actor_dead=info.creator_actor_dead,
            detached=info.is_detached,
        )


RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")


def ray_data_logging_config() -> Optional[str]:
    """``pipelines/ray_data_logging.yaml`` (Ray Data's own logging layout, its console handler
    at ERROR), or None when the installed Ray lacks a class it names: Ray Data would fail to
    start on it, while without it Ray Data only logs more. Checked in Ray's source files, not
    by importing them, since Ray must not be imported before the environment is set."""
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    for dotted in re.findall(r"(?:class|\(\)):\s*(ray\.[\w.]+)", RAY_DATA_LOGGING.read_text()):
        module, name = dotted.rsplit(".", 1)
        source = root.joinpath(*module.split(".")[1:]).with_suffix(".py")
        if not source.is_file() or not re.search(rf"^class {name}\b", source.read_text(), re.MULTILINE):
            return None
    return str(RAY_DATA_LOGGING)
