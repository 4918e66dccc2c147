"""The n-gram logistic regression (models/ngram.py) and the network + n-gram ensemble (models/ensemble.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textclf_cli.config import validate_config
from textclf_cli.errors import ConfigError
from textclf_cli.models.build import build_model, param_groups
from textclf_cli.models.ensemble import Ensemble
from textclf_cli.models.ngram import NgramLogReg
from textclf_cli.training.auto import MAX_AUTO_BUCKETS, MIN_AUTO_BUCKETS, auto_buckets


def batch(texts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(text) for text in texts)
    return (torch.tensor([text + [0] * (width - len(text)) for text in texts]),
            torch.tensor([max(1, len(text)) for text in texts]))


def tiny_ensemble() -> Ensemble:
    return build_model("cnn", 30, 2, {"embedding_dim": 4, "num_filters": 3, "filter_sizes": [2],
                                      "ensemble": {"type": "ngram", "buckets": 50}})


def assert_predicts_the_mix(ensemble: Ensemble, token_ids: torch.Tensor, lengths: torch.Tensor, mix: float) -> None:
    """In eval mode the ensemble's output is mix * network + (1 - mix) * n-gram model."""
    ensemble.eval()
    ensemble.mix.fill_(mix)
    with torch.no_grad():
        expected = mix * ensemble.network(token_ids, lengths) + (1 - mix) * ensemble.ngram(token_ids, lengths)
        torch.testing.assert_close(ensemble(token_ids, lengths), expected)


def test_features_are_the_distinct_ngrams_of_each_text_and_never_padding() -> None:
    model = NgramLogReg(vocab_size=20, num_classes=2, ngrams=3, buckets=101)
    token_ids, lengths = batch([[5, 5, 5, 5], [7]])
    features = model.features(token_ids, lengths)
    first = sorted(int(f) for f in features[0] if f > 0)
    assert first[0] == 5 and len(first) == 3  # unigram 5, bigram (5, 5), trigram (5, 5, 5): once each
    assert all(20 <= f < 20 + 101 for f in first[1:])  # hashed rows sit after the vocabulary
    assert sorted(int(f) for f in features[1] if f > 0) == [7]  # one token: no n-gram reaches into the padding


def test_counts_give_naive_bayes_ratios_and_drop_rare_ngrams() -> None:
    model = NgramLogReg(vocab_size=20, num_classes=2, ngrams=1, min_df=2)
    texts = [[3, 4], [3, 4], [3, 9], [6, 4], [6, 4], [6, 11]]  # 3 only in class 0, 6 only in class 1
    token_ids, lengths = batch(texts)
    model.fit_counts([(token_ids, lengths, torch.tensor([0, 0, 0, 1, 1, 1]))])
    ratios = model.ratios[model.table_row.long()]  # per feature
    assert ratios[3, 0] > 0 > ratios[3, 1]
    assert ratios[6, 1] > 0 > ratios[6, 0]
    assert abs(float(ratios[4, 0])) < 1e-6  # in both classes alike
    assert model.table_row[[3, 4, 6]].tolist() == [1, 2, 3]  # the table holds the kept n-grams only
    assert model.table_row[[9, 11, 0]].tolist() == [0, 0, 0]  # in one text only; padding never
    assert model.weight.shape == model.ratios.shape == (4, 2)  # row 0 stands for every dropped feature
    assert int(model.train_size) == 6
    with torch.no_grad():
        model.weight.fill_(1.0)
        logits = model(*batch([[3], [6], [9]]))
    assert logits[0].argmax() == 0 and logits[1].argmax() == 1
    torch.testing.assert_close(logits[2], model.bias.detach())  # only dropped n-grams: the bias alone


def test_counts_accept_multilabel_targets() -> None:
    model = NgramLogReg(vocab_size=20, num_classes=3, ngrams=1, min_df=1)
    token_ids, lengths = batch([[3], [3], [5]])
    model.fit_counts([(token_ids, lengths, torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.uint8))])
    ratios = model.ratios[model.table_row.long()]
    assert ratios[3, 0] > 0 and ratios[3, 2] < 0 and ratios[5, 2] > 0


