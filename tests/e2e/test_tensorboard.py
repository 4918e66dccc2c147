"""`output.tensorboard: true`: per-epoch scalars equal to history.csv and the final hparams, in <run>/tensorboard/."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import run_cli, tiny_config

SCALARS = {"loss/train": "train_loss", "accuracy/train": "train_accuracy", "loss/valid": "valid_loss",
           "accuracy/valid": "valid_accuracy", "f1_macro/valid": "valid_f1_macro", "lr": "lr", "seconds": "seconds"}


def test_tensorboard_scalars_and_hparams(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    config = tiny_config(tmp_path, output={"runs_dir": str(tmp_path / "runs"), "tensorboard": True})
    result = run_cli("train", str(config), "--set", "model.dropout=0.3")
    assert result.exit_code == 0, result.output
    run_dir = Path(result.stdout.strip())
    history = pd.read_csv(run_dir / "history.csv")

    events = EventMultiplexer().AddRunsFromDirectory(str(run_dir / "tensorboard"))
    events.Reload()
    runs = events.Runs()
    assert list(runs) == ["."]  # scalars and hparams in the one folder, no timestamped subfolder
    scalars = events.GetAccumulator(".")
    assert set(scalars.Tags()["scalars"]) == set(SCALARS) | {"hparam/best_epoch", "hparam/valid_loss",
                                                             "hparam/valid_accuracy", "hparam/valid_f1_macro"}
    for tag, column in SCALARS.items():
        points = scalars.Scalars(tag)
        assert [point.step for point in points] == history["epoch"].tolist()
        assert [point.value for point in points] == pytest.approx(history[column].tolist(), rel=1e-6)
    hparams = scalars.PluginTagToContent("hparams")
    assert hparams, "no hparams summary"
    session_start = next(content for tag, content in hparams.items() if "session_start" in tag)
    assert b"model.dropout" in session_start and b"train.lr" in session_start


def test_missing_tensorboard_is_a_clear_error_before_any_work(tmp_path: Path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    config = tiny_config(tmp_path, output={"runs_dir": str(tmp_path / "runs"), "tensorboard": True})
    result = run_cli("train", str(config))
    assert result.exit_code == 2
    assert "output.tensorboard: true needs the tensorboard package" in result.stderr
    assert "[tensorboard]" in result.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "prepared").exists()
