"""prepare.py: the fingerprint, reuse without tokenizing again, the stratified valid carve, label checks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config, tiny_examples, write_table
from textclf_cli.config import Config, load_config
from textclf_cli.data import splits as splits_module
from textclf_cli.data.sources import LabelledTexts
from textclf_cli.data.splits import carve_valid, fingerprint
from textclf_cli.errors import DataError
from textclf_cli.prepare import prepare, tokenizer_settings


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tiny_config(tmp_path, n_train=40, n_test=10)


def config_with(path: Path, *overrides: str) -> Config:
    return load_config(path, list(overrides))


@pytest.mark.parametrize(
    "override",
    [
        "tokenizer.kind=toktok",
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

    monkeypatch.setattr(splits_module, "count_chunk", no_tokenizing)
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


# ---------------------------------------------------------------------------------------------------------
# streaming: the output does not depend on how the input was chunked


def prepared_bytes(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.iterdir())}


def reference_prepare(config: Config) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The whole computation in memory, the simple way: what streaming must reproduce exactly."""
    from textclf_cli.data.sources import read_table
    from textclf_cli.data.text import Tokenizer
    from textclf_cli.data.vocab import encode, token_index, vocab_from_counts

    data = config.data
    train = read_table(data.train, "csv", "text", "label")
    splits = dict(zip(("train", "valid"), carve_valid(train, data.valid_fraction, config.seed)))
    splits["test"] = read_table(data.test, "csv", "text", "label")
    tokenizer = Tokenizer(tokenizer_settings(config))
    tokens = {name: [tokenizer(text) for text in split.texts] for name, split in splits.items()}
    train_counts = Counter(token for text_tokens in tokens["train"] for token in text_tokens)
    vocab = vocab_from_counts(train_counts, config.vocab.max_size, config.vocab.min_freq)
    labels = sorted(set(splits["train"].labels))
    arrays = {}
    for name, split in splits.items():
        ids, offsets = encode(tokens[name], token_index(vocab))
        arrays[name] = (ids, offsets, np.array([labels.index(label) for label in split.labels]))
    return arrays, vocab


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
def test_chunked_prepare_is_byte_identical_and_matches_the_in_memory_computation(
        tmp_path: Path, chunk_size: int) -> None:
    config_path = tiny_config(tmp_path, n_train=50, n_test=12, vocab={"max_size": 15, "min_freq": 2})
    whole = prepare(config_with(config_path, "data.chunk_size=100000", f"data.prepared_dir={tmp_path / 'one'}"))
    chunked = prepare(config_with(config_path, f"data.chunk_size={chunk_size}", f"data.prepared_dir={tmp_path / 'many'}"))
    assert prepared_bytes(chunked.root) == prepared_bytes(whole.root)
    expected, vocab = reference_prepare(config_with(config_path))
    assert chunked.vocab == vocab and len(vocab) == 15  # the cap cuts through tied counts
    for name, (ids, offsets, targets) in expected.items():
        split = chunked.splits[name]
        np.testing.assert_array_equal(split.ids, ids)
        np.testing.assert_array_equal(split.offsets, offsets)
        np.testing.assert_array_equal(split.targets, targets)


def test_prepare_in_worker_processes_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf_cli.data import text

    config_path = tiny_config(tmp_path, n_train=60, n_test=10)
    alone = prepare(config_with(config_path, f"data.prepared_dir={tmp_path / 'alone'}"))
    monkeypatch.setattr(text, "PARALLEL_MIN_TEXTS", 0)  # a pool from the first chunk, several chunks in flight
    pooled = prepare(config_with(config_path, "data.chunk_size=4", f"data.prepared_dir={tmp_path / 'pooled'}"))
    assert prepared_bytes(pooled.root) == prepared_bytes(alone.root)


def test_prepared_arrays_are_memory_mapped_read_only(config_path: Path) -> None:
    data = prepare(config_with(config_path))
    again = prepare(config_with(config_path))  # the cached folder, loaded
    for loaded in (data, again):
        ids = loaded.splits["train"].ids
        assert isinstance(ids, np.memmap) and not ids.flags.writeable


