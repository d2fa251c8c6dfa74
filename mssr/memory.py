"""Memory strength of every sample in the replay pool, vectorised with NumPy.

For sample i: last-trained time tau_i, strength S_i > 0, last loss l_i, its loss when it
entered the pool (``entry_loss``: what replay diagnostics compare later losses with), the time
it entered, and its **reference loss** l*_i: its own loss in a no-grad pass when its task
ended (``set_reference``; NaN until measured), the level it was learned to.

* retention       R_i(t) = exp(-(t - tau_i) / S_i)
* on entering     S_i = S0 / (1 + e_i / loss_ref)           (S0 = 1 / decay, e_i its entry loss)
* on replay       recalled: S_i *= 1 + alpha * (1 - R_i(t-))
                  otherwise:                      S_i = max(min_strength, beta * S_i)
                  then tau_i = t

Recalled means l_i <= recall_loss, or with ``recall_margin`` set, l_i <= e_i + recall_margin
(the same rise above its entry level on every task). The entry loss e_i is the sample's own
loss when it joined (``add``), or what the caller gives as ``entry_losses`` (the planner: its
task's learned level, with ``entry_loss: task_end``).

Every replay of samples with a reference adds one **excess observation** per task replayed:
the mean of ``loss - reference`` over the task's replayed samples, at that time (``history``).
That is what was forgotten, measured for free by the training forward pass; the forgetting
models of ``mssr.forgetting`` are fitted to it.

Reviewing a half-forgotten sample strengthens it most (the spacing effect): the gain is
scaled by how much was forgotten, 1 - R. (A factor ``alpha * R`` would, with R close to 1
right after training, reward cramming, the opposite of the spacing effect the model is
named for; hence the forgotten fraction.)

    mem = MemoryState(cfg.replay.mssr)
    mem.add(ids, task=0, losses=losses, now=step)
    mem.retention(now=step + 10)
    mem.update(ids[:4], losses=new_losses, now=step + 10)
"""

from __future__ import annotations

import numpy as np

EXACT_MEAN_LIMIT = 1 << 20  # pools up to ~10^6 samples: the exact mean retention (a few ms)
MEAN_SAMPLE = 1 << 16  # larger pools: the mean over this many evenly spaced samples


