"""Settings left to `auto` in the config take their values from the prepared training split.

The resolved numbers replace `auto` in the run's config.yaml and checkpoint, so a run always records what it used.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from textclf_cli.config import AUTO, Config
from textclf_cli.console import log
from textclf_cli.data.loader import WIDTH_MULTIPLE
from textclf_cli.data.prepared import PreparedData
from textclf_cli.precision import resolve_precision
from textclf_cli.serving.sidecar import EXTRAS_HINT, missing_onnx_packages

LENGTH_QUANTILE = 0.97  # texts longer than this share of the training texts are truncated (head_tail by default)
MAX_AUTO_LENGTH = 1024  # beyond this a CNN/LSTM pays linearly for tokens that rarely change the label
# Hash buckets for the n-gram model: a corpus of N tokens has fewer than N distinct n-grams of each order, and
# those seen in >= min_df texts (the only ones the model's table keeps) far fewer, so about one bucket per token
# keeps collisions rare. Counting holds buckets x classes counts (float32), hence the cap per class; the floor
# keeps tiny data cheap. (The measurements behind these rules: bench/RESULTS.md.)
MIN_AUTO_BUCKETS, MAX_AUTO_BUCKETS = 2**14, 2**23
MAX_COUNT_CELLS = 2**26  # 256 MB of class counts: 2^23 buckets up to 8 classes, fewer beyond
# Trigrams for the n-gram model only from this many training tokens on: in a smaller corpus few trigrams recur,
# and the naive-Bayes ratios of those that do are noise.
TRIGRAM_MIN_TOKENS = 1_000_000
# Short texts in a small corpus: under this many training tokens, with 97% of the texts (or the cut, if shorter) within
# this many tokens. There most word forms are rare, so
# - the n-gram model also reads the character n-grams inside words (a text costs tens of features per token, hence
#   the length bound);
# - words seen once join the vocabulary (min_freq 1), so that their characters count too.
SMALL_CORPUS_TOKENS, SHORT_TEXT_LENGTH = 1_000_000, 128
AUTO_CHARS = 5


def resolve_auto(config: Config, data: PreparedData, device: torch.device) -> Config:
    """A copy of `config` with every `auto` replaced by the value the training data (or, for the device, the
    precision and the export, this machine) calls for: the one place where `auto` becomes a value."""
    resolved = resolve_machine_auto(config.model_copy(deep=True), device)
    lengths = data.splits["train"].lengths
    if resolved.vocab.max_length == AUTO:
        resolved.vocab.max_length = auto_max_length(lengths)
        log.info(f"vocab.max_length auto -> {resolved.vocab.max_length} tokens "
                 f"({LENGTH_QUANTILE:.0%} of the training texts are no longer)")
    if resolved.vocab.min_freq == AUTO:  # chosen by prepare, which built the vocabulary
        resolved.vocab.min_freq = int(data.meta.get("min_freq", 2))
    ngram = ngram_config(resolved)
    key = "model" if resolved.model.type == "ngram" else "model.ensemble"
    short, tokens, length = short_texts_in_small_corpus(lengths, resolved.vocab.max_length)
    if ngram is not None and ngram.ngrams == AUTO:
        ngram.ngrams = 3 if tokens >= TRIGRAM_MIN_TOKENS else 2
        log.info(f"{key}.ngrams auto -> {ngram.ngrams} ({tokens:,} training tokens; trigrams from "
                 f"{TRIGRAM_MIN_TOKENS:,} on)")
    if ngram is not None and ngram.chars == AUTO:
        ngram.chars = AUTO_CHARS if short else 0
        log.info(f"{key}.chars auto -> {ngram.chars} ({tokens:,} training tokens, {LENGTH_QUANTILE:.0%} of the "
                 f"texts within {length}; character n-grams below {SMALL_CORPUS_TOKENS:,} tokens and "
                 f"{SHORT_TEXT_LENGTH} per text)")
    if ngram is not None and ngram.buckets == AUTO:
        ngram.buckets = auto_buckets(lengths, resolved.vocab.max_length, len(data.labels))
        log.info(f"{key}.buckets auto -> {ngram.buckets} hash buckets for n-grams")
    if resolved.train.refit == AUTO:
        resolved.train.refit = resolved.data.valid is None
        log.info(f"train.refit auto -> {str(resolved.train.refit).lower()} "
                 f"({'validation is carved from the training data' if resolved.train.refit else 'data.valid is its own file'})")
    return resolved


def resolve_machine_auto(resolved: Config, device: torch.device) -> Config:
    """device, train.precision and output.export_onnx: what this machine has (a resumed run resolves them anew)."""
    if resolved.device == AUTO:
        resolved.device = str(device)
    if resolved.train.precision == AUTO:
        resolved.train.precision = resolve_precision(AUTO, device).name
        log.info(f"train.precision auto -> {resolved.train.precision} on {device}")
    if resolved.output.export_onnx == AUTO:
        missing = missing_onnx_packages()
        resolved.output.export_onnx = not missing
        if missing:
            log.info(f"output.export_onnx auto -> false: {' and '.join(missing)} not installed, so predict RUN "
                     f"imports torch for every call ({EXTRAS_HINT})")
    return resolved


def ngram_config(config: Config):  # noqa: ANN201 - NgramConfig | None, the model itself or its ensemble partner
    if config.model.type == "ngram":
        return config.model
    return getattr(config.model, "ensemble", None)


def auto_buckets(lengths: np.ndarray, max_length: int, num_classes: int = 2) -> int:
    """The power of two at or above the training token count (after truncation), within the bounds above."""
    tokens = training_tokens(lengths, max_length)
    ceiling = max(MIN_AUTO_BUCKETS, min(MAX_AUTO_BUCKETS, 1 << (MAX_COUNT_CELLS // max(1, num_classes)).bit_length() - 1))
    return int(min(ceiling, max(MIN_AUTO_BUCKETS, 1 << max(0, tokens - 1).bit_length())))


def short_texts_in_small_corpus(lengths: np.ndarray, max_length: int | str) -> tuple[bool, int, int]:
    """(short texts in a small corpus?, training tokens after the cut, the length 97% of the texts keep).

    The texts' own length counts, not only the cut: a config written for reviews may meet sentences."""
    own_length = auto_max_length(lengths)
    cut = own_length if max_length == AUTO else int(max_length)
    tokens, length = training_tokens(lengths, cut), min(cut, own_length)
    return tokens < SMALL_CORPUS_TOKENS and length <= SHORT_TEXT_LENGTH, tokens, length


def auto_min_freq(lengths: np.ndarray, max_length: int | str) -> int:
    """vocab.min_freq for `auto`: 1 on short texts in a small corpus, else 2 (a word seen once names one text)."""
    return 1 if short_texts_in_small_corpus(lengths, max_length)[0] else 2


def training_tokens(lengths: np.ndarray, max_length: int) -> int:
    """Tokens the model sees in the training split (each text cut to max_length)."""
    return int(np.minimum(lengths, max_length).sum())


def auto_max_length(lengths: np.ndarray) -> int:
    """The LENGTH_QUANTILE of the token counts, rounded up to the loader's width multiple, capped."""
    if len(lengths) == 0:
        return WIDTH_MULTIPLE
    quantile = float(np.quantile(lengths, LENGTH_QUANTILE))
    rounded = max(1, math.ceil(quantile / WIDTH_MULTIPLE)) * WIDTH_MULTIPLE
    return min(rounded, MAX_AUTO_LENGTH)
