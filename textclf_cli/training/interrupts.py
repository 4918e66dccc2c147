"""SIGINT/SIGTERM outside the epoch loop (preparing data, building the model): stop at once with exit 130.

The epoch loop has its own, gentler handler (loop.SignalGuard finishes the current batch); before it starts
there is nothing to finish, so a signal raises here and the train stage marks the run interrupted.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class SignalInterrupt(KeyboardInterrupt):
    """A KeyboardInterrupt for SIGTERM too, so that `except Exception` code lets it through like Ctrl-C."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise(signum: int, frame: Any) -> None:
    raise SignalInterrupt(signal.Signals(signum).name)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _raise)
        except ValueError:  # not the main thread (e.g. a test runner thread): leave the handlers alone
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
