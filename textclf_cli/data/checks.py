"""What `textclf check` finds in the configured splits: one streaming pass over each, read as prepare reads it.

Memory holds per text a token count and two 64-bit hashes (of the text and of its normalised form, for the
duplicate and leakage counts), the distinct tokens, the label counts, and a few example rows; never the texts.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from textclf_cli.config import CheckConfig, Config
from textclf_cli.console import RateProgress, log
from textclf_cli.data.sources import TextChunk
from textclf_cli.data.splits import Source, split_sources
from textclf_cli.data.tables import describe
from textclf_cli.data.text import ChunkTokenizer, TokenizerSettings, count_chunk
from textclf_cli.data.vocab import UNK_ID, TokenCounts
from textclf_cli.errors import DataError

ERROR, WARNING, INFO = "error", "warning", "info"
SEVERITIES = (ERROR, WARNING, INFO)
NOT_WORD = re.compile(r"[\W_]+")  # what normalising drops: punctuation, whitespace runs, underscores
LENGTH_QUANTILES = (0.5, 0.9, 0.97, 0.99, 1.0)
EXAMPLE_CHARS = 80


@dataclass
class Finding:
    """One thing check found: how bad it is, a stable code for scripts, a one-line message and a few examples."""

    severity: str
    code: str
    message: str
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message, "examples": self.examples}


@dataclass
class SplitScan:
    """What one pass over one split saw."""

    name: str
    source: str
    rows: int = 0
    dropped: int = 0
    unreadable: str | None = None  # the DataError that stopped reading the split
    labels: Counter = field(default_factory=Counter)  # label -> rows (multi-label: texts carrying it)
    length_parts: list[np.ndarray] = field(default_factory=list)
    token_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # by provisional id; not train
    labels_per_text: Counter = field(default_factory=Counter)  # multi-label only
    pairs: Counter = field(default_factory=Counter)  # multi-label: (label, label) -> texts carrying both

    @property
    def lengths(self) -> np.ndarray:
        return np.concatenate(self.length_parts) if self.length_parts else np.zeros(0, np.int64)

    def add_labels(self, labels: list, multilabel: bool) -> None:
        if not multilabel:
            self.labels.update(labels)
            return
        for label_set in labels:
            self.labels.update(label_set)
            self.labels_per_text[len(label_set)] += 1
            self.pairs.update(combinations(sorted(label_set), 2))

    def add_tokens(self, provisional_ids: np.ndarray) -> None:
        found = np.bincount(provisional_ids)
        if len(found) > len(self.token_counts):
            self.token_counts = np.concatenate([self.token_counts, np.zeros(len(found) - len(self.token_counts),
                                                                            np.int64)])
        self.token_counts[: len(found)] += found


def normalise(text: str) -> str:
    """The form duplicates are compared in besides the exact text: casefolded, punctuation and spacing dropped."""
    return NOT_WORD.sub(" ", text.casefold()).strip()


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def hash_texts(texts: list[str]) -> tuple[list[int], list[int]]:
    """(hashes of the texts as they are, hashes of their normalised forms)."""
    return [_hash(text) for text in texts], [_hash(normalise(text)) for text in texts]


def check_chunk(tokenizer: object, index: object, texts: list[str]) -> tuple:
    """count_chunk's tokens plus hash_texts, in one worker call (ChunkTokenizer.map runs it in its pool)."""
    return count_chunk(tokenizer, index, texts), *hash_texts(texts)


