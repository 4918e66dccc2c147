"""The prepare stage: raw files -> clean/tokenize -> vocabulary -> token ids on disk, keyed by a fingerprint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from textclf_cli.config import Config
from textclf_cli.console import Stopwatch, log
from textclf_cli.data.download import download, sha256_of
from textclf_cli.data.prepared import (
    FORMAT_VERSION,
    EncodedSplit,
    PreparedData,
    is_prepared,
    load_prepared,
    write_prepared,
)
from textclf_cli.data.sources import LabelledTexts, read_imdb, read_table
from textclf_cli.data.text import TokenizerSettings, tokenize_all
from textclf_cli.data.vocab import build_vocab, encode, token_index
from textclf_cli.errors import DataError


def tokenizer_settings(config: Config) -> TokenizerSettings:
    return TokenizerSettings(**config.tokenizer.model_dump())


def prepare(config: Config, force: bool = False) -> PreparedData:
    """Prepared data for this config: reused when its fingerprint exists, else built and written once."""
    ensure_inputs(config)
    key = fingerprint(config)
    root = config.data.prepared_dir / key
    if is_prepared(root) and not force:
        log.info(f"using prepared data {root}")
        return load_prepared(root)
    clock = Stopwatch()
    raw_splits = read_splits(config)
    data = encode_splits(raw_splits, config)
    data.root = root
    data.meta["fingerprint"] = key
    write_prepared(root, data)
    counts = ", ".join(f"{split} {len(encoded)}" for split, encoded in data.splits.items())
    log.info(f"prepared {root} in {clock.seconds:.1f}s: {counts}; vocabulary {len(data.vocab)}; labels {data.labels}")
    return load_prepared(root)


def ensure_inputs(config: Config) -> None:
    """Download the train archive when it is missing and data.url is set."""
    data = config.data
    if not data.train.exists() and data.url:
        download(data.url, data.train, data.sha256)


def fingerprint(config: Config) -> str:
    """Hash of the input files' contents and every setting that changes the prepared arrays."""
    data = config.data
    inputs = {name: _file_digest(path) for name, path in (("train", data.train), ("valid", data.valid),
                                                          ("test", data.test)) if path is not None}
    settings = {
        "format_version": FORMAT_VERSION,
        "inputs": inputs,
        "data": data.model_dump(mode="json", include={"format", "text_column", "label_column", "encoding", "bad_rows"}),
        "tokenizer": config.tokenizer.model_dump(mode="json"),
        "vocab": config.vocab.model_dump(mode="json", include={"max_size", "min_freq"}),
        # "grouped": IMDb's validation reviews are whole movies since textclf 0.2 (earlier keys carved at random)
        "valid_split": None if data.valid else {"fraction": data.valid_fraction, "seed": config.seed,
                                                "grouped": data.format == "imdb"},
    }
    if config.task == "multilabel":  # only then, so that multiclass fingerprints stay what they were
        settings["multilabel"] = {"label_separator": data.label_separator}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    if path.is_file():
        return sha256_of(path)
    if path.is_dir():  # an extracted folder: names, sizes and times stand in for the contents
        entries = sorted(
            (str(file.relative_to(path)), file.stat().st_size, file.stat().st_mtime_ns)
            for file in path.rglob("*") if file.is_file()
        )
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    raise DataError(f"{path}: not found; check the data paths in the config (data.train/valid/test)")


def read_splits(config: Config) -> dict[str, LabelledTexts]:
    data = config.data
    if data.format == "imdb":
        splits = read_imdb(data.train)
    else:
        splits = {"train": _read(config, data.train)}
        if data.test is not None:
            splits["test"] = _read(config, data.test)
    if data.valid is not None:
        splits["valid"] = _read(config, data.valid) if data.format != "imdb" else read_imdb(data.valid)["test"]
    else:
        splits["train"], splits["valid"] = carve_valid(splits["train"], data.valid_fraction, config.seed)
    return splits


def _read(config: Config, path: Path) -> LabelledTexts:
    data = config.data
    separator = data.label_separator if config.task == "multilabel" else None
    return read_table(path, data.format, data.text_column, data.label_column, data.encoding, data.bad_rows, separator)


