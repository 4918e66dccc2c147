"""The prepare stage: raw files -> clean/tokenize -> vocabulary -> token ids on disk, keyed by a fingerprint.

It streams, so memory does not grow with the number of texts. Sources are read in chunks and tokenized in
worker processes; each split's tokens go to a temporary file as provisional ids (first-seen order) while the
training texts' tokens are counted. Once every split is read, the vocabulary is built from the counts and the
provisional ids are remapped into the final arrays, written piece by piece. Memory holds a few chunks in
flight, the distinct tokens, and a few numbers per text; never all the texts or their tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textclf_cli import files
from textclf_cli.auto import auto_min_freq
from textclf_cli.config import AUTO, Config
from textclf_cli.console import RateProgress, Stopwatch, log
from textclf_cli.data.download import check_archive, download, sha256_of, warn_if_unverified
from textclf_cli.data.prepared import (
    FORMAT_VERSION,
    NpyWriter,
    PreparedData,
    is_prepared,
    load_prepared,
    save_array,
    staged_folder,
    write_index,
)
from textclf_cli.data.sources import LabelledTexts, TableSource, TextChunk, read_imdb, read_table
from textclf_cli.data.tables import describe
from textclf_cli.data.text import ChunkTokenizer, TokenizerSettings, count_chunk
from textclf_cli.data.vocab import TokenCounts
from textclf_cli.errors import DataError

BLOCK_TOKENS = 8 * 2**20  # token ids read back at a time when remapping (32 MB)


def tokenizer_settings(config: Config) -> TokenizerSettings:
    return TokenizerSettings(**config.tokenizer.model_dump())


def prepare(config: Config, force: bool = False) -> PreparedData:
    """Prepared data for this config: reused when its fingerprint exists, else built and written once."""
    downloaded = ensure_inputs(config)
    digests = input_digests(config, downloaded)  # hashing a large archive takes a while: once per prepare
    check_train_digest(config, digests["train"])
    key = fingerprint(config, digests)
    root = config.data.prepared_dir / key
    if is_prepared(root) and not force:
        log.info(f"using prepared data {root}")
        return load_prepared(root)
    chosen_by_auto = None if force else prepared_by_auto(config, digests)
    if chosen_by_auto is not None:
        log.info(f"using prepared data {chosen_by_auto.root} (vocab.min_freq auto chose {config.vocab.min_freq})")
        return chosen_by_auto
    clock = Stopwatch()
    with staged_folder(root, replace=force) as staging:
        sizes, vocab, labels = build_prepared(staging, config, key)
    counts = ", ".join(f"{split} {size}" for split, size in sizes.items())
    log.info(f"prepared {root} in {clock.seconds:.1f}s: {counts}; vocabulary {len(vocab)}; labels {labels}")
    return load_prepared(root)


def prepared_by_auto(config: Config, digests: dict[str, str]) -> PreparedData | None:
    """The data prepared with `vocab.min_freq: auto`, where auto chose this config's min_freq: a resumed run, or a
    run's resolved config.yaml trained again, then reads the arrays it was trained on instead of preparing a copy."""
    if config.vocab.min_freq == AUTO:
        return None
    as_auto = config.model_copy(deep=True)
    as_auto.vocab.min_freq = AUTO
    root = config.data.prepared_dir / fingerprint(as_auto, digests)
    if not is_prepared(root):
        return None
    data = load_prepared(root)  # memory-mapped: cheap, and a damaged folder is the clear DataError
    return data if data.meta.get("min_freq") == config.vocab.min_freq else None


def ensure_inputs(config: Config) -> dict[str, str]:
    """Download the train archive when it is missing and data.url is set; {"train": its sha256} when it was."""
    data = config.data
    warn_if_unverified(data.url, data.sha256)
    if not data.train.exists() and data.url:
        return {"train": download(data.url, data.train, data.sha256)}
    return {}


def input_digests(config: Config, known: dict[str, str] | None = None) -> dict[str, str]:
    """Each input file's content hash (a folder's listing), by split name; `known` ones are not hashed again."""
    data = config.data
    known = known or {}
    return {name: known.get(name) or _file_digest(path)
            for name, path in (("train", data.train), ("valid", data.valid), ("test", data.test)) if path is not None}


def check_train_digest(config: Config, digest: str) -> None:
    """data.sha256 against the train file on every prepare, not only after a download."""
    data = config.data
    if data.sha256 is None:
        return
    if data.train.is_dir():
        log.warning(f"data.sha256 is not checked: data.train {data.train} is a folder, not the archive")
        return
    check_archive(data.train, digest, data.sha256)


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


# ---------------------------------------------------------------------------------------------------------
# reading and tokenizing: one streaming pass per split file


Source = TableSource | LabelledTexts


def split_sources(config: Config) -> dict[str, Source]:
    """The split files to read, train first (its labels are the ones the other splits are checked against)."""
    data = config.data
    if data.format == "imdb":
        sources: dict[str, Source] = dict(read_imdb(data.train))
        if data.valid is not None:
            sources["valid"] = read_imdb(data.valid)["test"]
        return {name: sources[name] for name in ("train", "valid", "test") if name in sources}
    sources = {"train": _table(config, data.train)}
    for name, path in (("valid", data.valid), ("test", data.test)):
        if path is not None:
            sources[name] = _table(config, path)
    return sources


