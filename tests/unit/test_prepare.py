"""prepare.py: the fingerprint, reuse without tokenizing again, the stratified valid carve, label checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config, tiny_examples, write_table
from textclf_cli import prepare as prepare_module
from textclf_cli.config import Config, load_config
from textclf_cli.data.sources import LabelledTexts
from textclf_cli.errors import DataError
from textclf_cli.prepare import carve_valid, fingerprint, prepare


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tiny_config(tmp_path, n_train=40, n_test=10)


def config_with(path: Path, *overrides: str) -> Config:
    return load_config(path, list(overrides))


@pytest.mark.parametrize(
    "override",
    [
        "tokenizer.kind=regexp",
        "tokenizer.lowercase=false",
        "tokenizer.strip_html=false",
        "tokenizer.strip_punctuation=true",
        "tokenizer.remove_stopwords=true",
        "vocab.max_size=10",
        "vocab.min_freq=2",
        "data.valid_fraction=0.3",
        "seed=8",  # the seed picks the carved validation split
        "data.text_column=body",
    ],
)
def test_fingerprint_changes_with_each_preprocessing_setting(config_path: Path, override: str) -> None:
    assert fingerprint(config_with(config_path, override)) != fingerprint(config_with(config_path))


@pytest.mark.parametrize(
    "override",
    ["vocab.max_length=7", "vocab.truncate=tail", "model.embedding_dim=4", "train.lr=0.5", "train.epochs=9",
     "experiment=other", "device=cpu"],
)
def test_fingerprint_ignores_settings_applied_after_prepare(config_path: Path, override: str) -> None:
    assert fingerprint(config_with(config_path, override)) == fingerprint(config_with(config_path))


@pytest.mark.parametrize("which", ["train", "test"])
def test_fingerprint_changes_with_an_input_files_content(config_path: Path, which: str) -> None:
    config = config_with(config_path)
    before = fingerprint(config)
    path = config.data.train if which == "train" else config.data.test
    path.write_text(path.read_text(encoding="utf-8").replace("movie", "film", 1), encoding="utf-8")
    assert fingerprint(config) != before


def test_fingerprint_does_not_depend_on_the_files_name(tmp_path: Path, config_path: Path) -> None:
    config = config_with(config_path)
    copy = tmp_path / "elsewhere/renamed.csv"
    copy.parent.mkdir()
    copy.write_bytes(config.data.train.read_bytes())
    assert fingerprint(config_with(config_path, f"data.train={copy}")) == fingerprint(config)


def test_unchanged_config_reuses_the_prepared_folder(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = prepare(config_with(config_path))
    assert first.root == config_with(config_path).data.prepared_dir / fingerprint(config_with(config_path))

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(prepare_module, "count_chunk", no_tokenizing)
    again = prepare(config_with(config_path, "train.lr=0.5", "vocab.max_length=9"))
    assert again.root == first.root
    assert again.vocab == first.vocab and again.labels == first.labels
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(again.splits[split].ids, first.splits[split].ids)
        np.testing.assert_array_equal(again.splits[split].targets, first.splits[split].targets)
    with pytest.raises(AssertionError, match="tokenized again"):  # a changed setting is never served stale data
        prepare(config_with(config_path, "tokenizer.lowercase=false"))
    assert sorted(path.name for path in first.root.parent.iterdir()) == [first.root.name]  # no half-written key


def test_prepared_splits_sizes_and_vocabulary_from_train_only(tmp_path: Path) -> None:
    config_path = tiny_config(tmp_path, n_train=40, n_test=10)
    test_file = load_config(config_path).data.test
    write_table(test_file, [("zebra unique words", "pos"), ("great film", "neg")])
    data = prepare(load_config(config_path))
    assert {split: len(encoded) for split, encoded in data.splits.items()} == {"train": 32, "valid": 8, "test": 2}
    assert data.labels == ["neg", "pos"]  # sorted
    assert data.vocab[:2] == ["<pad>", "<unk>"] and "zebra" not in data.vocab
    test = data.splits["test"]
    first_text = test.ids[test.offsets[0]:test.offsets[1]].tolist()
    assert first_text == [1, 1, 1]  # all unknown
    assert test.targets.tolist() == [1, 0]


def labelled(counts: dict[str, int]) -> LabelledTexts:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return LabelledTexts([f"text {i}" for i in range(len(labels))], labels, "train.csv",
                         list(range(2, len(labels) + 2)))


def test_valid_carve_is_stratified_disjoint_and_seeded() -> None:
    train = labelled({"a": 40, "b": 16, "c": 8})
    fit, valid = carve_valid(train, 0.25, seed=3)
    assert Counter(valid.labels) == {"a": 10, "b": 4, "c": 2}
    assert len(fit) == 48
    assert sorted(fit.texts + valid.texts, key=lambda t: int(t.split()[1])) == train.texts
    assert {train.texts.index(t) + 2 for t in valid.texts} == set(valid.rows)  # rows follow their texts
    again_fit, again_valid = carve_valid(train, 0.25, seed=3)
    assert again_valid.texts == valid.texts
    assert carve_valid(train, 0.25, seed=4)[1].texts != valid.texts


def test_valid_carve_keeps_at_least_one_example() -> None:
    fit, valid = carve_valid(labelled({"a": 5, "b": 5}), 0.01, seed=0)
    assert (len(fit), len(valid)) == (9, 1)


def test_one_class_training_data_is_refused(tmp_path: Path) -> None:
    config = load_config(tiny_config(tmp_path, labels=("pos",), n_train=20, n_test=5))
    with pytest.raises(DataError, match=r"only one class \('pos'\); a classifier needs at least two") as caught:
        prepare(config)
    assert str(caught.value).startswith(str(config.data.train))
    assert not config.data.prepared_dir.exists() or not any(config.data.prepared_dir.iterdir())


def test_a_test_label_never_seen_in_training_is_refused(tmp_path: Path) -> None:
    config = load_config(tiny_config(tmp_path, n_train=20, n_test=5))
    write_table(config.data.test, tiny_examples(4) + [("okay film", "mixed")])
    with pytest.raises(DataError) as caught:
        prepare(config)
    assert str(caught.value).startswith(f"{config.data.test}:6: label 'mixed' in the test split never occurs")
    assert "known labels: neg, pos" in str(caught.value)