class MemoryState:
    # one value per pooled sample each
    ARRAYS = ("ids", "task", "tau", "strength", "loss", "entry_loss", "reference", "entered")
    # one value per excess observation each (a task at a replay), in time order
    HISTORY = ("obs_step", "obs_task", "obs_excess", "obs_samples")

    def __init__(self, params):
        self.p = params
        self.ids = np.zeros(0, dtype=np.int64)  # kept sorted for searchsorted look-ups
        self.task = np.zeros(0, dtype=np.int32)
        self.tau = np.zeros(0, dtype=np.float64)
        self.strength = np.zeros(0, dtype=np.float64)
        self.loss = np.zeros(0, dtype=np.float64)
        self.entry_loss = np.zeros(0, dtype=np.float64)
        self.reference = np.zeros(0, dtype=np.float64)
        self.entered = np.zeros(0, dtype=np.float64)
        self.obs_step = np.zeros(0, dtype=np.float64)
        self.obs_task = np.zeros(0, dtype=np.int32)
        self.obs_excess = np.zeros(0, dtype=np.float64)
        self.obs_samples = np.zeros(0, dtype=np.int32)
        self._task_bounds: dict[int, tuple[int, int]] | None = None  # task -> its slice, when contiguous

    def __len__(self) -> int:
        return int(self.ids.size)

    def initial_strength(self, losses: np.ndarray) -> np.ndarray:
        s0 = 1.0 / self.p.decay
        return np.maximum(self.p.min_strength, s0 / (1.0 + np.asarray(losses, float) / self.p.loss_ref))

    def add(self, ids, task: int, losses, now: float, entry_losses=None) -> None:
        """Samples join the pool at the end of their task with their last ``losses``, and with
        strength from their entry losses (``entry_losses``, else ``losses``)."""
        ids = np.asarray(ids, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        entry = losses if entry_losses is None else np.broadcast_to(np.asarray(entry_losses, np.float64), losses.shape)
        if ids.size == 0:
            return
        if np.isin(ids, self.ids).any() or np.unique(ids).size != ids.size:
            raise ValueError("sample ids must be unique in the pool")
        self.ids = np.concatenate([self.ids, ids])
        self.task = np.concatenate([self.task, np.full(ids.size, task, dtype=np.int32)])
        self.tau = np.concatenate([self.tau, np.full(ids.size, float(now))])
        self.strength = np.concatenate([self.strength, self.initial_strength(entry)])
        self.loss = np.concatenate([self.loss, losses])
        self.entry_loss = np.concatenate([self.entry_loss, entry])
        self.reference = np.concatenate([self.reference, np.full(ids.size, np.nan)])
        self.entered = np.concatenate([self.entered, np.full(ids.size, float(now))])
        order = np.argsort(self.ids, kind="stable")
        for name in self.ARRAYS:
            setattr(self, name, getattr(self, name)[order])
        self._task_bounds = None

    def positions(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        if ids.size and (pos.max(initial=0) >= self.ids.size or (self.ids[pos] != ids).any()):
            raise KeyError("some ids are not in the pool")
        return pos

    def set_reference(self, ids, losses, fill_tasks: bool = False) -> None:
        """The samples' reference losses: their loss in a no-grad pass at their task's end.
        ``fill_tasks``: the other samples of their tasks without one take the mean of these."""
        pos = self.positions(ids)
        losses = np.asarray(losses, dtype=np.float64)
        self.reference[pos] = losses
        if fill_tasks:
            for t in np.unique(self.task[pos]):
                missing = (self.task == t) & np.isnan(self.reference)
                self.reference[missing] = losses[self.task[pos] == t].mean()

    def task_end(self, task: int) -> float:
        """When ``task``'s samples joined the pool (its training ended)."""
        return float(self.entered[self.task == task].min())

    def retention(self, now: float, positions: np.ndarray | None = None) -> np.ndarray:
        """R_i(now) of every sample (or of ``positions``)."""
        tau = self.tau if positions is None else self.tau[positions]
        s = self.strength if positions is None else self.strength[positions]
        # exponents beyond -80 are clipped: e^-80 is 0 for any purpose here
        return np.exp(-np.clip((now - tau) / s, 0, 80))

    def mean_retention(self, now: float) -> float:
        """The pool's mean R(now): exact up to ``EXACT_MEAN_LIMIT`` samples; above, the mean of
        ``MEAN_SAMPLE`` evenly spaced samples (no randomness; standard error under 0.002, as
        every R is in [0, 1]), so the scheduler's check costs the same at any pool size."""
        if len(self) == 0:
            return 1.0
        if len(self) <= EXACT_MEAN_LIMIT:
            return float(self.retention(now).mean())
        positions = np.linspace(0, len(self) - 1, MEAN_SAMPLE).astype(np.int64)
        return float(self.retention(now, positions).mean())

    def update(self, ids, losses, now: float) -> None:
        """Spacing-effect update after the samples ``ids`` were replayed with ``losses``."""
        pos = self.positions(ids)
        if pos.size == 0:
            return
        losses = np.asarray(losses, dtype=np.float64)
        r = self.retention(now, pos)
        margin = self.p.recall_margin
        recalled = losses <= (self.p.recall_loss if margin is None else self.entry_loss[pos] + margin)
        grown = self.strength[pos] * (1.0 + self.p.alpha * (1.0 - r))
        shrunk = np.maximum(self.p.min_strength, self.p.beta * self.strength[pos])
        self.strength[pos] = np.where(recalled, grown, shrunk)
        self.tau[pos] = float(now)
        self.loss[pos] = losses
        self._observe_excess(pos, losses, now)

    def _observe_excess(self, pos: np.ndarray, losses: np.ndarray, now: float) -> None:
        """One excess observation per task among the replayed samples that have a reference (and a
        finite loss: one NaN would make every later fit of the forgetting model NaN)."""
        known = np.isfinite(self.reference[pos]) & np.isfinite(losses)
        if not known.any():
            return
        tasks, excess = self.task[pos][known], (losses - self.reference[pos])[known]
        for t in np.unique(tasks):
            at = tasks == t
            self.obs_step = np.append(self.obs_step, float(now))
            self.obs_task = np.append(self.obs_task, np.int32(t))
            self.obs_excess = np.append(self.obs_excess, float(excess[at].mean()))
            self.obs_samples = np.append(self.obs_samples, np.int32(at.sum()))

    def history(self) -> list[tuple[float, int, float, float]]:
        """Every excess observation so far of the tasks in this state, in time order: (time,
        task, the time the task ended, mean excess)."""
        ends = {t: self.task_end(t) for t in self.pooled_tasks()}
        return [
            (float(s), int(t), ends[int(t)], float(x))
            for s, t, x in zip(self.obs_step.tolist(), self.obs_task.tolist(), self.obs_excess.tolist())
            if int(t) in ends
        ]

    def pooled_tasks(self) -> list[int]:
        """The tasks with samples in this state, in order."""
        bounds = self.tasks()
        return list(bounds) if bounds else [int(t) for t in np.unique(self.task)]

    def tasks(self) -> dict[int, tuple[int, int]]:
        """Each task in the pool and its (start, stop) positions, if every task's samples are
        contiguous (as when a task's ids follow the previous task's, as in a run); else {}."""
        if self._task_bounds is None:
            self._task_bounds = {}
            if self.task.size and (np.diff(self.task) >= 0).all():
                starts = np.r_[0, np.flatnonzero(np.diff(self.task)) + 1]
                stops = np.r_[starts[1:], self.task.size]
                self._task_bounds = {int(self.task[a]): (int(a), int(b)) for a, b in zip(starts, stops)}
        return self._task_bounds

    def of_tasks(self, tasks) -> MemoryState:
        """The samples of ``tasks``: views of contiguous slices where possible (no copy of the pool)."""
        bounds = self.tasks()
        if bounds and len(tasks) == 1 and int(tasks[0]) in bounds:
            out = MemoryState(self.p)
            a, b = bounds[int(tasks[0])]
            for k in self.ARRAYS:
                setattr(out, k, getattr(self, k)[a:b])
            for k in self.HISTORY:  # views too: the observations of other tasks are skipped on reading
                setattr(out, k, getattr(self, k))
            return out
        return self.subset(np.isin(self.task, np.asarray(tasks)))

    def subset(self, mask: np.ndarray) -> MemoryState:
        """A copy holding the samples where ``mask`` is true (e.g. one task's samples), with
        the excess observations."""
        out = MemoryState(self.p)
        for k in self.ARRAYS:
            setattr(out, k, getattr(self, k)[mask])
        for k in self.HISTORY:
            setattr(out, k, getattr(self, k).copy())
        return out

    def state_dict(self) -> dict:
        return {k: getattr(self, k).copy() for k in (*self.ARRAYS, *self.HISTORY)}

    def load_state_dict(self, state: dict) -> None:
        """Also a state saved before reference losses existed: no references, no observations,
        and each sample taken to have entered when it was last trained."""
        fresh = MemoryState(self.p)
        for k in (*self.ARRAYS, *self.HISTORY):
            if k in state:
                setattr(self, k, np.asarray(state[k]).copy())
            elif k == "reference":
                self.reference = np.full(len(state["ids"]), np.nan)
            elif k == "entered":
                self.entered = np.asarray(state["tau"], dtype=np.float64).copy()
            else:
                setattr(self, k, getattr(fresh, k))
        self._task_bounds = None
