"""train.refit: after validation chose the epochs (and the ensemble's mix), a fresh model trains on train + valid for
that long and becomes best.pt; the model chosen on validation stays as selected.pt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import textclf_cli.training.refit as refit_module
from tests.conftest import run_cli, tiny_config, tiny_examples, write_table
from tests.e2e.test_multilabel import multilabel_config
from textclf_cli.config import TrainConfig
from textclf_cli.data.prepared import EncodedSplit, PreparedData
from textclf_cli.runs.checkpoint import load_checkpoint
from textclf_cli.training.refit import with_valid_in_train
from textclf_cli.training.state import StopRequested

N_TRAIN = 60  # tiny_config's training file; a fifth of it is carved off for validation


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def train(config: Path, *args: str) -> Path:
    return Path(ok(run_cli("train", str(config), "--quiet", *args)).stdout.strip().splitlines()[-1])


def checkpoints(run_dir: Path) -> dict[str, dict]:
    return {path.stem: load_checkpoint(path) for path in sorted((run_dir / "checkpoints").glob("*.pt"))}


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text(encoding="utf-8"))


def refit_config(tmp_path: Path, **train: object) -> Path:
    return tiny_config(tmp_path, train={"epochs": 3, "early_stopping_patience": 1, "refit": "auto", **train})


def test_auto_refits_when_validation_is_carved_from_train_and_keeps_the_selected_model(tmp_path: Path) -> None:
    run_dir = train(refit_config(tmp_path))
    saved = checkpoints(run_dir)
    assert sorted(saved) == ["best", "last", "selected"]
    best, selected, last = saved["best"], saved["selected"], saved["last"]
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert resolved["train"]["refit"] is True  # the run records what auto chose

    chosen = [member["epochs_in_best"] for member in last["training"]["state"]["members"]]
    assert best["refit"]["epochs"] == dict(zip(["network", "ngram"], chosen))
    assert best["refit"]["texts"] == N_TRAIN and "refit" not in selected
    assert status(run_dir)["refit"] == best["refit"]
    # validation's choices carry over: the epoch and metrics it recorded, the ensemble's mix
    assert (best["epoch"], best["metrics"]) == (selected["epoch"], selected["metrics"])
    assert torch.equal(best["state_dict"]["mix"], selected["state_dict"]["mix"])
    assert not torch.equal(best["state_dict"]["network.embedding.weight"],
                           selected["state_dict"]["network.embedding.weight"])
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert f"refit on train + valid ({N_TRAIN} texts)" in log and f"refit epoch {max(chosen)}/{max(chosen)} " in log

    # selected.pt is the model validation chose: its validation figures are the history's best
    history = pd.read_csv(run_dir / "history.csv")
    honest = ok(run_cli("evaluate", str(run_dir / "checkpoints/selected.pt"), "--split", "valid", "--quiet"))
    metrics = json.loads((run_dir / "evaluation/valid-selected/metrics.json").read_text(encoding="utf-8"))
    assert metrics["f1_macro"] == pytest.approx(history["valid_f1_macro"].max(), abs=1e-6), honest.output
    warned = ok(run_cli("evaluate", str(run_dir), "--split", "valid"))
    assert "was refitted on train + valid (train.refit): its validation figures are not held out" in warned.stderr


def test_auto_keeps_a_validation_file_held_out(tmp_path: Path) -> None:
    valid = write_table(tmp_path / "data/valid.csv", tiny_examples(20, seed=3))
    config = tiny_config(tmp_path, train={"epochs": 2, "refit": "auto"}, data={"valid": str(valid)})
    run_dir = train(config)
    assert yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"]["refit"] is False
    assert sorted(checkpoints(run_dir)) == ["best", "last"] and status(run_dir)["refit"] is None
    assert "refit" not in checkpoints(run_dir)["best"]


def test_each_member_trains_for_its_own_chosen_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refit stops a member where validation stopped it; here the chosen epochs are forced to differ."""
    trained_members = []
    real_epoch = refit_module.train_one_epoch

    def recording_epoch(trainer, epoch):
        trained_members.append([not stopped for stopped in trainer.plain_model.stopped])
        return real_epoch(trainer, epoch)

    def chosen_apart(state):  # the network's best weights from epoch 1, the n-gram model's from epoch 3
        for member, epochs in zip(state.members, [1, 3]):
            member.epochs_in_best = epochs

    monkeypatch.setattr(refit_module, "train_one_epoch", recording_epoch)
    monkeypatch.setattr("textclf_cli.training.loop.record_epochs_in_best", chosen_apart)
    run_dir = train(tiny_config(tmp_path, train={"epochs": 3, "refit": True}))
    assert checkpoints(run_dir)["best"]["refit"]["epochs"] == {"network": 1, "ngram": 3}
    assert trained_members == [[True, True], [False, True], [False, True]]


