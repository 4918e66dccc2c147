"""Per-token attributions of one label's logit: Integrated Gradients (Captum) on a network's embeddings, the exact
contributions of the linear families (the n-gram model's weights, the bag model's mean embedding), mixed as an
ensemble mixes its members and divided by a calibrated model's temperature.

Every attribution is of the logit the model predicts with, so for each member `baseline + sum(values)` is its logit
(exactly for the linear families; IG's completeness up to `delta`, which shrinks with more steps).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from textclf_cli.data.prepared import truncate_ids
from textclf_cli.data.text import Tokenizer
from textclf_cli.data.vocab import PAD_ID, UNK_ID
from textclf_cli.errors import ConfigError
from textclf_cli.models.bag import BagOfNgrams
from textclf_cli.models.build import min_width
from textclf_cli.models.calibration import TemperatureScaled
from textclf_cli.models.cnn import TextCNN
from textclf_cli.models.ensemble import Ensemble
from textclf_cli.models.lstm import LSTMClassifier
from textclf_cli.models.ngram import NgramLogReg
from textclf_cli.runs.checkpoint import LoadedModel

IG_STEPS = 50  # Captum's default; the completeness error (delta) of the tiny and quickstart models is ~1e-3 there
EXACT = "exact"
INTEGRATED_GRADIENTS = "integrated_gradients"
CAPTUM_HINT = 'pip install "textclf-cli[explain]" (or pip install captum)'
FAMILY_NAMES = {TextCNN: "cnn", LSTMClassifier: "lstm", BagOfNgrams: "bag", NgramLogReg: "ngram"}


@dataclass
class MemberAttribution:
    """One member's share of a label's logit: `baseline + values.sum() + delta` is what it adds to the logit,
    already weighted by the ensemble's mix and divided by the temperature."""

    method: str  # EXACT or INTEGRATED_GRADIENTS
    values: np.ndarray  # (T,) float64, one per token the model saw
    baseline: float  # the bias (exact), or the logit of an all-padding text of the same length (IG)
    delta: float = 0.0  # IG: logit - baseline - sum(values), its approximation error; 0 for exact

    def scaled(self, factor: float) -> MemberAttribution:
        return MemberAttribution(self.method, self.values * factor, self.baseline * factor, self.delta * factor)


def needs_captum(model: nn.Module) -> bool:
    """Whether any member of the model is explained by Integrated Gradients (a CNN or LSTM network)."""
    return any(isinstance(module, TextCNN | LSTMClassifier) for module in model.modules())


def require_captum(model: nn.Module) -> None:
    if needs_captum(model) and importlib.util.find_spec("captum") is None:
        raise ConfigError(f"explain: Integrated Gradients for the CNN/LSTM network needs captum, which is not "
                          f"installed: {CAPTUM_HINT}")


def attribute(model: nn.Module, token_ids: torch.Tensor, label: int, steps: int = IG_STEPS
              ) -> dict[str, MemberAttribution]:
    """(T,) token ids of one text (T >= 1) -> {member name: its attribution} for `label`'s logit. An ensemble gives
    one entry per member, each weighted by the mix; a TemperatureScaled model divides them all by T."""
    if isinstance(model, TemperatureScaled):
        inner = attribute(model.model, token_ids, label, steps)
        return {name: part.scaled(1.0 / model.temperature) for name, part in inner.items()}
    if isinstance(model, Ensemble):
        mix = float(model.mix)
        network = attribute(model.network, token_ids, label, steps)
        ngram = attribute(model.ngram, token_ids, label, steps)
        return {**{name: part.scaled(mix) for name, part in network.items()},
                **{name: part.scaled(1.0 - mix) for name, part in ngram.items()}}
    name = FAMILY_NAMES.get(type(model))
    if name is None:
        raise ConfigError(f"explain: no attribution method for a {type(model).__name__} model")
    if isinstance(model, NgramLogReg):
        return {name: ngram_contributions(model, token_ids, label)}
    if isinstance(model, BagOfNgrams):
        return {name: bag_contributions(model, token_ids, label)}
    return {name: integrated_gradients(model, token_ids, label, steps)}


@torch.no_grad()
def ngram_contributions(model: NgramLogReg, token_ids: torch.Tensor, label: int) -> MemberAttribution:
    """The exact contribution of each token to the n-gram model's logit: each distinct feature (word, word
    n-gram, character n-gram) adds scale * weight * ratio (the text's L2 scale of its part, words or characters),
    shared equally by its occurrences and, within one, by the tokens it covers."""
    feature_ids, starts, widths = ngram_occurrences(model, token_ids)
    distinct, inverse, counts = torch.unique(feature_ids, return_inverse=True, return_counts=True)
    rows = model.table_row[distinct].long()
    present = (rows > 0).double()
    weight = model.weight[rows, label].double()
    if not model.folded:
        weight = weight * model.ratios[rows, label].double()
    contribution = present * weight / feature_norms(model, distinct, present)  # (F,) per distinct feature
    share = contribution[inverse] / counts[inverse]  # (M,) per occurrence
    return MemberAttribution(EXACT, spread(share, starts, widths, len(token_ids)), float(model.bias[label]))


