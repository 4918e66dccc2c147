"""Pretrained word vectors: GloVe/word2vec text files, gzipped or not, coverage, freezing, dimension checks."""

from __future__ import annotations

import gzip

import pytest
import torch

from tests.conftest import tiny_config
from textclf_cli.errors import ConfigError
from textclf_cli.models.build import build_model
from textclf_cli.training.embeddings import apply_pretrained, read_vectors

VOCAB = ["<pad>", "<unk>", "great", "awful", "film", "zzz"]
LINES = ["great 1 0 0 0", "awful 0 1 0 0", "film 0 0 1 0", "unused 9 9 9 9"]


def write_vectors(path, header: bool = False, gz: bool = False):
    text = ("4 4\n" if header else "") + "\n".join(LINES) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("header,gz", [(False, False), (True, False), (False, True), (True, True)])
def test_read_vectors_glove_and_word2vec_plain_or_gzipped(tmp_path, header, gz):
    path = write_vectors(tmp_path / ("v.txt.gz" if gz else "v.txt"), header, gz)
    vectors = read_vectors(path, {"great", "film", "zzz"}, 4)
    assert vectors == {"great": [1.0, 0.0, 0.0, 0.0], "film": [0.0, 0.0, 1.0, 0.0]}


def test_apply_copies_vectors_reports_coverage_and_freezes(tmp_path, monkeypatch):
    path = write_vectors(tmp_path / "v.txt")
    model = build_model("cnn", len(VOCAB), 2, {"embedding_dim": 4, "num_filters": 2, "filter_sizes": [2]})
    messages: list[str] = []
    monkeypatch.setattr("textclf_cli.training.embeddings.log.info", messages.append)
    coverage = apply_pretrained(model, path, VOCAB, 4, freeze=True)
    assert coverage == pytest.approx(3 / 4)  # great, awful, film of the 4 non-special tokens
    assert torch.equal(model.embedding.weight[VOCAB.index("awful")], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert not model.embedding.weight.requires_grad
    assert "3 of 4 tokens found (75.0% coverage), frozen" in messages[0]


def test_dimension_mismatch_is_a_config_error(tmp_path):
    path = write_vectors(tmp_path / "v.txt")
    with pytest.raises(ConfigError, match=r"^model.embedding_dim: is 8 but .*v.txt:1 has 4-dimensional vectors"):
        read_vectors(path, {"great"}, 8)


def test_training_with_pretrained_vectors_end_to_end(tmp_path, cli):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("\n".join(f"{word} " + " ".join(["0.5"] * 16) for word in ("great", "awful", "movie")) + "\n")
    config = tiny_config(tmp_path, train={"epochs": 1})
    result = cli("train", str(config), "--set", f"model.pretrained_embeddings={vectors}",
                 "--set", "model.freeze_embeddings=true")
    assert result.exit_code == 0, result.output
    assert "coverage), frozen" in result.stderr


def test_mismatched_dimension_fails_training_with_exit_2(tmp_path, cli):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("great 0.1 0.2 0.3\n")
    config = tiny_config(tmp_path, train={"epochs": 1})
    result = cli("train", str(config), "--set", f"model.pretrained_embeddings={vectors}")
    assert result.exit_code == 2
    assert "model.embedding_dim: is 16 but" in result.stderr
    assert "Traceback" not in result.output
