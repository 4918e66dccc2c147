"""An ensemble's members stop one by one (validation.py): a member out of patience goes back to its best weights
and trains no further, the others go on, and a resumed run keeps it stopped (or keeps counting)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import run_cli, tiny_config
from textclf_cli.runs.checkpoint import load_checkpoint
from textclf_cli.training import scoring as validation


def train(config: Path, *args: str) -> Path:
    result = run_cli("train", str(config), "--quiet", *args)
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def weights(run_dir: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = load_checkpoint(run_dir / "checkpoints/last.pt")["state_dict"]
    return {name: tensor for name, tensor in state.items() if name.startswith(prefix)}


def decide(monkeypatch: pytest.MonkeyPatch, verdicts: list[bool]) -> None:
    """validation.improved answers `verdicts` in order (each epoch: the network, then the n-gram model)."""
    answers = iter(verdicts)
    monkeypatch.setattr(validation, "improved", lambda scores, best, monitor: next(answers))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    # a CNN, with the n-gram model beside it by default; members stop after 1 epoch without improvement
    return tiny_config(tmp_path, train={"epochs": 3, "early_stopping_patience": 1})


def test_a_stopped_member_keeps_its_best_weights_while_the_other_trains_on(config: Path, monkeypatch) -> None:
    decide(monkeypatch, [True, True])
    one_epoch = train(config, "--set", "train.epochs=1")
    decide(monkeypatch, [True, True, False, True, True])  # the network stops after epoch 2, the n-gram model not
    run_dir = train(config)
    assert len(pd.read_csv(run_dir / "history.csv")) == 3
    for name, tensor in weights(one_epoch, "network.").items():  # back to epoch 1, untouched since
        torch.testing.assert_close(weights(run_dir, "network.")[name], tensor)
    assert not torch.equal(weights(run_dir, "ngram.weight")["ngram.weight"],
                           weights(one_epoch, "ngram.weight")["ngram.weight"])
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "ensemble member network stopped improving: back to its weights of epoch 1" in log
    assert "ngram stopped" not in log
    members = load_checkpoint(run_dir / "checkpoints/last.pt")["training"]["state"]["members"]
    assert [member["stopped"] for member in members] == [True, False]


def test_the_run_ends_when_every_member_has_stopped(config: Path, monkeypatch) -> None:
    decide(monkeypatch, [True, True, False, False])
    run_dir = train(config)
    assert len(pd.read_csv(run_dir / "history.csv")) == 2
    assert "every ensemble member has stopped improving" in (run_dir / "train.log").read_text(encoding="utf-8")


def test_a_resumed_run_keeps_a_stopped_member_stopped(config: Path, monkeypatch) -> None:
    decide(monkeypatch, [True, True, False, True, True])
    whole = train(config)
    decide(monkeypatch, [True, True, False, True])
    first = train(config, "--set", "train.epochs=2")
    decide(monkeypatch, [True])  # epoch 3 asks about the n-gram model only
    resumed = train(config, "--resume", str(first))
    assert resumed == first
    for prefix in ("network.", "ngram."):
        for name, tensor in weights(whole, prefix).items():
            torch.testing.assert_close(weights(resumed, prefix)[name], tensor)


def test_patience_two_survives_a_resume_between_the_bad_epochs(config: Path, monkeypatch) -> None:
    patience = ("--set", "train.early_stopping_patience=2")
    decide(monkeypatch, [True, True])
    one_epoch = train(config, "--set", "train.epochs=1", *patience)
    decide(monkeypatch, [True, True, False, True])
    first = train(config, "--set", "train.epochs=2", *patience)  # the network is one bad epoch in
    decide(monkeypatch, [False, True])  # a second bad epoch: back to epoch 1, from the weights saved in last.pt
    resumed = train(config, "--resume", str(first), *patience)
    for name, tensor in weights(one_epoch, "network.").items():
        torch.testing.assert_close(weights(resumed, "network.")[name], tensor)
    assert "back to its weights of epoch 1" in (resumed / "train.log").read_text(encoding="utf-8")


def test_no_patience_no_member_stops(config: Path, monkeypatch) -> None:
    decide(monkeypatch, [])  # never asked
    run_dir = train(config, "--set", "train.early_stopping_patience=null")
    assert len(pd.read_csv(run_dir / "history.csv")) == 3
    assert "stopped improving" not in (run_dir / "train.log").read_text(encoding="utf-8")


def test_improved_while_the_metric_rises_or_the_loss_falls() -> None:
    best = {"metric": 0.8, "loss": 0.5}
    assert validation.improved({"accuracy": 0.8, "loss": 0.5}, None, "valid_accuracy")
    assert validation.improved({"accuracy": 0.81, "loss": 0.6}, best, "valid_accuracy")
    assert validation.improved({"accuracy": 0.79, "loss": 0.45}, best, "valid_accuracy")
    assert not validation.improved({"accuracy": 0.8, "loss": 0.5}, best, "valid_accuracy")
    assert validation.best_of({"accuracy": 0.79, "loss": 0.45}, best, "valid_accuracy") == {"metric": 0.8, "loss": 0.45}
