"""User-facing errors: bad configs, bad data, missing models.

The CLI prints a ``UserError`` as one line and exits with code 2, no traceback. Anything
else is a bug and keeps its traceback.
"""

import difflib
from typing import Iterable


class UserError(Exception):
    """An error the user can fix (bad input, missing file); reported without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """The run configuration is invalid."""


class DataError(UserError):
    """A task file is missing or malformed; the message starts with ``file:line:``."""


class ModelError(UserError):
    """The model cannot be found or loaded."""


class RunFailed(UserError):
    """The run stopped on a failure of its own (a worker that kept crashing, beyond
    ``train.max_failures``): reported in one line, with where the full logs are, exit code 1.
    Everything up to the last checkpoint is kept."""

    exit_code = 1


def did_you_mean(name: str, valid: Iterable[str], otherwise: str = "") -> str:
    """``; did you mean 'strategy'?`` for the valid name nearest to ``name``, else ``otherwise``.

    >>> did_you_mean("stratgy", ["strategy", "sampler"])
    "; did you mean 'strategy'?"
    """
    near = difflib.get_close_matches(str(name), list(valid), n=1)
    return f"; did you mean {near[0]!r}?" if near else otherwise
