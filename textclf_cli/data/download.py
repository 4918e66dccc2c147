"""Fetch a dataset archive when it is missing, verifying its sha256 before it is used."""

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


def download(url: str, target: Path, sha256: str | None) -> Path:
    """Download url to target (temp file + rename); a checksum mismatch deletes the file and fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info(f"downloading {url} -> {target}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            _copy_with_progress(response, out, total)
        if sha256:
            actual = sha256_of(tmp)
            if actual.lower() != sha256.lower():
                raise DataError(
                    f"{url}: checksum mismatch (sha256 {actual}, expected {sha256} in data.sha256); "
                    f"the download was deleted, try again or check data.url"
                )
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"{url}: download failed ({exc}); download it by hand to {target}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _copy_with_progress(response, out, total: int) -> None:
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from textclf_cli.console import is_interactive, stderr

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                  console=stderr, disable=not is_interactive()) as bar:
        task = bar.add_task("download", total=total or None)
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            bar.update(task, advance=len(block))
