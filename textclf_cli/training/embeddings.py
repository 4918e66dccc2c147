"""Pretrained word vectors (GloVe / word2vec text, optionally gzipped) copied into a model's embedding."""

from __future__ import annotations

import gzip
from pathlib import Path

import torch
from torch import nn

from textclf_cli.console import log
from textclf_cli.errors import ConfigError, DataError


def read_vectors(path: Path, wanted: set[str], dim: int) -> dict[str, list[float]]:
    """Vectors for the wanted tokens; a first line of two integers (word2vec header) is skipped."""
    if not path.is_file():
        raise ConfigError(f"model.pretrained_embeddings: {path} not found")
    opener = gzip.open if path.suffix == ".gz" else open
    vectors: dict[str, list[float]] = {}
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    _check_dim(path, 1, int(parts[1]), dim)
                    continue
                if len(parts) < 2:
                    continue
                _check_dim(path, number, len(parts) - 1, dim)
                if parts[0] in wanted:
                    vectors[parts[0]] = [float(value) for value in parts[1:]]
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: unreadable word-vector file ({exc})") from None
    return vectors


def _check_dim(path: Path, line: int, found: int, dim: int) -> None:
    if found != dim:
        raise ConfigError(
            f"model.embedding_dim: is {dim} but {path}:{line} has {found}-dimensional vectors; "
            f"set model.embedding_dim: {found}"
        )


def apply_pretrained(model: nn.Module, path: Path, vocab: list[str], dim: int, freeze: bool) -> float:
    """Copy known vectors into model.embedding; returns the share of the vocabulary found."""
    embedding = model.embedding
    vectors = read_vectors(path, set(vocab[2:]), dim)
    with torch.no_grad():
        for index, token in enumerate(vocab):
            if token in vectors:
                embedding.weight[index] = torch.tensor(vectors[token])
    coverage = len(vectors) / max(1, len(vocab) - 2)
    embedding.weight.requires_grad_(not freeze)
    log.info(f"pretrained embeddings {path}: {len(vectors)} of {len(vocab) - 2} tokens found "
             f"({coverage:.1%} coverage), {'frozen' if freeze else 'fine-tuned'}")
    return coverage
