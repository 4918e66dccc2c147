"""checkpoint.py: a self-contained round trip, plain weight names, and clear errors for foreign files."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from textclf_cli.data.text import TokenizerSettings
from textclf_cli.errors import RunError
from textclf_cli.models.build import build_model
from textclf_cli.runs.checkpoint import (
    CHECKPOINT_VERSION,
    CheckpointMeta,
    load_checkpoint,
    load_model,
    new_checkpoint,
    save_checkpoint,
)
from textclf_cli.training.resume import restore_training_state

VOCAB = ["<pad>", "<unk>", "great", "awful", "film"]
KWARGS = {"embedding_dim": 8, "hidden_size": 4, "num_layers": 1, "bidirectional": True, "dropout": 0.1,
          "pooling": "max"}


def info() -> CheckpointMeta:
    return CheckpointMeta(model_type="lstm", model_kwargs=KWARGS, vocab=VOCAB, labels=["neg", "pos"],
                          tokenizer=TokenizerSettings(kind="regexp"), max_length=20, truncate="tail",
                          config={"experiment": "x"}, versions={"textclf": "0.1.0", "torch": "2.13.0"},
                          prepared_fingerprint=None, task="multiclass", label_separator="|")


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("lstm", len(VOCAB), 2, KWARGS).eval()


@pytest.fixture
def saved(tmp_path: Path, model: nn.Module) -> Path:
    path = tmp_path / "checkpoints/best.pt"
    save_checkpoint(path, new_checkpoint(model, info(), epoch=3))
    return path


def test_round_trip_restores_weights_and_everything_predict_needs(saved: Path, model: nn.Module) -> None:
    loaded = load_model(saved, torch.device("cpu"))
    assert (loaded.vocab, loaded.labels, loaded.max_length, loaded.truncate) == (VOCAB, ["neg", "pos"], 20, "tail")
    assert loaded.tokenizer == TokenizerSettings(kind="regexp")
    assert loaded.checkpoint["epoch"] == 3 and loaded.path == saved
    assert not loaded.model.training
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)
    token_ids, lengths = torch.tensor([[2, 4, 3], [3, 0, 0]]), torch.tensor([3, 1])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(token_ids, lengths), model(token_ids, lengths))


def test_the_file_is_plain_tensors_and_values(saved: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)  # would raise on any pickled Python object
    assert checkpoint["format"] == "textclf-checkpoint"
    assert all(tensor.device.type == "cpu" for tensor in checkpoint["state_dict"].values())
    assert list(saved.parent.iterdir()) == [saved]  # the atomic write left no temp file


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel (.module) and torch.compile (._orig_mod)."""

    def __init__(self, inner: nn.Module, attribute: str) -> None:
        super().__init__()
        setattr(self, attribute, inner)


@pytest.mark.parametrize("attributes", [["module"], ["_orig_mod"], ["module", "_orig_mod"], ["_orig_mod", "module"]])
def test_state_dict_names_carry_no_wrapper_prefix(tmp_path: Path, model: nn.Module, attributes: list[str]) -> None:
    wrapped: nn.Module = model
    for attribute in attributes:
        wrapped = Wrapper(wrapped, attribute)
    assert all(name.startswith(attributes[-1] + ".") for name in wrapped.state_dict())
    checkpoint = new_checkpoint(wrapped, info())
    assert list(checkpoint["state_dict"]) == list(model.state_dict())
    path = tmp_path / "wrapped.pt"
    save_checkpoint(path, checkpoint)
    load_model(path, torch.device("cpu"))  # strict load into a plain model


class Foreign:
    pass


def write_foreign_pickle(path: Path) -> None:
    torch.save({"format": "textclf-checkpoint", "model": Foreign()}, path)


def write_plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))


def write_other_tools_checkpoint(path: Path) -> None:
    torch.save({"model_state": {"w": torch.zeros(2)}}, path)


