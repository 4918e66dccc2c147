"""The labelled splits as prepare and evaluate read them: input fingerprint, sources, the validation carve, label targets."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textclf_cli.config import Config
from textclf_cli.console import RateProgress
from textclf_cli.data.download import sha256_of
from textclf_cli.data.prepared import (
    FORMAT_VERSION,
)
from textclf_cli.data.sources import LabelledTexts, TableLayout, TableSource, TextChunk, read_all, read_imdb
from textclf_cli.data.tables import describe
from textclf_cli.data.text import ChunkTokenizer, count_chunk
from textclf_cli.data.vocab import TokenCounts
from textclf_cli.errors import DataError


def input_digests(config: Config, known: dict[str, str] | None = None) -> dict[str, str]:
    """Each input file's content hash (a folder's listing), by split name; `known` ones are not hashed again."""
    data = config.data
    known = known or {}
    return {name: known.get(name) or _file_digest(path)
            for name, path in (("train", data.train), ("valid", data.valid), ("test", data.test)) if path is not None}


def fingerprint(config: Config, digests: dict[str, str] | None = None) -> str:
    """Hash of the input files' contents and every setting that changes the prepared arrays; `digests` are
    input_digests(config), passed in where they are already known."""
    data = config.data
    settings = {
        "format_version": FORMAT_VERSION,
        "inputs": input_digests(config) if digests is None else digests,
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


Source = TableSource | LabelledTexts


def split_sources(config: Config) -> dict[str, Source]:
    """The split files to read, train first (its labels are the ones the other splits are checked against)."""
    data = config.data
    if data.format == "imdb":
        sources: dict[str, Source] = dict(read_imdb(data.train))
        if data.valid is not None:
            sources["valid"] = read_imdb(data.valid)["test"]
        return {name: sources[name] for name in ("train", "valid", "test") if name in sources}
    sources = {"train": table_source(config, data.train)}
    for name, path in (("valid", data.valid), ("test", data.test)):
        if path is not None:
            sources[name] = table_source(config, path)
    return sources


def read_splits(config: Config) -> dict[str, LabelledTexts]:
    """Every split in memory, read and carved exactly as prepare streams them (evaluating from the raw files)."""
    splits = {name: source if isinstance(source, LabelledTexts) else read_all(source)
              for name, source in split_sources(config).items()}
    if "valid" not in splits:
        splits["train"], splits["valid"] = carve_valid(splits["train"], config.data.valid_fraction, config.seed)
    return splits


def table_source(config: Config, path: Path) -> TableSource:
    """A table file of this config's data, read as prepare reads it."""
    data = config.data
    separator = data.label_separator if config.task == "multilabel" else None
    return TableSource(path, TableLayout(data.format, data.text_column, data.label_column, data.encoding,
                                         data.bad_rows, separator, data.max_row_chars))


@dataclass
class StreamedSplit:
    """One split file as read: provisional token ids in a temp file, tokens per text, label ids per text
    (multi-label: every text's label ids one after another, and how many each text has)."""

    source: str
    ids_path: Path
    lengths: np.ndarray  # int64, one per text
    label_ids: np.ndarray  # int32, into `label_names`
    label_names: list[str]
    groups: list[str]  # per text, when texts come in groups (IMDb's movies); else []
    label_counts: np.ndarray | None = None  # multi-label only: int32 labels per text, indexing into label_ids

    @property
    def multilabel(self) -> bool:
        return self.label_counts is not None

    def __len__(self) -> int:
        return len(self.lengths)


def stream_split(name: str, source: Source, tokenizer: ChunkTokenizer, counts: TokenCounts, ids_path: Path,
                 chunk_size: int, known_labels: list[str] | None, multilabel: bool = False) -> StreamedSplit:
    """Tokenize one split file chunk by chunk; count its tokens when it is the training split (no known labels)."""
    label_index = {label: i for i, label in enumerate(known_labels or [])}
    lengths, label_ids, label_counts = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)], [np.zeros(0, np.int32)]
    done = 0
    with ids_path.open("wb") as out, RateProgress(f"prepare {name}") as progress:
        for chunk, (tokens, local_ids, chunk_lengths, local_counts) in tokenizer.map(
                count_chunk, source.chunks(chunk_size)):
            out.write(counts.merge(tokens, local_ids, local_counts if known_labels is None else None).tobytes())
            lengths.append(chunk_lengths)
            frozen = known_labels is not None
            if multilabel:
                ids, per_text = _label_set_ids(chunk, label_index, name, source.name, frozen)
                label_counts.append(per_text)
            else:
                ids = _label_ids(chunk, label_index, name, source.name, frozen)
            label_ids.append(ids)
            done += len(chunk)
            progress.update(done, source.fraction_done())
    return StreamedSplit(source.name, ids_path, np.concatenate(lengths), np.concatenate(label_ids),
                         list(label_index), source.groups, np.concatenate(label_counts) if multilabel else None)