def test_gzip_and_parquet_sources_prepare_like_the_csv(tmp_path: Path) -> None:
    import gzip

    import pandas as pd

    config_path = tiny_config(tmp_path, n_train=40, n_test=10)
    config = config_with(config_path)
    from_csv = prepare(config)
    packed = tmp_path / "data/train.csv.gz"
    packed.write_bytes(gzip.compress(config.data.train.read_bytes()))
    parquet = tmp_path / "data/train.parquet"
    pd.read_csv(config.data.train).to_parquet(parquet, row_group_size=7)
    test_parquet = tmp_path / "data/test.parquet"
    pd.read_csv(config.data.test).to_parquet(test_parquet)
    from_gzip = prepare(config_with(config_path, f"data.train={packed}", f"data.prepared_dir={tmp_path / 'gz'}"))
    from_parquet = prepare(config_with(config_path, "data.format=parquet", f"data.train={parquet}",
                                       f"data.test={test_parquet}", f"data.prepared_dir={tmp_path / 'pq'}"))
    for other in (from_gzip, from_parquet):
        assert other.vocab == from_csv.vocab and other.labels == from_csv.labels
        for name, split in from_csv.splits.items():
            np.testing.assert_array_equal(other.splits[name].ids, split.ids)
            np.testing.assert_array_equal(other.splits[name].targets, split.targets)


def test_a_parquet_test_label_never_seen_names_row_group_and_row(tmp_path: Path) -> None:
    import pandas as pd

    config_path = tiny_config(tmp_path, n_train=20, n_test=5)
    train_parquet, test_parquet = tmp_path / "data/train.parquet", tmp_path / "data/test.parquet"
    pd.read_csv(config_with(config_path).data.train).to_parquet(train_parquet)
    pd.DataFrame({"text": ["good film", "okay film"], "label": ["pos", "mixed"]}).to_parquet(test_parquet)
    with pytest.raises(DataError, match=rf"{test_parquet}: row group 0, row 1: label 'mixed' in the test split never"):
        prepare(config_with(config_path, "data.format=parquet", f"data.train={train_parquet}",
                            f"data.test={test_parquet}"))


def test_a_parquet_file_read_as_csv_says_so(tmp_path: Path) -> None:
    import pandas as pd

    config_path = tiny_config(tmp_path, n_train=20, n_test=5)
    parquet = tmp_path / "data/train.parquet"
    pd.read_csv(config_with(config_path).data.train).to_parquet(parquet)
    with pytest.raises(DataError, match=rf"^{parquet}: this is a Parquet file; set data.format: parquet"):
        prepare(config_with(config_path, f"data.train={parquet}"))


def test_carve_keeps_each_group_whole_on_one_side() -> None:
    groups = [f"tt{i // 5}" for i in range(200)]  # 40 movies of 5 reviews
    texts = LabelledTexts([f"review {i}" for i in range(200)], ["pos" if i % 2 else "neg" for i in range(200)],
                          "reviews", list(range(1, 201)), groups)
    fit, valid = carve_valid(texts, 0.1, seed=42)
    assert set(fit.groups).isdisjoint(valid.groups)
    assert len(valid) == 20 and len(fit) + len(valid) == 200  # 4 of the 40 movies
    again_fit, _ = carve_valid(texts, 0.1, seed=42)
    assert again_fit.texts == fit.texts  # seeded


