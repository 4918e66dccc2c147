"""tensorboard_log.py: tag names and the flattened hparams."""

from __future__ import annotations

from textclf_cli.training.tensorboard_log import flatten, scalar_tag


def test_history_columns_become_grouped_tags() -> None:
    assert [scalar_tag(c) for c in ("train_loss", "valid_loss", "valid_f1_macro", "lr", "seconds")] == [
        "loss/train", "loss/valid", "f1_macro/valid", "lr", "seconds"]


def test_flatten_makes_dotted_scalar_hparams() -> None:
    config = {"train": {"lr": 0.001, "grad_clip": None}, "model": {"filter_sizes": [3, 4], "type": "cnn"}}
    assert flatten(config) == {"train.lr": 0.001, "train.grad_clip": "None", "model.filter_sizes": "[3, 4]",
                               "model.type": "cnn"}