def test_param_groups_give_the_ngram_model_its_own_step_and_penalty_per_text() -> None:
    ensemble = build_model("cnn", 30, 2, {"embedding_dim": 4, "num_filters": 3, "filter_sizes": [2],
                                          "ensemble": {"type": "ngram", "buckets": 50, "lr": 0.05, "l2": 2.0}})
    assert isinstance(ensemble, Ensemble)
    ensemble.ngram.train_size.fill_(400)
    groups = param_groups(ensemble, lr=1e-3, weight_decay=0.0)
    network, weight, bias = groups
    assert network["lr"] == 1e-3 and {id(p) for p in network["params"]} == {id(p) for p in ensemble.network.parameters()}
    assert weight["params"] == [ensemble.ngram.weight] and weight["lr"] == 0.05
    assert weight["weight_decay"] == pytest.approx(2.0 / 400)
    assert bias["weight_decay"] == 0.0


def test_ensemble_trains_members_apart_and_predicts_with_the_fitted_mix() -> None:
    ensemble = tiny_ensemble()
    token_ids, lengths = batch([[3, 4, 5], [6, 7]])
    ensemble.train()
    network, ngram = ensemble(token_ids, lengths)
    assert network.shape == ngram.shape == (2, 2)
    assert_predicts_the_mix(ensemble, token_ids, lengths, 0.25)


def test_fit_mix_weighs_the_member_that_predicts_validation() -> None:
    ensemble = Ensemble(torch.nn.Identity(), torch.nn.Identity())
    targets = torch.tensor([0, 1, 1, 0])
    right = torch.nn.functional.one_hot(targets, 2).float() * 4
    wrong = right.flip(1)
    assert ensemble.fit_mix([right, wrong], targets, torch.nn.CrossEntropyLoss()) == 1.0
    assert ensemble.fit_mix([wrong, right], targets, torch.nn.CrossEntropyLoss()) == 0.0


def test_auto_buckets_follow_the_training_tokens_within_bounds() -> None:
    assert auto_buckets(np.array([10, 20]), max_length=64) == MIN_AUTO_BUCKETS
    assert auto_buckets(np.full(10_000, 30), max_length=64) == 2**19  # 300k tokens -> the next power of two
    assert auto_buckets(np.full(10_000, 900), max_length=64) == 2**20  # counted after truncation: 640k
    assert auto_buckets(np.full(100_000, 500), max_length=800) == MAX_AUTO_BUCKETS
    assert auto_buckets(np.full(100_000, 500), max_length=800, num_classes=64) == 2**20  # counts stay <= 256 MB


def test_unknown_ensemble_key_names_the_allowed_ones() -> None:
    raw = {"experiment": "x", "data": {"train": "t.csv"}, "model": {"type": "cnn", "ensemble": {"bukets": 10}}}
    with pytest.raises(ConfigError, match=r"model\.ensemble\.bukets: unknown key; did you mean 'buckets'"):
        validate_config(raw, "c.yaml")


def test_fit_mix_prefers_accuracy_over_the_loss_of_an_overconfident_member() -> None:
    ensemble = Ensemble(torch.nn.Identity(), torch.nn.Identity())
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # the network is right on 6 of 8, hugely confident everywhere; the n-gram model is right on 7 of 8, timidly
    network = torch.tensor([[9.0, -9]] * 4 + [[-9, 9]] * 2 + [[9, -9]] * 2)
    ngram = torch.tensor([[0.2, -0.2]] * 4 + [[-0.2, 0.2]] * 3 + [[0.2, -0.2]])
    loss_fn = torch.nn.CrossEntropyLoss()
    by_loss = Ensemble(torch.nn.Identity(), torch.nn.Identity()).fit_mix([network, ngram], targets, loss_fn,
                                                                         by_accuracy=False)
    by_accuracy = ensemble.fit_mix([network, ngram], targets, loss_fn)
    mixed = by_accuracy * network + (1 - by_accuracy) * ngram
    assert (mixed.argmax(1) == targets).sum() == 7
    assert by_loss != by_accuracy