def test_an_interrupted_refit_keeps_the_selected_model_and_resumes_into_the_refit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = refit_config(tmp_path, epochs=2, early_stopping_patience=None)

    def interrupted(trainer, epoch):
        raise StopRequested("SIGINT")

    with monkeypatch.context() as patch:
        patch.setattr(refit_module, "train_one_epoch", interrupted)
        result = run_cli("train", str(config))
    assert result.exit_code == 130
    [run_dir] = [path for path in (tmp_path / "runs/tiny").iterdir() if not path.is_symlink()]
    assert "interrupted by SIGINT during the refit on train + valid" in result.stderr
    assert "best.pt holds the model chosen on validation (epoch" in result.stderr
    record = status(run_dir)
    assert record["status"] == "interrupted" and "during the refit on train + valid" in record["message"]
    assert sorted(checkpoints(run_dir)) == ["best", "last"] and "refit" not in checkpoints(run_dir)["best"]

    resumed = ok(run_cli("train", str(config), "--resume", str(run_dir)))
    assert "INFO epoch " not in resumed.stderr and "INFO refit epoch 1/" in resumed.stderr  # no selection epoch again
    assert " (selected.pt); best.pt refitted on train + valid\n" in resumed.stderr
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2]
    assert status(run_dir)["status"] == "completed" and sorted(checkpoints(run_dir)) == ["best", "last", "selected"]


def test_resuming_a_refitted_run_for_more_epochs_starts_from_the_selected_model(tmp_path: Path) -> None:
    config = refit_config(tmp_path, epochs=2, early_stopping_patience=None)
    run_dir = train(config)
    first_refit = checkpoints(run_dir)["best"]["refit"]
    train(config, "--resume", str(run_dir), "--set", "train.epochs=3")
    saved = checkpoints(run_dir)
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1, 2, 3]
    assert "refit" not in saved["selected"] and saved["selected"]["epoch"] == status(run_dir)["best_epoch"]
    assert saved["best"]["refit"]["texts"] == first_refit["texts"]
    assert saved["best"]["refit"]["epochs"]["ngram"] == status(run_dir)["best_epoch"]


def test_refit_is_off_by_default_and_off_writes_no_selected_model(tmp_path: Path) -> None:
    assert TrainConfig().refit is False
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1, "refit": False}))
    assert sorted(checkpoints(run_dir)) == ["best", "last"] and "refit epoch" not in (run_dir / "train.log").read_text()


def test_multilabel_refit_keeps_the_thresholds_chosen_on_validation(tmp_path: Path) -> None:
    run_dir = train(multilabel_config(tmp_path, threshold="per_label", refit=True))
    saved = checkpoints(run_dir)
    from textclf_cli.training.calibrate import moved_threshold

    chosen = saved["selected"]["thresholds"]
    assert chosen != [0.5] * len(chosen)  # the refit keeps them, moved by the calibration (the same decisions)
    assert saved["best"]["thresholds"] == [moved_threshold(t, saved["best"]["temperature"]) for t in chosen]
    assert saved["best"]["refit"]["texts"] > 0


def test_with_valid_in_train_appends_the_validation_texts() -> None:
    def split(texts: list[list[int]], labels: list[int]) -> EncodedSplit:
        offsets = np.cumsum([0] + [len(text) for text in texts])
        return EncodedSplit(np.array([i for text in texts for i in text], dtype=np.int32), offsets, np.array(labels))

    data = PreparedData(Path("."), [], ["a", "b"], None, {"train": split([[1, 2], [3]], [0, 1]),
                                                           "valid": split([[4, 5, 6], []], [1, 0])}, {})
    both = with_valid_in_train(data).splits["train"]
    texts = [both.ids[both.offsets[i]:both.offsets[i + 1]].tolist() for i in range(len(both))]
    assert texts == [[1, 2], [3], [4, 5, 6], []] and both.targets.tolist() == [0, 1, 1, 0]
    assert len(data.splits["train"]) == 2  # the prepared data itself is untouched
