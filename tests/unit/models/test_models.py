"""models/: output shapes, padding never changes a text's logits, short and empty texts work."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from textclf_cli.data.loader import collate
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.data.vocab import PAD_ID
from textclf_cli.models.build import build_model, min_width
from textclf_cli.models.families import FAMILIES

VOCAB_SIZE, NUM_CLASSES = 50, 3

MODEL_CASES: list[tuple[str, dict[str, Any]]] = [
    ("cnn", {"filter_sizes": [2, 3, 5], "pooling": "max"}),
    ("cnn", {"filter_sizes": [3, 4], "pooling": "max_mean"}),
    ("cnn", {"filter_sizes": [1], "pooling": "max"}),
    *[("lstm", {"bidirectional": bidirectional, "num_layers": layers, "pooling": pooling})
      for bidirectional in (True, False) for layers in (1, 2) for pooling in ("last", "max", "mean", "max_mean")],
    ("bag", {"ngrams": 1}),
    ("bag", {"ngrams": 2}),
    ("bag", {"ngrams": 3}),
    ("ngram", {"ngrams": 1}),
    ("ngram", {"ngrams": 3}),
    ("cnn", {"filter_sizes": [2, 3], "ensemble": {"type": "ngram", "ngrams": 2, "buckets": 97}}),
]
SIZES = {"cnn": {"num_filters": 6, "embedding_dim": 8, "dropout": 0.3},
         "lstm": {"hidden_size": 6, "embedding_dim": 8, "dropout": 0.3},
         "bag": {"buckets": 97, "embedding_dim": 8, "dropout": 0.3}, "ngram": {"buckets": 97, "min_df": 1}}


def fitted(model: torch.nn.Module) -> torch.nn.Module:
    """An n-gram model (alone or in an ensemble) counted on random texts, with random weights: as after training."""
    counting = [module for module in model.modules() if hasattr(module, "fit_counts")]
    for module in counting:
        generator = torch.Generator().manual_seed(0)
        token_ids = torch.randint(1, VOCAB_SIZE, (40, 12), generator=generator)
        module.fit_counts([(token_ids, torch.full((40,), 12), torch.randint(0, NUM_CLASSES, (40,), generator=generator))])
        with torch.no_grad():
            module.weight.normal_(generator=generator)
    return model


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    model_type, kwargs = case
    return model_type + "-" + "-".join(f"{key}={value}" for key, value in kwargs.items())


@pytest.fixture(params=MODEL_CASES, ids=case_id)
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    model_type, kwargs = request.param
    torch.manual_seed(0)
    built = build_model(model_type, VOCAB_SIZE, NUM_CLASSES, {**SIZES[model_type], **kwargs})
    return fitted(built).eval()


def split_of(texts: list[list[int]]) -> EncodedSplit:
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(text) for text in texts], out=offsets[1:])
    ids = np.array([token for text in texts for token in text], dtype=np.int32)
    return EncodedSplit(ids, offsets, np.zeros(len(texts), dtype=np.int64))


def logits_of(model: torch.nn.Module, texts: list[list[int]], extra_padding: int = 0) -> torch.Tensor:
    """One batch of all texts padded to exactly the longest (at least the model's minimum) + extra_padding.

    Built by hand: the loader rounds widths up, which would give a text alone and among longer ones the same width.
    """
    lengths = [max(1, len(text)) for text in texts]
    width = max(max(lengths), min_width(model)) + extra_padding
    token_ids = torch.tensor([text + [PAD_ID] * (width - len(text)) for text in texts], dtype=torch.int64)
    with torch.no_grad():
        return model(token_ids, torch.tensor(lengths))


RNG = np.random.default_rng(1)
TEXTS = {
    "one token": [7],
    "short": [4, 9],
    "medium": RNG.integers(2, VOCAB_SIZE, size=6).tolist(),
    "with unk": [1, 12, 1, 30, 31],
    "empty": [],
}
LONGER = [RNG.integers(2, VOCAB_SIZE, size=n).tolist() for n in (17, 25)]


def test_every_model_family_has_a_case() -> None:
    assert {model_type for model_type, _ in MODEL_CASES} == set(FAMILIES)


def test_output_shape(model: torch.nn.Module) -> None:
    texts = list(TEXTS.values()) + LONGER
    logits = logits_of(model, texts)
    batch = collate(split_of(texts), np.arange(len(texts)), max_length=100, min_width=min_width(model))
    with torch.no_grad():  # the loader's wider batch gives the same result
        torch.testing.assert_close(model(batch.token_ids, batch.lengths), logits, rtol=1e-5, atol=1e-5)
    assert logits.shape == (len(texts), NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_padding_never_changes_the_logits(model: torch.nn.Module) -> None:
    for name, text in TEXTS.items():
        alone = logits_of(model, [text])[0]
        among_longer = logits_of(model, [LONGER[0], text, LONGER[1]], extra_padding=3)[1]
        torch.testing.assert_close(among_longer, alone, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_logits_depend_on_the_text(model: torch.nn.Module) -> None:
    logits = logits_of(model, [TEXTS["medium"], LONGER[0]])
    assert not torch.allclose(logits[0], logits[1])


def test_cnn_accepts_texts_shorter_than_its_widest_filter() -> None:
    model = build_model("cnn", VOCAB_SIZE, 2, {"embedding_dim": 4, "num_filters": 3, "filter_sizes": [3, 7]}).eval()
    assert min_width(model) == 7
    with torch.no_grad():  # called directly with a batch narrower than the filter, not through the loader
        logits = model(torch.tensor([[5, 6], [0, 0]]), torch.tensor([2, 1]))
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits, logits_of(model, [[5, 6], []]))


def test_training_mode_gradients_reach_the_embedding(model: torch.nn.Module) -> None:
    model.train()
    batch = collate(split_of([TEXTS["medium"], LONGER[0]]), np.arange(2), 100, min_width=min_width(model))
    outputs = model(batch.token_ids, batch.lengths)
    sum(outputs).sum().backward() if isinstance(outputs, tuple) else outputs.sum().backward()  # ensemble: members
    learned = getattr(model, "network", model)
    grad = (learned.embedding.weight if hasattr(learned, "embedding") else learned.weight).grad
    grad = grad.to_dense() if grad is not None and grad.is_sparse else grad  # a sparse EmbeddingBag
    assert grad is not None and grad[TEXTS["medium"]].abs().sum() > 0
    assert grad[0].abs().sum() == 0  # padding is never learned


def test_cnn_pools_the_relu_of_each_filter_over_the_windows_inside_the_text() -> None:
    """The fast pooling (padding zeroed, one global max pool, relu last) equals Kim's relu-then-max, text by text."""
    torch.manual_seed(3)
    model = build_model("cnn", VOCAB_SIZE, NUM_CLASSES, {"embedding_dim": 6, "num_filters": 5,
                                                          "filter_sizes": [2, 3]}).eval()
    with torch.no_grad():
        for conv in model.convs:
            conv.bias.fill_(-0.5)  # many windows negative, so relu decides some maxima
        texts = [TEXTS["short"], TEXTS["medium"], LONGER[0]]
        expected = []
        for text in texts:
            ids = torch.tensor(text + [PAD_ID] * max(0, 3 - len(text)))
            planes = model.embedding(ids).T[None]  # (1, E, T)
            pooled = [torch.nn.functional.conv1d(planes, conv.weight, conv.bias)[0, :, : max(1, len(text) - k + 1)]
                      .relu().amax(dim=1) for conv, k in zip(model.convs, model.filter_sizes)]
            expected.append(model.classifier(torch.cat(pooled)))
        torch.testing.assert_close(logits_of(model, texts, extra_padding=4), torch.stack(expected))
