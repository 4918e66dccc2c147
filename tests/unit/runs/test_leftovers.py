"""leftovers.py: what a killed textclf left (temp files, staging folders, partial downloads) goes on the next run
or prune of the experiment; young temp files, live runs' files and other names stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from textclf_cli import files
from textclf_cli.runs.folders import create_run_dir, lock_run
from textclf_cli.runs.leftovers import ORPHAN_AGE_S, remove_data_leftovers
from textclf_cli.runs.prune import prune_runs
from textclf_cli.runs.status import COMPLETED, update_status


def touch(path: Path, age_s: float = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(b"half")
    when = time.time() - age_s
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def test_prune_removes_textclf_temp_files_nobody_can_be_writing(tmp_path: Path):
    experiment = tmp_path / "exp"
    dead = create_run_dir(tmp_path, "exp")
    update_status(dead, COMPLETED)
    live = create_run_dir(tmp_path, "exp")
    old = ORPHAN_AGE_S + 60
    orphans = [
        touch(dead / "checkpoints" / ".last.pt.k2j4h6g8.tmp"),  # young, but no process holds the run
        touch(dead / ".status.json.a1b2c3d4.tmp", old),
        touch(dead / "evaluation" / "test" / ".metrics.json.zz99yy88.tmp", old),
    ]
    os.symlink(dead.name, experiment / ".latest.4242.tmp")
    orphans.append(experiment / ".latest.4242.tmp")  # made under the experiment lock, which prune holds
    kept = [
        touch(dead / "evaluation" / "test" / ".report.txt.qq11ww22.tmp"),  # young outside checkpoints/: maybe in use
        touch(dead / "notes.tmp", old),  # not a textclf temp name
        touch(live / "checkpoints" / ".best.pt.m1n2b3v4.tmp"),  # its run is being trained
    ]
    lock = lock_run(live)
    try:
        assert prune_runs(experiment, keep=5) == []
    finally:
        lock.release()
    assert [path for path in orphans if path.exists() or path.is_symlink()] == []
    assert [path for path in kept if path.exists()] == kept


def test_staging_folders_and_partial_downloads_go_once_an_hour_old(tmp_path: Path):
    prepared, data = tmp_path / "prepared", tmp_path / "data"
    old = ORPHAN_AGE_S + 60
    staging = touch(prepared / ".0123abcd.x1y2z3w4" / "train.ids.npy", old).parent
    touch(staging, old)
    retired = touch(prepared / ".0123abcd.old.p9o8i7u6" / "0123abcd" / "meta.json", old).parent.parent  # --force's old copy
    touch(retired / "0123abcd", old)
    touch(retired, old)
    busy = touch(prepared / ".4567beef.q1w2e3r4" / "train.tmp")  # a prepare still writing into it
    touch(busy.parent, old)
    part = touch(data / f".imdb.tar.gz.a1s2d3f4{files.DOWNLOAD_SUFFIX}", old)
    finished = touch(prepared / "0123abcd" / "meta.json", old).parent
    mine = touch(data / ".hidden-notes", old)
    assert sorted(remove_data_leftovers(prepared, data)) == sorted([staging, retired, part])
    assert busy.exists() and finished.exists() and mine.exists()