class DuplicateIndex:
    """Every text's hashes by split, to count repeats within a split, texts shared with an earlier split (leakage:
    valid and test against train) and the same normalised text under two labels; keeps a few examples of each."""

    def __init__(self, examples: int) -> None:
        self.max_examples = examples
        self.exact: dict[str, set[int]] = {}
        self.normal: dict[str, dict[int, str]] = {}  # split -> normalised hash -> the label it came with first
        self.counts: Counter = Counter()  # (kind, split, earlier split) -> rows; kind: exact, normal, conflict
        self.examples: dict[tuple[str, str, str], list[str]] = {}

    def add(self, split: str, source: str, chunk: TextChunk, exact: list[int], normal: list[int]) -> None:
        exact_seen = self.exact.setdefault(split, set())
        normal_seen = self.normal.setdefault(split, {})
        for text, label, where, exact_hash, normal_hash in zip(chunk.texts, chunk.labels, chunk.wheres, exact, normal):
            label_key = label if isinstance(label, str) else "|".join(sorted(label))
            for other in self.exact:  # earlier splits, then this one
                self._compare(split, other, text, label_key, (source, where), exact_hash, normal_hash)
            exact_seen.add(exact_hash)
            normal_seen.setdefault(normal_hash, label_key)

    def _compare(self, split: str, other: str, text: str, label_key: str, where: tuple, exact_hash: int,
                 normal_hash: int) -> None:
        other_label = self.normal[other].get(normal_hash)
        if other_label is None:
            return
        if exact_hash in self.exact[other]:
            self.counts["exact", split, other] += 1
        self._count("normal", split, other, where, text, "")  # an exact repeat is a normalised one too
        if other_label != label_key:
            self._count("conflict", split, other, where, text, f" is {label_key!r} here, {other_label!r} in {other}")

    def _count(self, kind: str, split: str, other: str, where: tuple, text: str, note: str) -> None:
        self.counts[kind, split, other] += 1
        shown = self.examples.setdefault((kind, split, other), [])
        if len(shown) < self.max_examples:  # formatted only for the few shown
            shown.append(f"{describe(*where)}: {_clip(text)!r}{note}")


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 3] + "..."


@dataclass
class Scan:
    """Every split's pass, the training tokens' counts, the duplicate index; `carved`: valid is cut from train."""

    splits: dict[str, SplitScan]
    counts: TokenCounts
    duplicates: DuplicateIndex
    multilabel: bool
    carved: bool


def scan_splits(config: Config, tokenize: bool = True) -> Scan:
    """One pass over each configured split, train first; without `tokenize`, rows, labels and hashes only."""
    sources = split_sources(config)
    counts, duplicates = TokenCounts(), DuplicateIndex(config.check.examples)
    multilabel = config.task == "multilabel"
    settings = TokenizerSettings(**config.tokenizer.model_dump())
    scans = {}
    with ChunkTokenizer(settings) if tokenize else nullcontext() as tokenizer:
        for name, source in sources.items():
            scans[name] = scan_split(name, source, tokenizer, counts, duplicates, config.data.chunk_size, multilabel)
    return Scan(scans, counts, duplicates, multilabel, carved="valid" not in sources)


def scan_split(name: str, source: Source, tokenizer: ChunkTokenizer | None, counts: TokenCounts,
               duplicates: DuplicateIndex, chunk_size: int, multilabel: bool) -> SplitScan:
    scan = SplitScan(name, source.name)
    try:
        with RateProgress(f"check {name}") as progress:
            for chunk, (tokenized, exact, normal) in _hashed_chunks(source, tokenizer, chunk_size):
                if tokenized is not None:
                    tokens, local_ids, lengths, local_counts = tokenized
                    ids = counts.merge(tokens, local_ids, local_counts if name == "train" else None)
                    scan.length_parts.append(lengths)
                    if name != "train":
                        scan.add_tokens(ids)
                scan.add_labels(chunk.labels, multilabel)
                duplicates.add(name, source.name, chunk, exact, normal)
                scan.rows += len(chunk)
                progress.update(scan.rows, source.fraction_done())
    except DataError as exc:
        scan.unreadable = str(exc).splitlines()[0]
    scan.dropped = getattr(source, "num_skipped", 0)
    return scan


def _hashed_chunks(source: Source, tokenizer: ChunkTokenizer | None, chunk_size: int) -> Iterator[tuple]:
    if tokenizer is not None:
        yield from tokenizer.map(check_chunk, source.chunks(chunk_size))
        return
    for chunk in source.chunks(chunk_size):
        yield chunk, (None, *hash_texts(chunk.texts))


