"""File locks that work where clusters keep their files: flock on a regular file, and one clear error where the
file system cannot lock at all (NFS without a lock daemon, Lustre mounted without -o flock)."""

from __future__ import annotations

import os
from pathlib import Path

from textclf_cli.errors import RunError


def open_lock_file(path: Path, write: bool = True) -> int:
    """A descriptor of the lock file, created if missing. NFS grants an exclusive lock only on a file opened for
    writing, so the lock holder opens it read-write; a prober may open it read-only (a shared lock is enough)."""
    flags = (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY) | os.O_CLOEXEC
    return os.open(path, flags, 0o666)  # the umask applies: as shareable as the rest of the runs folder


def flock(fd: int, path: Path, exclusive: bool = True, blocking: bool = False) -> bool:
    """True once locked; False when another process holds the lock (non-blocking only). A file system that
    cannot lock raises RunError naming it: guessing (every run live, or none) could delete a live run."""
    import fcntl

    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, mode)
    except BlockingIOError:
        return False
    except OSError as exc:
        raise RunError(unsupported(path, exc)) from None
    return True


def unsupported(path: Path, exc: OSError) -> str:
    return (f"{path}: cannot lock this file ({exc.strerror or exc}): its file system does not support flock, which "
            f"textclf needs to tell live runs from dead ones; put output.runs_dir on a local disk, or on NFS with "
            f"its lock service running, or on Lustre mounted with -o flock")


def same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the locked file (a prune renames a run folder away while holding its lock)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