def test_a_stopped_member_is_left_out_of_training_but_not_of_predictions() -> None:
    ensemble = tiny_ensemble()
    token_ids, lengths = batch([[3, 4, 5], [6, 7]])
    ensemble.stopped[0] = True
    ensemble.train()
    (ngram,) = ensemble(token_ids, lengths)
    torch.testing.assert_close(ngram, ensemble.ngram(token_ids, lengths))
    assert_predicts_the_mix(ensemble, token_ids, lengths, 0.5)


def test_word_char_features_are_the_padded_words_char_ngrams_hashed_deterministically() -> None:
    from textclf_cli.models.ngram import word_char_features

    table = word_char_features(["<pad>", "<unk>", "ab", "abc"], chars=3, buckets=1000, offset=50)
    assert table.dtype == torch.int32 and table.shape[0] == 4
    assert table[:2].eq(0).all()  # padding and <unk> have none
    ab = {int(i) for i in table[2] if i}  # " a", "ab", "b ", " ab", "ab "
    assert len(ab) == 5 and all(50 <= i < 1050 for i in ab)
    assert torch.equal(table, word_char_features(["<pad>", "<unk>", "ab", "abc"], 3, 1000, 50))  # same ids again
    abc = {int(i) for i in table[3] if i}
    assert len(ab & abc) == 3  # " a", "ab" and " ab" are shared


def test_char_ngrams_let_an_unseen_word_form_borrow_from_a_trained_one() -> None:
    vocabulary = ["<pad>", "<unk>", "wonderful", "wonderfully", "dreadful", "dreadfully", "film"]
    model = NgramLogReg(vocab_size=len(vocabulary), num_classes=2, ngrams=1, buckets=4096, min_df=1, chars=5)
    token_ids, lengths = batch([[2, 6], [2], [4, 6], [4]])  # only the short forms occur in training
    with pytest.raises(ValueError, match="vocabulary"):
        model.fit_counts([(token_ids, lengths, torch.tensor([1, 1, 0, 0]))])
    model.fit_counts([(token_ids, lengths, torch.tensor([1, 1, 0, 0]))], vocabulary)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(token_ids, lengths), torch.tensor([1, 1, 0, 0])).backward()
        optimizer.step()
    unseen_ids, unseen_lengths = batch([[3], [5]])  # "wonderfully", "dreadfully": no word feature was trained
    with torch.no_grad():
        assert model(unseen_ids, unseen_lengths).argmax(1).tolist() == [1, 0]
    # the character table travels in the state dict: a fresh model loads it and answers the same
    fresh = NgramLogReg(vocab_size=len(vocabulary), num_classes=2, ngrams=1, buckets=4096, min_df=1, chars=5)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(unseen_ids, unseen_lengths), model(unseen_ids, unseen_lengths))


def test_word_and_char_features_each_have_unit_norm() -> None:
    vocabulary = ["<pad>", "<unk>", "ab", "cd"]
    model = NgramLogReg(vocab_size=4, num_classes=2, ngrams=1, buckets=4096, min_df=1, chars=2)
    token_ids, lengths = batch([[2, 3]])
    model.fit_counts([(token_ids, lengths, torch.tensor([1]))], vocabulary)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.ratios.fill_(1.0)
        model.ratios[0] = 0.0
        # 2 word features and 6 character ones (" a", "ab", "b ", " c", "cd", "d "): 2/sqrt(2) + 6/sqrt(6)
        expected = 2 / 2 ** 0.5 + 6 / 6 ** 0.5
        torch.testing.assert_close(model(token_ids, lengths), torch.full((1, 2), expected))