def carve_valid(train: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """A seeded validation split taken from train: stratified by label, or, when the texts come in groups
    (IMDb's movies), whole groups, so that validation scores texts about things training never saw."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    indices = np.arange(len(train))
    n_valid = max(1, round(len(train) * fraction))
    if len(train) - n_valid < 1:
        raise DataError(f"{train.source}: only {len(train)} example(s); too few to carve a validation split")
    if train.groups and len(set(train.groups)) >= 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        fit_idx, valid_idx = next(splitter.split(indices, groups=train.groups))
        return _subset(train, np.sort(fit_idx)), _subset(train, np.sort(valid_idx))
    stratify = None  # label sets (multi-label) are split at random: sklearn stratifies single labels only
    if train.labels and isinstance(train.labels[0], str):
        labels = np.array(train.labels)
        _, counts = np.unique(labels, return_counts=True)
        stratify = labels if counts.min() >= 2 and n_valid >= len(counts) else None
    fit_idx, valid_idx = train_test_split(indices, test_size=n_valid, random_state=seed, stratify=stratify)
    return _subset(train, np.sort(fit_idx)), _subset(train, np.sort(valid_idx))


def _subset(texts: LabelledTexts, indices: np.ndarray) -> LabelledTexts:
    pick = indices.tolist()
    rows = [texts.rows[i] for i in pick] if texts.rows else []
    groups = [texts.groups[i] for i in pick] if texts.groups else []
    return LabelledTexts([texts.texts[i] for i in pick], [texts.labels[i] for i in pick], texts.source, rows, groups)


def check_labels(splits: dict[str, LabelledTexts], multilabel: bool = False) -> list[str]:
    """The label order (sorted train labels); refuses one-class training data and unseen labels."""
    if multilabel:
        return check_label_sets(splits)
    labels = sorted(set(splits["train"].labels))
    if len(labels) < 2:
        raise DataError(
            f"{splits['train'].source}: the training data has only one class ({labels[0]!r}); "
            f"a classifier needs at least two"
        )
    known = set(labels)
    for name, split in splits.items():
        for label, row in zip(split.labels, split.rows or range(1, len(split) + 1)):
            if label not in known:
                raise DataError(
                    f"{split.source}:{row}: label {label!r} in the {name} split never occurs in the training data "
                    f"(known labels: {', '.join(labels)})"
                )
    return labels


def check_label_sets(splits: dict[str, LabelledTexts]) -> list[str]:
    """Multi-label: the sorted union of train's label sets; refuses fewer than two labels and unseen labels."""
    labels = sorted({label for label_set in splits["train"].labels for label in label_set})
    if len(labels) < 2:
        raise DataError(f"{splits['train'].source}: the training data has {len(labels)} distinct label(s) "
                        f"({', '.join(labels) or 'none'}); a multi-label classifier needs at least two")
    known = set(labels)
    for name, split in splits.items():
        for label_set, row in zip(split.labels, split.rows or range(1, len(split) + 1)):
            unseen = [label for label in label_set if label not in known]
            if unseen:
                raise DataError(
                    f"{split.source}:{row}: label {unseen[0]!r} in the {name} split never occurs in the training "
                    f"data (known labels: {', '.join(labels)})"
                )
    return labels


def label_targets(labels: list, label_order: list[str], multilabel: bool) -> np.ndarray:
    """(n,) int64 label indices, or for multi-label (n, C) uint8 multi-hot rows (C = len(label_order))."""
    index = {label: i for i, label in enumerate(label_order)}
    if not multilabel:
        return np.array([index[label] for label in labels], dtype=np.int64)
    targets = np.zeros((len(labels), len(label_order)), dtype=np.uint8)
    for row, label_set in enumerate(labels):
        targets[row, [index[label] for label in label_set]] = 1
    return targets


def encode_splits(splits: dict[str, LabelledTexts], config: Config) -> PreparedData:
    multilabel = config.task == "multilabel"
    labels = check_labels(splits, multilabel)
    settings = tokenizer_settings(config)
    names = list(splits)
    all_texts = [text for name in names for text in splits[name].texts]
    all_tokens = tokenize_all(all_texts, settings)  # one pool over every split
    tokens_by_split, start = {}, 0
    for name in names:
        tokens_by_split[name] = all_tokens[start: start + len(splits[name])]
        start += len(splits[name])
    vocab = build_vocab(tokens_by_split["train"], config.vocab.max_size, config.vocab.min_freq)
    index = token_index(vocab)
    encoded = {}
    for name in names:
        ids, offsets = encode(tokens_by_split[name], index)
        encoded[name] = EncodedSplit(ids, offsets, label_targets(splits[name].labels, labels, multilabel))
    meta = {"tokenizer": settings.to_dict(), "sources": {name: splits[name].source for name in names},
            "task": config.task}
    return PreparedData(Path(), vocab, labels, settings, encoded, meta)