# ---------------------------------------------------------------------------------------------------------
# findings: each function turns one part of the scan into findings with a severity, by the check: thresholds


def split_findings(scan: Scan, limits: CheckConfig) -> list[Finding]:
    found = []
    for split in scan.splits.values():
        if split.unreadable:
            found.append(Finding(ERROR, "unreadable", f"{split.name}: {split.unreadable}"))
        elif split.rows == 0:
            found.append(Finding(ERROR, "empty_split", f"{split.name}: no usable rows in {split.source}"))
        total = split.rows + split.dropped
        if split.dropped:
            share = split.dropped / max(1, total)
            severity = ERROR if share > limits.max_dropped else WARNING
            found.append(Finding(severity, "dropped_rows", f"{split.name}: {split.dropped} of {total} rows dropped "
                                                           f"({share:.1%}) for an empty text or label"))
    return found


def label_findings(scan: Scan, limits: CheckConfig) -> list[Finding]:
    train = scan.splits["train"].labels
    found = []
    if train:
        largest, smallest = max(train.values()), min(train.values())
        if largest / smallest > limits.max_imbalance:
            found.append(Finding(WARNING, "imbalance", f"train: imbalance {largest / smallest:.1f} (largest class "
                                                       f"{largest} rows, smallest {smallest}); consider "
                                                       f"train.class_weights: balanced"))
        rare = sorted((count, label) for label, count in train.items() if count < limits.min_per_class)
        if rare:
            shown = ", ".join(f"{label!r} ({count})" for count, label in rare[:10])
            found.append(Finding(WARNING, "rare_classes", f"train: {len(rare)} class(es) with fewer than "
                                                          f"{limits.min_per_class} rows: {shown}"))
    for split in scan.splits.values():
        unseen = sorted(set(split.labels) - set(train))
        if split.name != "train" and unseen:
            rows = sum(split.labels[label] for label in unseen)
            found.append(Finding(ERROR, "unseen_label", f"{split.name}: label(s) {', '.join(map(repr, unseen[:10]))} "
                                                        f"({rows} rows) never occur in train; prepare refuses them"))
    found += near_duplicate_labels(set().union(*(split.labels for split in scan.splits.values())))
    return found


def near_duplicate_labels(labels: set[str]) -> list[Finding]:
    """Labels that differ only in case, spacing or punctuation (`Sports` vs `sports`)."""
    groups: dict[str, list[str]] = {}
    for label in sorted(labels):
        groups.setdefault(normalise(label), []).append(label)
    return [Finding(WARNING, "similar_labels", f"labels {' and '.join(map(repr, spellings))} differ only in case, "
                                               f"spacing or punctuation: one class spelled two ways?")
            for spellings in groups.values() if len(spellings) > 1]


def length_findings(scan: Scan, max_length: int, limits: CheckConfig) -> list[Finding]:
    found = []
    for split in scan.splits.values():
        lengths = split.lengths
        if not len(lengths):
            continue
        cut = float((lengths > max_length).mean())
        empty = int((lengths == 0).sum())
        if cut > limits.max_truncated:
            found.append(Finding(WARNING, "truncated", f"{split.name}: {cut:.1%} of texts are longer than max_length "
                                                       f"{max_length} tokens and get cut"))
        if empty:
            found.append(Finding(WARNING, "no_tokens", f"{split.name}: {empty} text(s) have no tokens after "
                                                       f"cleaning (they train as empty texts)"))
    return found


def oov_rates(scan: Scan, max_size: int, min_freq: int) -> dict[str, float]:
    """The share of each valid/test split's tokens that train's vocabulary (as prepare builds it) lacks."""
    remap = scan.counts.remap(scan.counts.vocabulary(max_size, min_freq))
    rates = {}
    for split in scan.splits.values():
        tokens = split.token_counts
        if split.name == "train" or not tokens.sum():
            continue
        unknown = remap[: len(tokens)] == UNK_ID
        rates[split.name] = float(tokens[unknown].sum() / tokens.sum())
    return rates


