"""The one table of model families: each family's name, config class, module and default tune search space.

torch-free: `config`, `tune --help` and the tune report read it without importing a model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from textclf_cli.config import BagConfig, CNNConfig, LSTMConfig, NgramConfig, Strict, TuneRange


def _range(low: float, high: float, log: bool = False) -> TuneRange:
    return TuneRange(low=low, high=high, log=log)


def _choices(*options: Any) -> TuneRange:
    return TuneRange(choices=list(options))


@dataclass(frozen=True)
class Family:
    name: str  # the config's model.type
    config_class: type[Strict]
    module: str  # "package.module:Class" of its nn.Module, imported when a model is built
    search_space: dict[str, TuneRange] = field(default_factory=dict)  # textclf tune's default, beside COMMON_SPACE
    common_space: bool = True  # whether train.lr and the shared keys of COMMON_SPACE apply

    def model_class(self) -> type:
        module, _, name = self.module.partition(":")
        return getattr(importlib.import_module(module), name)


# Ranges around what trains well on IMDb-sized data; each family's own capacity knobs plus lr, batch size and
# vocab.min_freq (the one key here that re-prepares the data: three cached variants at most).
COMMON_SPACE = {
    "train.lr": _range(3e-4, 1e-2, log=True),
    "train.batch_size": _choices(16, 32, 64, 128),
    "vocab.min_freq": _choices(1, 2, 3),
}

FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family("cnn", CNNConfig, "textclf_cli.models.cnn:TextCNN", {
        "model.embedding_dim": _choices(64, 128, 200),
        "model.num_filters": _choices(64, 100, 150),
        "model.filter_sizes": _choices([3, 4, 5], [2, 3, 4], [1, 2, 3, 4, 5], [3, 5, 7]),
        "model.pooling": _choices("max", "max_mean"),
        "model.dropout": _range(0.1, 0.7),
        "model.word_dropout": _range(0.0, 0.3),
    }),
    Family("lstm", LSTMConfig, "textclf_cli.models.lstm:LSTMClassifier", {
        "model.embedding_dim": _choices(64, 128, 200),
        "model.hidden_size": _choices(64, 128, 256),
        "model.num_layers": _choices(1, 2),
        "model.pooling": _choices("last", "max", "mean", "max_mean"),
        "model.dropout": _range(0.0, 0.6),
        "model.word_dropout": _range(0.0, 0.3),
    }),
    Family("bag", BagConfig, "textclf_cli.models.bag:BagOfNgrams", {
        "model.embedding_dim": _choices(16, 32, 64, 100),
        "model.ngrams": _choices(1, 2, 3),
        "model.dropout": _range(0.0, 0.5),
    }),
    # the n-gram model has its own step size (model.lr); train.lr does not reach it
    Family("ngram", NgramConfig, "textclf_cli.models.ngram:NgramLogReg", {
        "train.batch_size": _choices(16, 32, 64, 128),
        "vocab.min_freq": _choices(1, 2, 3),
        "model.ngrams": _choices(1, 2, 3),
        "model.chars": _choices(0, 3, 5),
        "model.lr": _range(1e-3, 5e-2, log=True),
        "model.l2": _range(1e-2, 10.0, log=True),
    }, common_space=False),
)}


def default_space(model_type: str) -> dict[str, TuneRange]:
    family = FAMILIES[model_type]
    return {**(COMMON_SPACE if family.common_space else {}), **family.search_space}
