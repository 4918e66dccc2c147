"""Model families and the one builder that reads config values into their flat arguments."""

from __future__ import annotations

from typing import Any

from torch import nn

from textclf_cli.models.bag import BagOfNgrams
from textclf_cli.models.cnn import TextCNN
from textclf_cli.models.lstm import LSTMClassifier

MODELS: dict[str, type[nn.Module]] = {"cnn": TextCNN, "lstm": LSTMClassifier, "bag": BagOfNgrams}
NOT_MODEL_ARGS = {"type", "pretrained_embeddings", "freeze_embeddings"}


def model_kwargs(model_config: Any) -> dict[str, Any]:
    """The flat constructor arguments a checkpoint stores (config keys minus the loading-only ones)."""
    return {key: value for key, value in model_config.model_dump().items() if key not in NOT_MODEL_ARGS}


def build_model(model_type: str, vocab_size: int, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    return MODELS[model_type](vocab_size=vocab_size, num_classes=num_classes, **kwargs)


def min_width(model: nn.Module) -> int:
    """Shortest padded batch width the model accepts (the widest CNN filter)."""
    return int(getattr(model, "min_width", 1))
