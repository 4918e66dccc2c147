"""The prepare stage: raw files -> clean/tokenize -> vocabulary -> token ids on disk, keyed by a fingerprint.

It streams, so memory does not grow with the number of texts. Sources are read in chunks and tokenized in
worker processes; each split's tokens go to a temporary file as provisional ids (first-seen order) while the
training texts' tokens are counted. Once every split is read, the vocabulary is built from the counts and the
provisional ids are remapped into the final arrays, written piece by piece. Memory holds a few chunks in
flight, the distinct tokens, and a few numbers per text; never all the texts or their tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from textclf_cli import files
from textclf_cli.config import AUTO, Config
from textclf_cli.console import Stopwatch, log
from textclf_cli.data.download import check_archive, download, warn_if_unverified
from textclf_cli.data.prepared import (
    NpyWriter,
    PreparedData,
    is_prepared,
    load_prepared,
    save_array,
    staged_folder,
    write_index,
)
from textclf_cli.data.splits import (
    StreamedSplit,
    carve_indices,
    fingerprint,
    input_digests,
    sorted_labels,
    split_sources,
    stream_split,
)
from textclf_cli.data.text import ChunkTokenizer, TokenizerSettings
from textclf_cli.data.vocab import TokenCounts
from textclf_cli.training.auto import auto_min_freq

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


def check_train_digest(config: Config, digest: str) -> None:
    """data.sha256 against the train file on every prepare, not only after a download."""
    data = config.data
    if data.sha256 is None:
        return
    if data.train.is_dir():
        log.warning(f"data.sha256 is not checked: data.train {data.train} is a folder, not the archive")
        return
    check_archive(data.train, digest, data.sha256)


# ---------------------------------------------------------------------------------------------------------
# building the arrays: one streaming pass per split file, the validation carve, the vocabulary, the final arrays


Selections = dict[str, tuple[str, np.ndarray | None]]  # final split -> (streamed split, its rows or None: all)


def build_prepared(staging: Path, config: Config, key: str) -> tuple[dict[str, int], list[str], list[str]]:
    """Stream every split into `staging`, then write the final arrays and index; (sizes, vocab, labels)."""
    counts = TokenCounts()
    streamed, labels = stream_all_splits(staging, config, counts)
    selections = select_rows(streamed, config, counts)
    min_freq = resolved_min_freq(config, streamed["train"], selections["train"][1])
    vocab = counts.vocabulary(config.vocab.max_size, min_freq)
    remap = counts.remap(vocab)
    sizes = {name: write_split(staging, name, streamed[origin], rows, remap)
             for name, (origin, rows) in selections.items()}
    for split in streamed.values():
        split.ids_path.unlink()
    meta = {"tokenizer": tokenizer_settings(config).to_dict(), "fingerprint": key,
            "sources": {name: streamed[origin].source for name, (origin, _) in selections.items()},
            "task": config.task, "min_freq": min_freq}
    write_index(staging, vocab, labels, meta, list(selections))
    return sizes, vocab, labels


def stream_all_splits(staging: Path, config: Config, counts: TokenCounts
                      ) -> tuple[dict[str, StreamedSplit], list[str]]:
    """Each split's provisional ids into a temp file, train first (its labels are the label set); (splits, labels)."""
    sources = split_sources(config)
    streamed = {}
    chunk_size, multilabel = config.data.chunk_size, config.task == "multilabel"
    with ChunkTokenizer(tokenizer_settings(config)) as tokenizer:
        streamed["train"] = stream_split("train", sources["train"], tokenizer, counts, staging / "train.tmp",
                                         chunk_size, None, multilabel)
        labels = sorted_labels(streamed["train"])
        for name in [name for name in sources if name != "train"]:
            streamed[name] = stream_split(name, sources[name], tokenizer, counts, staging / f"{name}.tmp",
                                          chunk_size, labels, multilabel)
    return streamed, labels


def select_rows(streamed: dict[str, StreamedSplit], config: Config, counts: TokenCounts) -> Selections:
    """Which rows of which streamed split make each final split: all of each, or without a valid file, train
    carved into train and valid (whose tokens are then uncounted)."""
    selections: Selections = {name: (name, None) for name in streamed}
    if "valid" in streamed:
        return selections
    train, multilabel = streamed["train"], config.task == "multilabel"
    carve_labels = np.zeros(len(train), dtype=np.int32) if multilabel else train.label_ids
    fit_idx, valid_idx = carve_indices(carve_labels, config.data.valid_fraction, config.seed, train.source,
                                       train.groups, stratified=not multilabel)
    for _, ids in read_rows(train, _mask(len(train), valid_idx)):
        counts.subtract(ids)  # the vocabulary comes from the texts that stay in train only
    selections.update(train=("train", fit_idx), valid=("train", valid_idx))
    return selections


def resolved_min_freq(config: Config, train: StreamedSplit, fit_rows: np.ndarray | None) -> int:
    """vocab.min_freq, or what `auto` picks from the lengths of the texts that stay in train (logged)."""
    min_freq = config.vocab.min_freq
    if min_freq != AUTO:
        return min_freq
    train_lengths = train.lengths if fit_rows is None else train.lengths[fit_rows]
    min_freq = auto_min_freq(train_lengths, config.vocab.max_length)
    log.info(f"vocab.min_freq auto -> {min_freq} "
             f"({'short texts in a small corpus: words seen once kept' if min_freq == 1 else 'words seen twice'})")
    return min_freq


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