def read_splits(config: Config) -> dict[str, LabelledTexts]:
    """Every split in memory, read and carved exactly as prepare streams them (evaluating from the raw files)."""
    splits = {name: source if isinstance(source, LabelledTexts) else read_table(
        source.path, source.file_format, source.text_column, source.label_column, source.encoding, source.bad_rows,
        source.label_separator, source.max_row_chars)
        for name, source in split_sources(config).items()}
    if "valid" not in splits:
        splits["train"], splits["valid"] = carve_valid(splits["train"], config.data.valid_fraction, config.seed)
    return splits


def _table(config: Config, path: Path) -> TableSource:
    data = config.data
    separator = data.label_separator if config.task == "multilabel" else None
    return TableSource(path, data.format, data.text_column, data.label_column, data.encoding, data.bad_rows,
                       separator, data.max_row_chars)


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


# ---------------------------------------------------------------------------------------------------------
# the validation carve


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


# ---------------------------------------------------------------------------------------------------------
# the whole stage, and writing the final arrays


def build_prepared(staging: Path, config: Config, key: str) -> tuple[dict[str, int], list[str], list[str]]:
    """Stream every split into `staging`, then write the final arrays and index; (sizes, vocab, labels)."""
    sources = split_sources(config)
    counts, streamed = TokenCounts(), {}
    chunk_size, multilabel = config.data.chunk_size, config.task == "multilabel"
    with ChunkTokenizer(tokenizer_settings(config)) as tokenizer:
        streamed["train"] = stream_split("train", sources["train"], tokenizer, counts, staging / "train.tmp",
                                         chunk_size, None, multilabel)
        labels = sorted_labels(streamed["train"])
        for name in [name for name in sources if name != "train"]:
            streamed[name] = stream_split(name, sources[name], tokenizer, counts, staging / f"{name}.tmp",
                                          chunk_size, labels, multilabel)
    selections = {name: (name, None) for name in streamed}  # final split -> (streamed split, rows or all)
    if "valid" not in streamed:
        train = streamed["train"]
        carve_labels = np.zeros(len(train), dtype=np.int32) if multilabel else train.label_ids
        fit_idx, valid_idx = carve_indices(carve_labels, config.data.valid_fraction, config.seed, train.source,
                                           train.groups, stratified=not multilabel)
        for _, ids in read_rows(train, _mask(len(train), valid_idx)):
            counts.subtract(ids)  # the vocabulary comes from the texts that stay in train only
        selections.update(train=("train", fit_idx), valid=("train", valid_idx))
    min_freq = config.vocab.min_freq
    if min_freq == AUTO:
        fit_rows = selections["train"][1]
        train_lengths = streamed["train"].lengths if fit_rows is None else streamed["train"].lengths[fit_rows]
        min_freq = auto_min_freq(train_lengths, config.vocab.max_length)
        log.info(f"vocab.min_freq auto -> {min_freq} "
                 f"({'short texts in a small corpus: words seen once kept' if min_freq == 1 else 'words seen twice'})")
    vocab = counts.vocabulary(config.vocab.max_size, min_freq)
    remap = counts.remap(vocab)
    sizes = {}
    for name, (origin, rows) in selections.items():
        sizes[name] = write_split(staging, name, streamed[origin], rows, remap)
    for split in streamed.values():
        split.ids_path.unlink()
    meta = {"tokenizer": tokenizer_settings(config).to_dict(), "fingerprint": key,
            "sources": {name: streamed[origin].source for name, (origin, _) in selections.items()},
            "task": config.task, "min_freq": min_freq}
    write_index(staging, vocab, labels, meta, list(selections))
    return sizes, vocab, labels


def _mask(n: int, rows: np.ndarray | None) -> np.ndarray:
    mask = np.zeros(n, dtype=bool) if rows is not None else np.ones(n, dtype=bool)
    if rows is not None:
        mask[rows] = True
    return mask


def read_rows(split: StreamedSplit, keep: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(kept row positions, their provisional token ids) block by block from the temp file, in file order."""
    offsets = np.zeros(len(split) + 1, dtype=np.int64)
    np.cumsum(split.lengths, out=offsets[1:])
    with split.ids_path.open("rb") as handle:
        start = 0
        while start < len(split):
            stop = int(np.searchsorted(offsets, offsets[start] + BLOCK_TOKENS, side="right")) - 1
            stop = min(len(split), max(start + 1, stop))
            ids = np.fromfile(handle, dtype=np.int32, count=int(offsets[stop] - offsets[start]))
            rows = np.arange(start, stop)[keep[start:stop]]
            yield rows, ids[np.repeat(keep[start:stop], split.lengths[start:stop])]
            start = stop


def write_split(folder: Path, name: str, split: StreamedSplit, rows: np.ndarray | None, remap: np.ndarray) -> int:
    """The final ids/offsets/labels arrays of one split: the chosen rows (all when None) of a streamed split."""
    keep = _mask(len(split), rows)
    lengths = split.lengths[keep]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    save_array(folder / files.PREPARED_OFFSETS.format(split=name), offsets)
    save_array(folder / files.PREPARED_TARGETS.format(split=name), split_targets(split)[keep])
    writer = NpyWriter(folder / files.PREPARED_IDS.format(split=name), np.int32, int(offsets[-1]))
    for _, ids in read_rows(split, keep):
        writer.write(remap[ids])
    writer.close()
    return len(lengths)


def split_targets(split: StreamedSplit) -> np.ndarray:
    """(n,) int64 label indices, or for multi-label (n, C) uint8 multi-hot rows (C = the number of labels)."""
    if not split.multilabel:
        return split.label_ids.astype(np.int64)
    targets = np.zeros((len(split), len(split.label_names)), dtype=np.uint8)
    targets[np.repeat(np.arange(len(split)), split.label_counts), split.label_ids] = 1
    return targets