def test_imdb_reviews_carry_their_movie_from_the_urls_files(tmp_path: Path) -> None:
    import io
    import tarfile

    from textclf_cli.data.sources import read_imdb

    members = {"aclImdb/train/urls_pos.txt": "http://www.imdb.com/title/tt0001/usercomments\n"
                                             "http://www.imdb.com/title/tt0002/usercomments\n",
               "aclImdb/train/urls_neg.txt": "http://www.imdb.com/title/tt0003/usercomments\n",
               "aclImdb/train/pos/0_9.txt": "great", "aclImdb/train/pos/1_8.txt": "fine",
               "aclImdb/train/neg/0_1.txt": "bad", "aclImdb/test/pos/0_9.txt": "good",
               "aclImdb/test/neg/0_2.txt": "awful"}
    archive = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    splits = read_imdb(archive)
    by_text = dict(zip(splits["train"].texts, splits["train"].groups))
    assert by_text == {"great": "tt0001", "fine": "tt0002", "bad": "tt0003"}
    assert splits["test"].groups == []  # no urls files for test: no groups, the carve falls back to stratified


def test_auto_min_freq_keeps_words_seen_once_in_short_texts_and_records_the_choice(tmp_path: Path) -> None:
    config_path = tiny_config(tmp_path, n_train=40, n_test=10, vocab={"min_freq": "auto"})
    data_files = config_with(config_path).data
    train_csv = data_files.train
    train_csv.write_text(train_csv.read_text(encoding="utf-8") + "zanzibar is a movie,pos\n", encoding="utf-8")
    valid = f"data.valid={data_files.test}"  # all of train.csv is training data: the word is seen once there
    data = prepare(config_with(config_path, valid))
    twice = prepare(config_with(config_path, valid, "vocab.min_freq=2"))
    assert data.meta["min_freq"] == 1 and "zanzibar" in data.vocab  # short texts in a small corpus
    assert twice.meta["min_freq"] == 2 and "zanzibar" not in twice.vocab
    assert set(twice.vocab) < set(data.vocab) and twice.root != data.root
    # the value auto chose (a resumed run's config.yaml) reads the same arrays, not a copy
    assert prepare(config_with(config_path, valid, "vocab.min_freq=1")).root == data.root


def test_prepare_hashes_each_input_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the path that looks for data auto prepared needs a second fingerprint: it reuses the first one's digests
    config_path = tiny_config(tmp_path, n_train=40, n_test=10, vocab={"min_freq": "auto"})
    prepare(config_with(config_path))
    hashed: list[Path] = []
    real_sha = splits_module.sha256_of
    monkeypatch.setattr(splits_module, "sha256_of", lambda path: hashed.append(path) or real_sha(path))
    config = config_with(config_path, "vocab.min_freq=1")
    prepare(config)
    assert sorted(hashed) == sorted([config.data.train, config.data.test])


def test_force_rebuilds_the_folder_in_place(config_path: Path) -> None:
    # --force used to build fresh arrays in a staging folder and then throw them away, keeping the old folder
    data = prepare(config_with(config_path))
    stale = data.root / "left-by-the-old-folder"
    stale.write_text("x")
    (data.root / "train.ids.npy").write_bytes(b"")
    again = prepare(config_with(config_path), force=True)
    assert again.root == data.root and not stale.exists()
    assert len(again.splits["train"].ids) == int(again.splits["train"].offsets[-1]) > 0
    assert sorted(path.name for path in data.root.parent.iterdir()) == [data.root.name]  # no staging left


@pytest.mark.parametrize(
    ("name", "damage"),
    [("train.ids.npy", b""), ("train.offsets.npy", None), ("meta.json", b'{"tokenizer": {'), ("vocab.json", b"[]x"),
     ("labels.json", None), ("meta.json", b"[]")],
)
def test_a_damaged_prepared_folder_says_to_run_prepare_force(config_path: Path, name: str,
                                                               damage: bytes | None) -> None:
    root = prepare(config_with(config_path)).root
    path = root / name
    if damage is None:  # truncated: the header survives, the values do not
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2 or 1])
    else:
        path.write_bytes(damage)
    with pytest.raises(DataError) as caught:
        prepare(config_with(config_path))
    assert str(caught.value).startswith(f"prepared data in {root} is damaged: run prepare --force (")
    assert prepare(config_with(config_path), force=True).root == root
