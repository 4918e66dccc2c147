"""Fetch a dataset archive when it is missing, and check an archive's sha256 against data.sha256."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from textclf_cli.console import log
from textclf_cli.errors import DataError

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, sha256: str | None) -> str:
    """Download url to target (temp file + rename) and return its sha256, hashed while it streams in; a
    checksum mismatch deletes the file and fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"downloading {url} -> {target}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            actual = _copy_with_progress(response, out, total)
        if sha256 and not same_digest(actual, sha256):
            raise DataError(
                f"{url}: checksum mismatch (sha256 {actual}, expected {sha256} in data.sha256); "
                f"the download was deleted, try again or check data.url"
            )
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"{url}: download failed ({exc}); download it by hand to {target}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return actual


def same_digest(actual: str, expected: str) -> bool:
    return actual.lower() == expected.lower()


def check_archive(path: Path, actual: str, expected: str | None) -> None:
    """An archive already on disk (symlinked in, or damaged since its download) must match data.sha256 as a
    download must; it is the user's file, so it is named, not deleted."""
    if expected and not same_digest(actual, expected):
        raise DataError(
            f"{path}: checksum mismatch (sha256 {actual}, expected {expected} in data.sha256); the file is not "
            f"the archive data.url serves, or was damaged: replace it (delete it to download it again), or fix "
            f"data.sha256"
        )


def warn_if_unverified(url: str | None, sha256: str | None) -> None:
    """One warning line when a download could not be told apart from a tampered one."""
    problems = ([] if sha256 else ["data.sha256 is not set, so it is not checked"]) + (
        ["it is plain http://, open to tampering on the way (use https://)"] if url and url.startswith("http://")
        else [])
    if url and problems:
        log.warning(f"data.url {url}: {'; '.join(problems)}")


def _copy_with_progress(response, out, total: int) -> str:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from textclf_cli.console import is_interactive, stderr

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                  console=stderr, disable=not is_interactive()) as bar:
        task = bar.add_task("download", total=total or None)
        digest = hashlib.sha256()
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            digest.update(block)
            bar.update(task, advance=len(block))
    return digest.hexdigest()
