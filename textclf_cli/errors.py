"""The project's exception types; each carries the exit code the CLI returns for it."""

from __future__ import annotations


class TextclfError(Exception):
    """A problem the user can fix; its message is one line naming the file, key or row and the fix."""

    exit_code = 1


class ConfigError(TextclfError):
    """Bad config file, bad --set override or bad command-line usage."""

    exit_code = 2


class DataError(TextclfError):
    """Unreadable or invalid input data (names the file and line/row)."""

    exit_code = 3


class RunError(TextclfError):
    """A run folder or checkpoint that cannot be used, or a training run that went wrong."""

    exit_code = 4


class CheckFailed(TextclfError):
    """`textclf check --strict` found an error-level problem in the data (leakage, an unseen label, ...)."""

    exit_code = 5


class Interrupted(TextclfError):
    """Ctrl-C or SIGTERM; the run was saved and marked interrupted."""

    exit_code = 130