def write_text(path: Path) -> None:
    path.write_text("not a checkpoint\n")


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (write_foreign_pickle, "holds Python objects that are not plain tensors/values"),
        (write_plain_pickle, "truncated or not a torch file"),
        (write_text, "truncated or not a torch file"),
        (write_other_tools_checkpoint, "no 'textclf-checkpoint' marker"),
    ],
    ids=["foreign-objects", "plain-pickle", "text", "other-tool"],
)
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_files_give_a_run_error(tmp_path: Path, write, reason: str) -> None:
    path = tmp_path / "model.pt"
    write(path)
    with pytest.raises(RunError) as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_checkpoint_gives_a_run_error(saved: Path, keep: float) -> None:
    content = saved.read_bytes()
    saved.write_bytes(content[: int(len(content) * keep)])
    with pytest.raises(RunError, match="truncated or not a torch file"):
        load_model(saved, torch.device("cpu"))


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_checkpoint_whose_weights_do_not_fit_its_model(tmp_path: Path, model: nn.Module) -> None:
    path = tmp_path / "bad.pt"
    save_checkpoint(path, new_checkpoint(model, dataclasses.replace(info(), vocab=VOCAB + ["extra"])))
    with pytest.raises(RunError, match="does not match its model"):
        load_model(path, torch.device("cpu"))


def test_metadata_is_stored_as_plain_top_level_values(saved: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)
    assert checkpoint["tokenizer"] == TokenizerSettings(kind="regexp").to_dict()
    assert {key: checkpoint[key] for key in ("model_type", "vocab", "labels", "max_length", "truncate", "config",
                                              "versions")} == {
        "model_type": "lstm", "vocab": json.dumps(VOCAB), "labels": ["neg", "pos"], "max_length": 20, "truncate": "tail",
        "config": {"experiment": "x"}, "versions": {"textclf": "0.1.0", "torch": "2.13.0"}}
    assert CheckpointMeta.from_dict(checkpoint) == info()


@pytest.mark.parametrize("version, fix", [(1, "retrain the model with this textclf"), (99, "upgrade textclf"),
                                          (None, "retrain the model with this textclf")])
def test_a_checkpoint_of_another_format_version_is_refused_saying_what_to_do(tmp_path: Path, model: nn.Module,
                                                                             version, fix: str) -> None:
    checkpoint = dict(new_checkpoint(model, info()), version=version)
    path = tmp_path / "other.pt"
    save_checkpoint(path, checkpoint)
    with pytest.raises(RunError) as error:
        load_model(path, torch.device("cpu"))
    assert str(error.value) == (f"{path}: checkpoint format version {version} (written by textclf 0.1.0); this "
                                f"textclf reads version {CHECKPOINT_VERSION}: {fix}, or read it with the textclf "
                                "that wrote it")


def test_a_checkpoint_whose_vocab_is_not_json_is_refused(tmp_path: Path, model: nn.Module) -> None:
    checkpoint = dict(new_checkpoint(model, info()), vocab="[not json")
    path = tmp_path / "broken.pt"
    save_checkpoint(path, checkpoint)
    with pytest.raises(RunError, match=r"checkpoint is incomplete or does not match its model \(vocab is not a JSON"):
        load_model(path, torch.device("cpu"))


def test_a_checkpoint_without_its_vocab_is_incomplete(tmp_path: Path, model: nn.Module) -> None:
    checkpoint = new_checkpoint(model, info())
    del checkpoint["vocab"]
    path = tmp_path / "incomplete.pt"
    save_checkpoint(path, checkpoint)
    with pytest.raises(RunError, match=r"checkpoint is incomplete or does not match its model \('vocab'\)"):
        load_model(path, torch.device("cpu"))


def test_resuming_optimizer_state_of_another_shape_is_refused(tmp_path: Path, model: nn.Module) -> None:
    # an older textclf's last.pt: Adam moments sized for a table that the model no longer has
    old = torch.optim.Adam(nn.Linear(3, 2).parameters())
    for parameter in old.param_groups[0]["params"]:
        parameter.grad = torch.ones_like(parameter)
    old.step()
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.param_groups = optimizer.param_groups[:1]
    optimizer.param_groups[0]["params"] = optimizer.param_groups[0]["params"][:2]
    trainer = SimpleNamespace(optimizer=optimizer, scheduler=None, plain_model=model, ensemble=None)
    checkpoint = {"training": {"optimizer": old.state_dict(), "scheduler": None, "scaler": None}}
    with pytest.raises(RunError, match=r"last\.pt: its optimizer state does not fit the model .*start a new run"):
        restore_training_state(trainer, checkpoint, tmp_path)
