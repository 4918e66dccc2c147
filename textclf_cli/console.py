"""Where messages go: rich progress and tables on a terminal, plain timestamped lines otherwise.

Logs and progress go to stderr so that stdout carries only results (predictions, the run folder).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from pathlib import Path

from rich.console import Console

LOGGER_NAME = "textclf"
log = logging.getLogger(LOGGER_NAME)

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

_quiet = False

# C0 and C1 controls and DEL (ESC starts a terminal escape sequence), and the bidirectional overrides that make
# a text display as something else; line breaks and tabs are kept as spaces
HIDDEN_CHARS = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
SPACE_CHARS = re.compile("[\t\n\x0c\r]")


def table_cell(value: object) -> str:
    """A text, label or folder name as a rich table shows it: the characters themselves, never read as markup
    (a forum post's `[/quote]`) and never a control sequence that reaches the terminal."""
    from rich.markup import escape

    return escape(SPACE_CHARS.sub(" ", HIDDEN_CHARS.sub("", str(value))))


def is_interactive() -> bool:
    """Progress bars only when a person is watching both streams."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time of each record (test runners swap it per command)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(quiet: bool = False) -> None:
    global _quiet
    _quiet = quiet
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        if getattr(handler, "_textclf_console", False):
            log.removeHandler(handler)
    handler = _CurrentStderrHandler()
    handler._textclf_console = True  # type: ignore[attr-defined]
    handler.setLevel(logging.WARNING if quiet else logging.INFO)
    fmt = "%(message)s" if is_interactive() else "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%dT%H:%M:%S"))
    log.addHandler(handler)


def add_log_file(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.setLevel(logging.INFO)
    log.addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler) -> None:
    log.removeHandler(handler)
    handler.close()


def result(line: str) -> None:
    """The one line a script reads on stdout (printed even with --quiet)."""
    print(line, flush=True)


class EpochProgress:
    """A rich progress bar on a terminal; silent otherwise (callers log one line per epoch)."""

    def __init__(self, total: int, description: str) -> None:
        self.total = total
        self.description = description
        self._bar = None
        self._task = None

    def __enter__(self) -> EpochProgress:
        if not _quiet and is_interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=stderr,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total, status="")
        return self

    def advance_to(self, completed: int, status: str = "") -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, status=status)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)


class RateProgress:
    """Texts done and texts/s of a stream of unknown length: a rich bar (by the share of the input read) on a
    terminal; otherwise a plain log line every `interval` seconds and one at the end."""

    def __init__(self, description: str, interval: float = 30.0) -> None:
        self.description, self.interval = description, interval
        self.clock = Stopwatch()
        self._bar = None
        self._task = None
        self._logged_at = 0.0
        self.done = 0

    def __enter__(self) -> RateProgress:
        if not _quiet and is_interactive():
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=stderr,
                                 transient=True)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=1.0, status="")
        return self

    def update(self, done: int, fraction: float | None = None) -> None:
        self.done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=fraction or 0.0, status=self.status())
        elif self.clock.seconds - self._logged_at >= self.interval:
            self._logged_at = self.clock.seconds
            share = f" ({fraction:.0%} of the input)" if fraction is not None else ""
            log.info(f"{self.description}: {self.status()}{share}")

    def status(self) -> str:
        return f"{self.done:,} texts, {self.done / max(self.clock.seconds, 1e-9):,.0f} texts/s"

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        if exc_type is None:
            log.info(f"{self.description}: {self.status()} in {self.clock.seconds:.1f}s")


class Stopwatch:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