def ngram_occurrences(model: NgramLogReg, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every feature occurrence in a text as (feature id, first token, tokens covered), (M,) each; the feature ids
    are those of NgramLogReg.features, which keeps the distinct ones."""
    ids, lengths = token_ids[None, :].long(), torch.tensor([len(token_ids)])
    positions = torch.arange(len(token_ids))
    parts = [(ids[0], positions, torch.ones_like(positions))]
    for n in range(2, model.ngrams + 1):
        if len(token_ids) - n + 1 > 0:
            grams = model.word_ngram_ids(ids, lengths, n)[0]  # (T - n + 1,)
            parts.append((grams, positions[:len(grams)], torch.full_like(grams, n)))
    if model.chars:  # (T, K) each word's character n-grams, all covering that word alone
        chars = model.word_chars[ids[0]].long()
        parts.append((chars.flatten(), positions.repeat_interleave(chars.size(1)), torch.ones(chars.numel()).long()))
    feature_ids, starts, widths = (torch.cat(column) for column in zip(*parts))
    real = feature_ids > 0  # 0: padding, a word without character n-grams, an n-gram past the end
    return feature_ids[real], starts[real], widths[real]


def feature_norms(model: NgramLogReg, distinct: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(F,) the L2 norm each kept feature is divided by: of the text's word features, or of its character ones."""
    if not model.chars:
        return present.sum().clamp(min=1.0).sqrt().expand_as(present)
    is_char = distinct >= model.char_offset
    char_norm = present[is_char].sum().clamp(min=1.0).sqrt()
    word_norm = present[~is_char].sum().clamp(min=1.0).sqrt()
    return torch.where(is_char, char_norm, word_norm)


def spread(shares: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor, length: int) -> np.ndarray:
    """(M,) shares of occurrences covering tokens [start, start + width) -> (length,) per token, split evenly."""
    values = torch.zeros(length, dtype=torch.float64)
    for width in widths.unique().tolist():
        chosen = widths == width
        for offset in range(width):
            values.index_add_(0, starts[chosen] + offset, shares[chosen].double() / width)
    return values.numpy()


@torch.no_grad()
def bag_contributions(model: BagOfNgrams, token_ids: torch.Tensor, label: int) -> MemberAttribution:
    """The bag model is linear in the mean of its feature embeddings, so each feature adds exactly
    (w_label . e_feature) / features; a word n-gram's share is split over the words it covers. This is what
    Integrated Gradients from the zero vector (an empty bag) would give, without its sampling error."""
    ids, lengths = token_ids[None, :].long(), torch.tensor([len(token_ids)])
    positions = torch.arange(len(token_ids))
    parts = [(ids[0], positions, torch.ones_like(positions))]
    for n in range(2, model.ngrams + 1):
        grams = model.ngram_ids(ids, lengths, n)[0]
        parts.append((grams, positions[:len(grams)], torch.full_like(grams, n)))
    feature_ids, starts, widths = (torch.cat(column) for column in zip(*parts))
    real = feature_ids != model.embedding.padding_idx  # padding is left out of the mean
    row_logits = model.embedding.weight[feature_ids[real]].double() @ model.classifier.weight[label].double()
    shares = row_logits / max(1, int(real.sum()))
    values = spread(shares, starts[real], widths[real], len(token_ids))
    return MemberAttribution(EXACT, values, float(model.classifier.bias[label]))


def integrated_gradients(network: nn.Module, token_ids: torch.Tensor, label: int, steps: int) -> MemberAttribution:
    """Integrated Gradients of the label's logit along the straight line from an all-padding text of the same
    length to the text, in embedding space; a token's value is the sum over its embedding's dimensions."""
    from captum.attr import LayerIntegratedGradients  # the explain extra, checked by require_captum

    device = network.embedding.weight.device
    length = len(token_ids)
    width = max(length, int(getattr(network, "min_width", 1)))  # a CNN reads at least its widest filter
    ids = torch.zeros(1, width, dtype=torch.long, device=device)
    ids[0, :length] = token_ids.to(device)
    lengths = torch.tensor([length], device=device)
    baseline_ids = torch.zeros_like(ids)  # <pad> everywhere: the embedding of "no word"

    def label_logit(batch_ids: torch.Tensor, batch_lengths: torch.Tensor) -> torch.Tensor:
        return network(batch_ids, batch_lengths)[:, label].float()

    # cuDNN's LSTM has no backward pass in eval mode; the plain kernels have
    with torch.backends.cudnn.flags(enabled=False):
        values = LayerIntegratedGradients(label_logit, network.embedding).attribute(
            ids, baselines=baseline_ids, additional_forward_args=(lengths,), n_steps=steps,
            internal_batch_size=steps)
        with torch.no_grad():
            logit, baseline = (float(label_logit(batch, lengths)[0]) for batch in (ids, baseline_ids))
    per_token = values[0, :length].sum(dim=-1).double().cpu().numpy()  # (1, T, E) -> (T,)
    return MemberAttribution(INTEGRATED_GRADIENTS, per_token, baseline, logit - baseline - float(per_token.sum()))


@dataclass
class Explanation:
    """One text explained: its tokens (those cut by max_length marked unseen), the label explained, the model's
    probabilities, and each member's attribution of the label's logit over the seen tokens."""

    text: str
    tokens: list[str]
    seen: list[bool]  # False: cut by max_length, never read by the model
    unknown: list[bool]  # out of the vocabulary: the model read <unk>
    label: str
    predicted: str  # the model's top label (the explained one unless --label chose another)
    probabilities: dict[str, float]  # every label, most probable first
    logit: float  # the label's logit as the model predicts with it (divided by the temperature when calibrated)
    members: dict[str, MemberAttribution]
    temperature: float = 1.0
    mix: float | None = None  # an ensemble's weight of the network (the n-gram model gets 1 - mix)

    @property
    def baseline(self) -> float:
        return sum(part.baseline for part in self.members.values())

    @property
    def delta(self) -> float:
        return sum(part.delta for part in self.members.values())

    def attributions(self) -> list[float | None]:
        """Per token: the members' values summed; None for a token the model never saw."""
        total = sum(part.values for part in self.members.values())
        seen_values = iter(np.atleast_1d(total).tolist())
        return [next(seen_values) if seen else None for seen in self.seen]

    def member_values(self, name: str) -> list[float | None]:
        seen_values = iter(self.members[name].values.tolist())
        return [next(seen_values) if seen else None for seen in self.seen]


def explain_text(loaded: LoadedModel, tokenize: Tokenizer, text: str, label: str | None,
                 steps: int = IG_STEPS) -> Explanation:
    """One text -> its Explanation for `label` (None: the predicted label), through the model's own tokenizer,
    vocabulary and max_length cut."""
    tokens = tokenize(text)
    index = {token: position for position, token in enumerate(loaded.vocab)}
    all_ids = np.array([index.get(token, UNK_ID) for token in tokens], dtype=np.int64)
    kept = truncate_ids(np.arange(len(tokens)), loaded.max_length, loaded.truncate)  # positions the model reads
    seen = np.zeros(len(tokens), dtype=bool)
    seen[kept] = True
    token_ids = torch.from_numpy(all_ids[kept]) if len(kept) else torch.tensor([PAD_ID])  # empty: one pad
    probabilities = label_probabilities(loaded, token_ids)
    predicted = int(np.argmax(probabilities))
    chosen = predicted if label is None else label_index(loaded.labels, label)
    members = attribute(loaded.model, token_ids, chosen, steps)
    if not len(kept):  # the pad stands in for an empty text: nothing to attribute, all is baseline
        members = {name: MemberAttribution(part.method, part.values[:0], part.baseline + float(part.values.sum()),
                                           part.delta) for name, part in members.items()}
    order = np.argsort(-probabilities, kind="stable")
    return Explanation(
        text, tokens, seen.tolist(), (all_ids == UNK_ID).tolist(), loaded.labels[chosen], loaded.labels[predicted],
        {loaded.labels[i]: float(probabilities[i]) for i in order}, float(label_logits(loaded, token_ids)[chosen]),
        members, loaded.temperature, ensemble_mix(loaded.model))


def label_index(labels: list[str], label: str) -> int:
    if label not in labels:
        raise ConfigError(f"explain: --label {label!r} is not one of the model's labels ({', '.join(labels)})")
    return labels.index(label)


@torch.no_grad()
def label_logits(loaded: LoadedModel, token_ids: torch.Tensor) -> np.ndarray:
    """(C,) the logits the model predicts with (calibrated: already divided by the temperature)."""
    model = loaded.model
    device = next(model.parameters()).device
    width = max(len(token_ids), min_width(model))
    ids = torch.full((1, width), PAD_ID, dtype=torch.long, device=device)
    ids[0, :len(token_ids)] = token_ids.to(device)
    return model(ids, torch.tensor([len(token_ids)], device=device))[0].double().cpu().numpy()


def label_probabilities(loaded: LoadedModel, token_ids: torch.Tensor) -> np.ndarray:
    """(C,) softmax, or for a multi-label model each label's own sigmoid."""
    logits = torch.from_numpy(label_logits(loaded, token_ids))
    return (logits.sigmoid() if loaded.task == "multilabel" else logits.softmax(0)).numpy()


def ensemble_mix(model: nn.Module) -> float | None:
    inner = model.model if isinstance(model, TemperatureScaled) else model
    return float(inner.mix) if isinstance(inner, Ensemble) else None
