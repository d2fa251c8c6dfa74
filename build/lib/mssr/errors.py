"""User-facing errors: bad configs, bad data, missing models.

The CLI prints a ``UserError`` as one line and exits with code 2, no traceback. Anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error the user can fix (bad input, missing file); reported without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """The run configuration is invalid."""


class DataError(UserError):
    """A task file is missing or malformed; the message starts with ``file:line:``."""


class ModelError(UserError):
    """The model cannot be found or loaded."""
