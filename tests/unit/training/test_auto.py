"""`auto` settings resolved from the training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from textclf_cli.config import check_resumable, validate_config
from textclf_cli.data.prepared import EncodedSplit, PreparedData
from textclf_cli.data.text import TokenizerSettings
from textclf_cli.training.auto import MAX_AUTO_LENGTH, auto_max_length, auto_min_freq, resolve_auto

CPU = torch.device("cpu")


def prepared_with_lengths(lengths: list[int]) -> PreparedData:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    split = EncodedSplit(np.ones(int(offsets[-1]), dtype=np.int32), offsets, np.zeros(len(lengths), dtype=np.int64))
    return PreparedData(Path(), ["<pad>", "<unk>"], ["a", "b"], TokenizerSettings(), {"train": split}, {})


def test_auto_max_length_covers_97_percent_rounded_to_the_batch_width() -> None:
    lengths = np.arange(1, 1001)  # 97% quantile 970.03 -> 992 (a multiple of 32)
    assert auto_max_length(lengths) == 992
    assert auto_max_length(np.array([3, 5, 9])) == 32  # short sentences: one width step
    assert auto_max_length(np.full(10, 50_000)) == MAX_AUTO_LENGTH
    assert auto_max_length(np.array([], dtype=np.int64)) == 32


def test_resolve_auto_writes_the_number_and_leaves_explicit_values() -> None:
    config = validate_config({"experiment": "e", "data": {"train": "t.csv"}}, "test")
    data = prepared_with_lengths([10] * 99 + [500])
    resolved = resolve_auto(config, data, CPU)
    assert resolved.vocab.max_length == 32 and config.vocab.max_length == "auto"
    explicit = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "vocab": {"max_length": 64}}, "test")
    assert resolve_auto(explicit, data, CPU).vocab.max_length == 64


def test_a_run_with_a_resolved_auto_length_can_be_resumed_with_auto() -> None:
    current = validate_config({"experiment": "e", "data": {"train": "t.csv"}}, "test")
    stored = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "vocab": {"max_length": 96}}, "test")
    check_resumable(stored, current, Path("runs/e/1"))  # no error


def test_auto_ngrams_take_trigrams_only_from_a_million_training_tokens() -> None:
    config = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "vocab": {"max_length": 400}}, "test")
    assert config.model.ensemble.ngrams == "auto"
    sentences = resolve_auto(config, prepared_with_lengths([20] * 10_000), CPU)  # 200k tokens
    assert sentences.model.ensemble.ngrams == 2
    reviews = resolve_auto(config, prepared_with_lengths([1000] * 2_500), CPU)  # 2.5M tokens, 1M once cut to 400
    assert reviews.model.ensemble.ngrams == 3
    alone = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "model": {"type": "ngram", "ngrams": 1}},
                            "test")
    assert resolve_auto(alone, prepared_with_lengths([20] * 10), CPU).model.ngrams == 1  # an explicit value stays


def test_auto_chars_only_for_short_texts_in_a_small_corpus() -> None:
    config = validate_config({"experiment": "e", "data": {"train": "t.csv"}}, "test")
    assert config.model.ensemble.chars == "auto"
    assert resolve_auto(config, prepared_with_lengths([20] * 10_000), CPU).model.ensemble.chars == 5  # sentences
    assert resolve_auto(config, prepared_with_lengths([60] * 20_000), CPU).model.ensemble.chars == 0  # 1.2M tokens
    assert resolve_auto(config, prepared_with_lengths([300] * 1_000), CPU).model.ensemble.chars == 0  # long texts
    reviews_config = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "vocab": {"max_length": 800}},
                                     "test")  # a config written for reviews, given sentences: their length counts
    assert resolve_auto(reviews_config, prepared_with_lengths([20] * 10_000), CPU).model.ensemble.chars == 5
    cut_short = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "vocab": {"max_length": 64}}, "test")
    assert resolve_auto(cut_short, prepared_with_lengths([300] * 1_000), CPU).model.ensemble.chars == 5
    explicit = validate_config({"experiment": "e", "data": {"train": "t.csv"},
                                "model": {"type": "lstm", "ensemble": {"chars": 3}}}, "test")
    assert resolve_auto(explicit, prepared_with_lengths([300] * 1_000), CPU).model.ensemble.chars == 3


def test_auto_min_freq_keeps_words_seen_once_only_in_short_texts_of_a_small_corpus() -> None:
    assert auto_min_freq(np.array([20] * 10_000), "auto") == 1  # sentences: their rare words' characters count
    assert auto_min_freq(np.array([60] * 20_000), "auto") == 2  # 1.2M tokens: words recur
    assert auto_min_freq(np.array([300] * 1_000), "auto") == 2  # long texts
    assert auto_min_freq(np.array([20] * 10_000), 800) == 1  # a config written for reviews, given sentences
    assert auto_min_freq(np.array([300] * 1_000), 64) == 1  # cut short
    config = validate_config({"experiment": "e", "data": {"train": "t.csv"}}, "test")
    data = prepared_with_lengths([20] * 100)
    data.meta["min_freq"] = 1  # what prepare chose and built the vocabulary with
    assert config.vocab.min_freq == "auto" and resolve_auto(config, data, CPU).vocab.min_freq == 1


def test_the_machine_settings_resolve_too_and_a_missing_export_extra_is_said_once(monkeypatch) -> None:
    from textclf_cli.training import auto

    messages: list[str] = []
    monkeypatch.setattr(auto.log, "info", messages.append)
    monkeypatch.setattr(auto, "missing_onnx_packages", lambda: ["onnxruntime"])
    config = validate_config({"experiment": "e", "data": {"train": "t.csv"}, "train": {"precision": "auto"}}, "test")
    assert (config.device, config.train.precision, config.output.export_onnx) == ("auto", "auto", "auto")
    resolved = resolve_auto(config, prepared_with_lengths([20] * 10), CPU)
    assert resolved.device == "cpu" and resolved.output.export_onnx is False
    assert resolved.train.precision in ("fp32", "bf16")  # bf16 only on a CPU with AMX
    assert [m for m in messages if m.startswith("output.export_onnx")] == [
        "output.export_onnx auto -> false: onnxruntime not installed, so predict RUN imports torch for every call "
        "(pip install 'textclf-cli[export]' (from a checkout: pip install -e '.[export]'))"]
