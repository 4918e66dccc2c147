"""serving/attributions.py: the exact contributions sum with the bias to the member's logit, IG is complete up to a
small delta, an ensemble mixes its members and a calibrated model divides by T, and cut tokens are unseen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from textclf_cli.data.text import Tokenizer, TokenizerSettings
from textclf_cli.models.bag import BagOfNgrams
from textclf_cli.models.calibration import TemperatureScaled
from textclf_cli.models.cnn import TextCNN
from textclf_cli.models.ensemble import Ensemble
from textclf_cli.models.lstm import LSTMClassifier
from textclf_cli.models.ngram import NgramLogReg
from textclf_cli.runs.checkpoint import LoadedModel
from textclf_cli.serving.attributions import (
    EXACT,
    INTEGRATED_GRADIENTS,
    attribute,
    bag_contributions,
    explain_text,
    ngram_contributions,
)

VOCAB = ["<pad>", "<unk>"] + [f"w{i}" for i in range(28)]
TEXT = torch.tensor([5, 7, 5, 9, 1, 7, 5, 12, 3])  # repeats: a word and a bigram occur twice, <unk> once


def fitted_ngram(ngrams: int = 3, chars: int = 3, seed: int = 0) -> NgramLogReg:
    """Counted on random texts (min_df 1, so most n-grams are kept), then random weights and bias."""
    generator = torch.Generator().manual_seed(seed)
    model = NgramLogReg(len(VOCAB), 3, ngrams=ngrams, buckets=101, min_df=1, chars=chars)
    ids = torch.randint(1, len(VOCAB), (40, 12), generator=generator)
    ids[:, 6:] = torch.where(torch.rand(40, 6, generator=generator) < 0.5, ids[:, 6:], 0)
    lengths = (ids > 0).sum(1).clamp(min=1)
    ids = torch.stack([torch.cat([row[row > 0], row[row == 0]]) for row in ids])  # padding after each text
    model.fit_counts([(ids, lengths, torch.arange(40) % 3), (TEXT[None], torch.tensor([9]), torch.tensor([1]))],
                     VOCAB)
    with torch.no_grad():
        model.weight.normal_(generator=generator)
        model.bias.normal_(generator=generator)
    return model.eval()


def logit(model: torch.nn.Module, token_ids: torch.Tensor, label: int) -> float:
    width = max(len(token_ids), int(getattr(model, "min_width", 1)))
    ids = torch.zeros(1, width, dtype=torch.long)
    ids[0, :len(token_ids)] = token_ids
    with torch.no_grad():
        return float(model(ids, torch.tensor([len(token_ids)]))[0, label])


@pytest.mark.parametrize(("ngrams", "chars", "folded"), [(1, 0, False), (3, 0, False), (3, 3, False), (2, 4, True)])
def test_ngram_contributions_sum_with_the_bias_to_the_members_logit(ngrams: int, chars: int, folded: bool) -> None:
    model = fitted_ngram(ngrams, chars)
    if folded:
        model.fold_ratios()
    for label in range(3):
        part = ngram_contributions(model, TEXT, label)
        assert part.method == EXACT and part.delta == 0.0 and part.values.shape == (len(TEXT),)
        assert part.baseline == pytest.approx(float(model.bias.detach()[label]))
        assert part.baseline + part.values.sum() == pytest.approx(logit(model, TEXT, label), abs=1e-5)


def test_an_ngram_model_that_kept_one_word_gives_it_the_whole_contribution() -> None:
    model = NgramLogReg(len(VOCAB), 2, ngrams=2, buckets=101, min_df=1)
    model.fit_counts([(torch.tensor([[5]]), torch.tensor([1]), torch.tensor([0]))])  # only w3 (id 5) is kept
    with torch.no_grad():
        model.weight[1] = torch.tensor([2.0, -1.0])
    part = ngram_contributions(model.eval(), torch.tensor([5, 8, 5]), 0)  # w3 twice: one feature, shared
    ratio = float(model.ratios[1, 0])
    # one kept feature of the text's three distinct ones (w3, w6, the bigram w3-w6 twice, w6-w3): L2 scale 1
    assert part.values.tolist() == pytest.approx([2.0 * ratio / 2, 0.0, 2.0 * ratio / 2])


def test_bag_contributions_are_exact() -> None:
    torch.manual_seed(0)
    model = BagOfNgrams(len(VOCAB), 3, embedding_dim=8, ngrams=3, buckets=50).eval()
    torch.nn.init.normal_(model.classifier.bias)
    for label in range(3):
        part = bag_contributions(model, TEXT, label)
        assert part.method == EXACT
        assert part.baseline + part.values.sum() == pytest.approx(logit(model, TEXT, label), abs=1e-5)


@pytest.mark.parametrize("family", ["cnn", "lstm"])
def test_integrated_gradients_are_complete_up_to_a_small_delta(family: str) -> None:
    torch.manual_seed(0)
    network = (TextCNN(len(VOCAB), 2, embedding_dim=8, num_filters=4, filter_sizes=[2, 3]) if family == "cnn" else
               LSTMClassifier(len(VOCAB), 2, embedding_dim=8, hidden_size=4)).eval()
    short = torch.tensor([5])  # shorter than the widest CNN filter: padded, the pad gets nothing
    for token_ids in (TEXT, short):
        (name, part), = attribute(network, token_ids, 1).items()
        assert (name, part.method) == (family, INTEGRATED_GRADIENTS)
        assert part.values.shape == (len(token_ids),)
        total = logit(network, token_ids, 1)
        assert part.baseline + part.values.sum() + part.delta == pytest.approx(total, abs=1e-6)
        assert abs(part.delta) < 0.01 * max(1.0, abs(total - part.baseline))


def test_an_ensemble_mixes_its_members_and_a_calibrated_model_divides_by_the_temperature() -> None:
    torch.manual_seed(0)
    network = TextCNN(len(VOCAB), 3, embedding_dim=8, num_filters=4, filter_sizes=[2, 3])
    ensemble = Ensemble(network, fitted_ngram()).eval()
    ensemble.mix.fill_(0.3)
    calibrated = TemperatureScaled(ensemble, 2.0)
    parts = attribute(calibrated, TEXT, 2)
    assert list(parts) == ["cnn", "ngram"]
    alone = ngram_contributions(ensemble.ngram, TEXT, 2)
    np.testing.assert_allclose(parts["ngram"].values, alone.values * 0.7 / 2.0)
    total = sum(part.baseline + part.values.sum() + part.delta for part in parts.values())
    assert total == pytest.approx(logit(calibrated, TEXT, 2), abs=1e-5)


def loaded(max_length: int, truncate: str) -> LoadedModel:
    model = TemperatureScaled(Ensemble(LSTMClassifier(len(VOCAB), 3, embedding_dim=8, hidden_size=4),
                                       fitted_ngram()).eval(), 1.5)
    return LoadedModel(model, VOCAB, ["a", "b", "c"], TokenizerSettings(), max_length, truncate, {}, Path("x.pt"),
                       temperature=1.5)


@pytest.mark.parametrize(("truncate", "seen"), [
    ("head", [1, 1, 1, 1, 0, 0, 0, 0]),
    ("tail", [0, 0, 0, 0, 1, 1, 1, 1]),
    ("head_tail", [1, 0, 0, 0, 0, 1, 1, 1]),  # a quarter from the start, the rest from the end
])
def test_tokens_cut_by_max_length_are_unseen_and_get_no_attribution(truncate: str, seen: list[int]) -> None:
    model = loaded(4, truncate)
    explained = explain_text(model, Tokenizer(model.tokenizer), "w3 w5 w3 new w7 w5 w3 w10", None)
    assert explained.tokens == ["w3", "w5", "w3", "new", "w7", "w5", "w3", "w10"]
    assert explained.seen == [bool(flag) for flag in seen]
    assert explained.unknown == [token == "new" for token in explained.tokens]
    values = explained.attributions()
    assert [value is not None for value in values] == explained.seen
    assert explained.mix == pytest.approx(0.5) and explained.temperature == 1.5
    assert explained.baseline + sum(v for v in values if v is not None) + explained.delta == \
        pytest.approx(explained.logit, abs=1e-5)
    assert explained.label == explained.predicted == max(explained.probabilities, key=explained.probabilities.get)


def test_an_empty_text_is_all_baseline() -> None:
    model = loaded(4, "head")
    explained = explain_text(model, Tokenizer(model.tokenizer), "", "b")
    assert explained.tokens == [] and explained.attributions() == [] and explained.label == "b"
    assert explained.baseline + explained.delta == pytest.approx(explained.logit, abs=1e-5)
