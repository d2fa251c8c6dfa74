"""Search spaces for sweeps: a small YAML vocabulary over dotted config keys.

    space = load_space("tune_spaces/mssr.yaml", base_config="configs/demo.yaml")
    space.params   # {"replay.mssr.decay": Param("loguniform", [0.005, 0.1]), ...}

A space file maps config keys to one distribution each (or to a plain value, fixed for
every trial):

.. code-block:: yaml

    replay.strategy: mssr                                # fixed
    replay.mssr.decay: {loguniform: [0.005, 0.1]}        # log-uniform in [low, high]
    replay.mssr.growth: {uniform: [1.2, 3.0]}            # uniform in [low, high]
    replay.mssr.initial_interval: {randint: [1, 8]}      # integer in [low, high], both included
    replay.mssr.kappa: {choice: [1.0, 2.0, 4.0]}         # one of these, at random
    replay.samples_per_event: {grid: [2, 4]}             # every one of these (a grid axis)

Everything is checked before a trial starts: the key exists (unknown keys get the nearest
valid one), the distribution is one of the five, its bounds are ordered (and positive for
``loguniform``), and every bound, choice and grid value is accepted by the config itself,
validated against the base config (so ``replay.mssr.decay: {uniform: [-1, 1]}`` is refused).
Errors name the file and line. ``pipelines/tune.py`` maps a space onto ``ray.tune``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from mssr.config import load_config
from mssr.errors import ConfigError, did_you_mean
from mssr.strategies import build_strategy

KINDS = ("choice", "uniform", "loguniform", "randint", "grid")


@dataclass(frozen=True)
class Param:
    kind: str  # one of KINDS, or "value" (fixed)
    values: list  # [low, high] for uniform/loguniform/randint; the options for choice/grid; [v] for value


@dataclass(frozen=True)
class SearchSpace:
    path: str
    params: dict[str, Param]

    def grid_size(self) -> int:
        """Trials in one pass over the grid axes (1 without grid axes)."""
        n = 1
        for p in self.params.values():
            if p.kind == "grid":
                n *= len(p.values)
        return n


def trial_overrides(values: dict[str, Any]) -> list[str]:
    """``key=value`` overrides of one trial's values (JSON scalars, which YAML reads back as they were)."""
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def _lines(text: str) -> dict[str, int]:
    """Line (1-based) of each top-level key, for error messages."""
    node = yaml.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def _parse_param(spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        if isinstance(spec, list):
            raise ConfigError(f"{where}: a list needs a distribution, e.g. {{choice: {json.dumps(spec)}}}")
        return Param("value", [spec])
    if len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution ({', '.join(KINDS)}), got {sorted(spec)}")
    kind, values = next(iter(spec.items()))
    if kind not in KINDS:
        hint = did_you_mean(str(kind), KINDS, otherwise=f" (known: {', '.join(KINDS)})")
        raise ConfigError(f"{where}: unknown distribution {kind!r}{hint}")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {kind} needs a non-empty list, e.g. {kind}: [1, 2]")
    if kind in ("uniform", "loguniform", "randint"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{where}: {kind} needs two numbers [low, high], got {values}")
        low, high = values
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise ConfigError(f"{where}: randint needs two integers [low, high], got {values}")
        if not low < high:
            raise ConfigError(f"{where}: {kind} needs low < high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"{where}: loguniform needs low > 0, got {low}")
    return Param(kind, list(values))


def load_space(
    path: str | Path, base_config: Optional[str | Path] = None, base_overrides: Optional[list[str]] = None
) -> SearchSpace:
    """Read and check a space file against the base config; raises ConfigError naming file:line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: search space file not found")
    text = p.read_text(encoding="utf-8")
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{p}: expected a mapping of config keys to distributions")
    lines = _lines(text)
    where = {str(k): f"{p}:{lines.get(str(k), '?')}: {k}" for k in tree}
    params = {str(k): _parse_param(spec, where[str(k)]) for k, spec in tree.items()}
    # every value a trial can get (bounds for ranges) must be one the config accepts, together
    # with the other keys of the space (each at its first value)
    first = {k: prm.values[0] for k, prm in params.items()}
    for key, param in params.items():
        for value in param.values:
            trial = {**first, key: value}
            try:
                cfg = load_config(base_config, [*(base_overrides or []), *trial_overrides(trial)])
                build_strategy(cfg.replay.strategy, cfg.replay)  # the strategy, sampler and scheduler names
            except ConfigError as e:
                detail = str(e).splitlines()[0].split(": ", 1)[-1]  # drop the "<source> + overrides" prefix
                # another key's first value may be the one refused: name that key's line
                culprit = next((k for k in params if detail.startswith(f"{k}:")), key)
                refused = value if culprit == key else first[culprit]
                raise ConfigError(f"{where[culprit]}: {json.dumps(refused)} is not accepted: {detail}") from None
    return SearchSpace(str(p), params)