def oov_findings(rates: dict[str, float], min_freq: int, limits: CheckConfig) -> list[Finding]:
    return [Finding(WARNING, "oov", f"{name}: {rate:.1%} of tokens are not in train's vocabulary (min_freq "
                                    f"{min_freq}); they become <unk>")
            for name, rate in rates.items() if rate > limits.max_oov]


def duplicate_findings(scan: Scan, limits: CheckConfig) -> list[Finding]:
    found = []
    duplicates = scan.duplicates
    for (kind, split, other), count in sorted(duplicates.counts.items()):
        if kind == "exact":
            continue
        rows = max(1, scan.splits[split].rows)
        share = count / rows
        exact = duplicates.counts["exact", split, other]
        examples = duplicates.examples.get((kind, split, other), [])
        if kind == "conflict":
            where = "within " + split if split == other else f"in {split} and {other}"
            severity = ERROR if share > limits.max_conflicts else WARNING
            found.append(Finding(severity, "conflicting_labels", f"{count} text(s) {where} with conflicting labels "
                                                                 f"({share:.1%} of {split})", examples))
        elif split == other:
            severity = WARNING if share > limits.max_duplicates else INFO
            found.append(Finding(severity, "duplicates", f"{split}: {count} text(s) repeat an earlier one "
                                                         f"({exact} exact; {share:.1%})", examples))
        else:
            severity = ERROR if share > limits.max_leakage else WARNING
            found.append(Finding(severity, "leakage", f"{split} shares {count} texts with {other} ({exact} exact; "
                                                      f"{share:.1%} of {split})", examples))
    if scan.carved and duplicates.counts["normal", "train", "train"]:
        found.append(Finding(INFO, "carved_valid", "valid is carved from train: train's repeats can land on both "
                                                   "sides of that carve"))
    return found


def multilabel_findings(scan: Scan) -> list[Finding]:
    if not scan.multilabel:
        return []
    found = []
    for split in scan.splits.values():
        no_label = split.labels_per_text.get(0, 0)
        if no_label:
            found.append(Finding(INFO if no_label < split.rows else ERROR, "no_label",
                                 f"{split.name}: {no_label} of {split.rows} texts carry no label"))
    return found


def summary_line(scan: Scan, found: list[Finding]) -> str:
    """`check: train 22500, test 25000 rows; 2 labels; 1 warning(s): test shares 212 texts with train`."""
    rows = ", ".join(f"{split.name} {split.rows}" for split in scan.splits.values())
    labels = len(scan.splits["train"].labels)
    serious = [finding for finding in found if finding.severity != INFO]
    counts = Counter(finding.severity for finding in serious)
    tally = ", ".join(f"{counts[severity]} {severity}(s)" for severity in (ERROR, WARNING) if counts[severity])
    detail = "; ".join(finding.message for finding in serious[:3]) + ("; ..." if len(serious) > 3 else "")
    return f"check: {rows} rows; {labels} labels" + (f"; {tally}: {detail}" if serious else "; no warnings")


def cheap_findings(scan: Scan, limits: CheckConfig) -> list[Finding]:
    """The findings that need no tokens: rows, drops, labels, duplicates, leakage, conflicts."""
    return (split_findings(scan, limits) + label_findings(scan, limits) + duplicate_findings(scan, limits)
            + multilabel_findings(scan))


def log_data_summary(config: Config) -> None:
    """What `train` logs before training: the cheap findings in one line (a warning when any is serious)."""
    try:
        scan = scan_splits(config, tokenize=False)
    except DataError as exc:  # prepare has just read these files: a summary never stops training
        log.warning(f"check: skipped ({str(exc).splitlines()[0]})")
        return
    found = cheap_findings(scan, config.check)
    line = summary_line(scan, found)
    (log.warning if any(finding.severity != INFO for finding in found) else log.info)(
        line + ("; run `textclf check CONFIG` for the details" if found else ""))
