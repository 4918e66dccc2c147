"""Settings left to `auto` in the config take their values from the prepared training split.

The resolved numbers replace `auto` in the run's config.yaml and checkpoint, so a run always records what it used.
"""

from __future__ import annotations

import math

import numpy as np

from textclf_cli.config import AUTO, Config
from textclf_cli.console import log
from textclf_cli.data.loader import WIDTH_MULTIPLE
from textclf_cli.data.prepared import PreparedData

LENGTH_QUANTILE = 0.97  # texts longer than this share of the training texts are truncated (head_tail by default)
MAX_AUTO_LENGTH = 1024  # beyond this a CNN/LSTM pays linearly for tokens that rarely change the label


def resolve_auto(config: Config, data: PreparedData) -> Config:
    """A copy of `config` with every `auto` replaced by the value the training data calls for."""
    if config.vocab.max_length != AUTO:
        return config
    resolved = config.model_copy(deep=True)
    resolved.vocab.max_length = auto_max_length(data.splits["train"].lengths)
    log.info(f"vocab.max_length auto -> {resolved.vocab.max_length} tokens "
             f"({LENGTH_QUANTILE:.0%} of the training texts are no longer)")
    return resolved


def auto_max_length(lengths: np.ndarray) -> int:
    """The LENGTH_QUANTILE of the token counts, rounded up to the loader's width multiple, capped."""
    if len(lengths) == 0:
        return WIDTH_MULTIPLE
    quantile = float(np.quantile(lengths, LENGTH_QUANTILE))
    rounded = max(1, math.ceil(quantile / WIDTH_MULTIPLE)) * WIDTH_MULTIPLE
    return min(rounded, MAX_AUTO_LENGTH)