def _label_id(label: str, where: object, index: dict[str, int], split: str, source: str, frozen: bool) -> int:
    label_id = index.get(label)
    if label_id is None:
        if frozen:
            raise DataError(f"{describe(source, where)}: label {label!r} in the {split} split never occurs in "
                            f"the training data (known labels: {', '.join(index)})")
        label_id = index[label] = len(index)
    return label_id


def _label_ids(chunk: TextChunk, index: dict[str, int], split: str, source: str, frozen: bool) -> np.ndarray:
    ids = np.empty(len(chunk), dtype=np.int32)
    for position, (label, where) in enumerate(zip(chunk.labels, chunk.wheres)):
        ids[position] = _label_id(label, where, index, split, source, frozen)
    return ids


def _label_set_ids(chunk: TextChunk, index: dict[str, int], split: str, source: str, frozen: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label: every text's label ids one after another, and how many each text has (0 for an empty set)."""
    ids = [_label_id(label, where, index, split, source, frozen)
           for label_set, where in zip(chunk.labels, chunk.wheres) for label in label_set]
    return np.array(ids, dtype=np.int32), np.array([len(label_set) for label_set in chunk.labels], dtype=np.int32)


def sorted_labels(train: StreamedSplit) -> list[str]:
    """The label order (sorted train labels), with train's label ids moved to it; refuses one-class data."""
    labels = sorted(train.label_names)
    if train.multilabel and len(labels) < 2:
        raise DataError(f"{train.source}: the training data has {len(labels)} distinct label(s) "
                        f"({', '.join(labels) or 'none'}); a multi-label classifier needs at least two")
    if len(labels) < 2:
        raise DataError(f"{train.source}: the training data has only one class ({labels[0]!r}); "
                        f"a classifier needs at least two")
    order = np.array([labels.index(name) for name in train.label_names], dtype=np.int32)
    train.label_ids = order[train.label_ids]
    train.label_names = labels
    return labels


def carve_indices(labels: np.ndarray, fraction: float, seed: int, source: str, groups: list[str] | None = None,
                  stratified: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions of what stays in train and of a seeded validation split taken from it: stratified by
    label, or, when the texts come in groups (IMDb's movies), whole groups, so that validation scores texts
    about things training never saw. Unstratified (multi-label sets), `labels` only gives the count."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    n_valid = max(1, round(len(labels) * fraction))
    if len(labels) - n_valid < 1:
        raise DataError(f"{source}: only {len(labels)} example(s); too few to carve a validation split")
    if groups and len(set(groups)) >= 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        fit_idx, valid_idx = next(splitter.split(np.arange(len(labels)), groups=groups))
        return np.sort(fit_idx), np.sort(valid_idx)
    stratify = None  # label sets (multi-label) are split at random: sklearn stratifies single labels only
    if stratified:
        _, counts = np.unique(labels, return_counts=True)
        stratify = labels if counts.min() >= 2 and n_valid >= len(counts) else None
    fit_idx, valid_idx = train_test_split(np.arange(len(labels)), test_size=n_valid, random_state=seed,
                                          stratify=stratify)
    return np.sort(fit_idx), np.sort(valid_idx)


def carve_valid(train: LabelledTexts, fraction: float, seed: int) -> tuple[LabelledTexts, LabelledTexts]:
    """carve_indices for texts in memory."""
    multilabel = bool(train.labels) and not isinstance(train.labels[0], str)
    labels = np.zeros(len(train), dtype=np.int32) if multilabel else np.array(train.labels)
    fit_idx, valid_idx = carve_indices(labels, fraction, seed, train.source, train.groups, stratified=not multilabel)
    return _subset(train, fit_idx), _subset(train, valid_idx)


def _subset(texts: LabelledTexts, indices: np.ndarray) -> LabelledTexts:
    pick = indices.tolist()
    rows = [texts.rows[i] for i in pick] if texts.rows else []
    groups = [texts.groups[i] for i in pick] if texts.groups else []
    return LabelledTexts([texts.texts[i] for i in pick], [texts.labels[i] for i in pick], texts.source, rows, groups)


def label_targets(labels: list, label_order: list[str], multilabel: bool) -> np.ndarray:
    """(n,) int64 label indices, or for multi-label (n, C) uint8 multi-hot rows (C = len(label_order))."""
    index = {label: i for i, label in enumerate(label_order)}
    if not multilabel:
        return np.array([index[label] for label in labels], dtype=np.int64)
    targets = np.zeros((len(labels), len(label_order)), dtype=np.uint8)
    for row, label_set in enumerate(labels):
        targets[row, [index[label] for label in label_set]] = 1
    return targets
