"""Scorers: a model (checkpoint or ONNX export) as predict, evaluate and serve see it, and texts -> predictions."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from textclf_cli.data.encoding import encode_stream, encode_texts
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.data.text import TokenizerSettings
from textclf_cli.errors import ConfigError
from textclf_cli.serving.multilabel import sigmoid

if TYPE_CHECKING:  # the checkpoint path alone imports torch, and only when it is taken (an ONNX model never is)
    from textclf_cli.runs.checkpoint import LoadedModel

PREDICT_CHUNK = 8192  # texts tokenized and predicted at a time when streaming


@dataclass
class Predictions:
    texts: list[str]
    labels: list[str]  # the model's label order
    probabilities: np.ndarray  # (N, C): rows sum to 1, or for multilabel each label's own probability
    thresholds: np.ndarray | None = None  # multilabel: (C,) a label is predicted at or above its threshold
    label_separator: str = "|"  # multilabel: joins a label set in CSV output

    @property
    def multilabel(self) -> bool:
        return self.thresholds is not None


# (encoded texts, batch size, whole_input) -> (N, C) probabilities, row i for text i. whole_input: these are all
# the texts of this predict (it fit in one chunk), which lets the checkpoint scorer keep a few texts in fp32.
ScoreFunction = Callable[[EncodedSplit, int, bool], np.ndarray]


@dataclass
class Scorer:
    """A model as predict sees it: how its texts become ids, and ids become probabilities (softmax, or for
    multilabel each label's own sigmoid). A checkpoint (torch) and an exported ONNX model (onnxruntime) are both
    one of these, so reading texts, streaming and formatting are shared."""

    tokenizer: TokenizerSettings
    vocab: list[str]
    labels: list[str]
    score: ScoreFunction
    thresholds: np.ndarray | None = None  # multilabel: (C,)
    label_separator: str = "|"


# oneDNN sets up its bf16 CPU kernels on first use, a cost bf16's faster scoring earns back only over some
# thousands of texts (bench/RESULTS.md, "Prediction speed and bf16"); so `auto` keeps fewer texts in fp32
BF16_MIN_TEXTS_ON_CPU = 4096


def few_texts(encoded: EncodedSplit, whole_input: bool) -> bool:
    """All of this predict's texts, and too few for bf16 to pay on a CPU: `auto` scores them in fp32 (and a run's
    ONNX export, fp32 too, may score them instead of the checkpoint)."""
    return whole_input and len(encoded) < BF16_MIN_TEXTS_ON_CPU


def checkpoint_scorer(loaded: LoadedModel, precision: str = "auto") -> Scorer:
    """The scorer of a loaded checkpoint: its model on its device, in the precision asked for."""
    from textclf_cli.precision import inference_dtype
    from textclf_cli.serving.inference import log_probabilities, model_logits

    model, max_length, truncate = loaded.model, loaded.max_length, loaded.truncate
    device = next(model.parameters()).device

    def score(encoded: EncodedSplit, batch_size: int, whole_input: bool) -> np.ndarray:
        few = few_texts(encoded, whole_input) and device.type == "cpu"
        dtype = inference_dtype("fp32" if precision == "auto" and few else precision, device)
        if loaded.task == "multilabel":
            return sigmoid(model_logits(model, encoded, max_length, truncate, batch_size, device, dtype))
        log_probs = log_probabilities(model, encoded, max_length, truncate, batch_size, device, dtype)
        return np.exp(log_probs.astype(np.float64))

    thresholds = np.array(loaded.thresholds) if loaded.task == "multilabel" else None
    return Scorer(loaded.tokenizer, loaded.vocab, loaded.labels, score, thresholds, loaded.label_separator)


def predict_with(loaded: LoadedModel, texts: list[str], batch_size: int = 128, precision: str = "auto") -> Predictions:
    return predict_texts(checkpoint_scorer(loaded, precision), texts, batch_size)


def predict_texts(scorer: Scorer, texts: list[str], batch_size: int = 128) -> Predictions:
    """Every text at once (the whole input)."""
    return _predictions(scorer, texts, encode_texts(texts, scorer.tokenizer, scorer.vocab), batch_size, True)


def _predictions(scorer: Scorer, texts: list[str], encoded: EncodedSplit, batch_size: int,
                 whole_input: bool) -> Predictions:
    probabilities = scorer.score(encoded, batch_size, whole_input)
    return Predictions(texts, scorer.labels, probabilities, scorer.thresholds, scorer.label_separator)


def predict_stream(scorer: Scorer, texts: Iterable[str], batch_size: int = 128,
                   chunk_size: int | None = None) -> Iterator[Predictions]:
    """Predictions chunk by chunk, in input order: texts of any number in bounded memory."""
    chunk_size = chunk_size or PREDICT_CHUNK
    chunks = iter(itertools.batched(texts, chunk_size) if hasattr(itertools, "batched") else _batched(texts, chunk_size))
    first, second = next(chunks, None), next(chunks, None)
    if first is None:
        return
    if second is None:  # all in one chunk (a cold single predict, say): encoded at once, and for the few texts
        # of a single predict without tokenizer worker processes (they start from PARALLEL_MIN_TEXTS texts)
        yield predict_texts(scorer, list(first), batch_size)
        return
    every_chunk = itertools.chain([first, second], chunks)
    for chunk, encoded in encode_stream((list(chunk) for chunk in every_chunk), scorer.tokenizer, scorer.vocab):
        yield _predictions(scorer, chunk, encoded, batch_size, False)


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:  # itertools.batched before python 3.12
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def rows(predictions: Predictions, top_k: int | None, min_confidence: float | None = None) -> list[dict]:
    """One dict per text: text, label (multilabel: labels), probabilities of the top_k labels (all when None),
    highest first. Multilabel: the labels at or above their threshold, most probable first, at most top_k.
    min_confidence (single-label): a text whose top probability is below it gets label None and abstained True
    (the others abstained False); its probabilities are still given."""
    result = []
    labels = predictions.labels
    k = len(labels) if not top_k else min(top_k, len(labels))
    # sorted for all texts at once and read as Python floats: numpy calls per text add up over large inputs
    orders = np.argsort(-predictions.probabilities, axis=1, kind="stable")[:, :k].tolist()
    thresholds = predictions.thresholds.tolist() if predictions.multilabel else None
    for text, order, probs in zip(predictions.texts, orders, predictions.probabilities.tolist()):
        shown = {labels[i]: round(probs[i], 6) for i in order}
        if thresholds is not None:
            chosen = [labels[i] for i in order if probs[i] >= thresholds[i]]
            result.append({"text": text, "labels": chosen, "probabilities": shown})
        elif min_confidence is None:
            result.append({"text": text, "label": labels[order[0]], "probabilities": shown})
        else:
            abstained = probs[order[0]] < min_confidence
            result.append({"text": text, "label": None if abstained else labels[order[0]], "abstained": abstained,
                           "probabilities": shown})
    return result


def check_min_confidence(min_confidence: float | None, scorer: Scorer) -> None:
    """--min-confidence applies to single-label models: a multi-label model decides each label on its threshold."""
    if min_confidence is not None and scorer.thresholds is not None:
        raise ConfigError(f"--min-confidence {min_confidence} applies to single-label models; this model is "
                          f"multi-label, whose tuned per-label thresholds already decide each label: leave it out")
