"""Atomic writes: a failed write leaves the old file and no temp file; new files get the usual permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import tiny_config
from textclf_cli.atomic import symlink_atomic, write_atomic, write_json_atomic
from textclf_cli.config import load_config
from textclf_cli.data.prepared import is_prepared
from textclf_cli.prepare import prepare


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"status": "completed"})

    def half_then_crash(handle):
        handle.write(b'{"status": "runn')
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of a checkpoint

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half_then_crash)
    assert json.loads(path.read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "metrics.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_symlink_atomic_replaces_the_pointer(tmp_path):
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-2").mkdir()
    symlink_atomic(tmp_path / "latest", "run-1")
    symlink_atomic(tmp_path / "latest", "run-2")
    assert os.readlink(tmp_path / "latest") == "run-2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run-1", "run-2"]


def test_prepared_data_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    from textclf_cli import prepare as prepare_stage

    config = load_config(tiny_config(tmp_path, n_train=20, n_test=6), [f"data.prepared_dir={tmp_path / 'prepared'}"])
    real_save = prepare_stage.save_array

    def crash_on_labels(path, array):
        if path.name.endswith(".labels.npy"):
            raise OSError("disk full")
        real_save(path, array)

    monkeypatch.setattr(prepare_stage, "save_array", crash_on_labels)
    with pytest.raises(OSError):
        prepare(config)
    assert list((tmp_path / "prepared").iterdir()) == []  # no key folder, no staging folder left

    monkeypatch.setattr(prepare_stage, "save_array", real_save)
    old = os.umask(0o022)
    try:
        root = prepare(config).root
    finally:
        os.umask(old)
    assert is_prepared(root) and stat.S_IMODE(root.stat().st_mode) == 0o755


def test_replacing_a_private_file_keeps_it_private(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text("{}")
    path.chmod(0o600)
    write_json_atomic(path, {"token": "x"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # not widened to the umask's 0644
    path.chmod(0o640)
    write_json_atomic(path, {})
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
