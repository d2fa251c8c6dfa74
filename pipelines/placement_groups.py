"""Free the CPUs of Ray Train runs whose controller was killed (the trials a sweep stops).

Tune stops a trial (ASHA's early stopping) by killing its actor; the Ray Train controller
that actor owns dies with it, but the placement group the controller reserved for its
training workers stays: Ray removes a placement group only when both its creator actor and
its job are gone, and the job (the sweep) goes on. Ray Train's own cleaner for this case
asks Ray's State API whether the controller is alive, which needs the dashboard and fails
outright when another Ray instance runs on the same machine. So the sweep removes them
itself: a placement group whose creator was an actor, that actor dead, not detached, is
one nobody can use any more (the rule Ray applies when the job ends, applied now).

    with removing_orphaned_placement_groups():
        tuner.fit()
"""

from __future__ import annotations

import contextlib
import threading

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

from pipelines.unstable_ray import placement_group_records

_NO_ACTOR = ray.ActorID.nil().binary()  # placement groups made by the driver itself (Tune's trials)


def remove_orphaned_placement_groups() -> int:
    """Remove every live placement group whose creator actor is dead; returns how many."""
    removed = 0
    for record in placement_group_records():
        if record.live and record.creator_actor_dead and not record.detached and record.creator_actor_id != _NO_ACTOR:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(record.placement_group_id)))
            removed += 1
    return removed


@contextlib.contextmanager
def removing_orphaned_placement_groups(every_s: float = 2.0):
    """While the block runs, remove orphaned placement groups every ``every_s`` seconds (a
    background thread of the driver, so it also covers a sweep restored from its saved state)."""
    stop = threading.Event()

    def loop():
        while not stop.wait(every_s):
            remove_orphaned_placement_groups()

    thread = threading.Thread(target=loop, name="remove-orphaned-placement-groups", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
