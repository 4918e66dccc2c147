"""The model serve answers with, and how it follows its TARGET: a changed best/latest (or a rewritten file) is loaded
beside the old model, warmed up, and swapped in; a model that fails to load or to warm up never replaces it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textclf_cli.console import log
from textclf_cli.errors import TextclfError
from textclf_cli.runs.status import now_iso
from textclf_cli.serving.scoring import Predictions, check_min_confidence, predict_texts
from textclf_cli.serving.targets import ModelFile, OpenedScorer, describe, follow, open_scorer

WARM_UP_TEXTS = ["warm-up", "a warm-up text of a few words, to run every layer once"]


@dataclass(frozen=True)
class ServedModel:
    """A loaded model that answered its warm-up: what scores, what it is, since when."""

    opened: OpenedScorer
    model_file: ModelFile
    signature: tuple[str, int, int]
    info: dict[str, Any]  # GET /v1/model
    load_seconds: float  # load and warm-up

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or Path(self.model_file.path).name)

    def predict(self, texts: list[str], batch_size: int) -> Predictions:
        # whole_input: these texts are all of this model call, so a few of them stay in fp32 (or on the run's
        # ONNX export), as for a single `predict`
        return predict_texts(self.opened.scorer, texts, batch_size)


def load_served(model_file: ModelFile, min_confidence: float | None) -> ServedModel:
    """Load a model file, and check it answers: raises the project's error (or the model's own) when it cannot."""
    started = time.perf_counter()
    signature = model_file.signature()
    opened = open_scorer(model_file)
    check_min_confidence(min_confidence, opened.scorer)
    warm = predict_texts(opened.scorer, WARM_UP_TEXTS)
    if warm.probabilities.shape != (len(WARM_UP_TEXTS), len(opened.scorer.labels)) or \
            not np.isfinite(warm.probabilities).all():
        raise ValueError(f"its warm-up gave probabilities of shape {warm.probabilities.shape}, not finite or not "
                         f"one row per text")
    scorer = opened.scorer
    info = {**describe(model_file), "labels": list(scorer.labels),
            "task": "multilabel" if scorer.thresholds is not None else
            ("binary" if len(scorer.labels) == 2 else "multiclass"),
            "scorer": opened.kind, "loaded_at": now_iso()}
    return ServedModel(opened, model_file, signature, info, round(time.perf_counter() - started, 3))


@dataclass(frozen=True)
class ReloadResult:
    outcome: str  # "unchanged", "reloaded" or "failed"
    detail: str = ""
    seconds: float | None = None  # reloaded: the new model's load and warm-up


@dataclass
class LiveModel:
    """The model now served, and the TARGET it follows. `current` is swapped by one assignment: a model call
    that took the old model finishes on it."""

    target: Path
    current: ServedModel
    min_confidence: float | None = None
    on_reload: Callable[[ReloadResult, ServedModel], None] | None = None
    _failed_signature: tuple | None = field(default=None, init=False)  # retried only once the target changes
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def check(self, force: bool = False) -> ReloadResult:
        """Reload when the target points at another file (or a rewritten one); blocking: run it off the event loop.
        force (POST /v1/reload): retry a model that failed before, even if the target has not changed since."""
        with self._lock:
            result = self._check(force)
        if self.on_reload is not None and result.outcome != "unchanged":
            self.on_reload(result, self.current)
        return result

    def _check(self, force: bool) -> ReloadResult:
        try:
            model_file = follow(self.target)
            signature = model_file.signature()
        except (TextclfError, OSError) as exc:  # best moved to a run without a checkpoint, a file mid-rename...
            model_file, signature = None, ("unresolved", str(exc))
        if signature == self.current.signature or (signature == self._failed_signature and not force):
            return ReloadResult("unchanged")
        if model_file is None:
            return self._failed(signature, signature[1])
        try:
            served = load_served(model_file, self.min_confidence)
        except Exception as exc:  # whatever the new model raises, the old one keeps answering
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return self._failed(signature, f"{model_file.path}: {reason[:300]}")
        old, self.current, self._failed_signature = self.current, served, None
        detail = f"now serving {served.run_id} ({served.opened.kind}) from {model_file.path}, was {old.run_id}"
        log.info(f"reload: {detail}; loaded and warmed up in {served.load_seconds:.2f}s")
        return ReloadResult("reloaded", detail, served.load_seconds)

    def _failed(self, signature: tuple, detail: str) -> ReloadResult:
        log.warning(f"reload refused, still serving {self.current.run_id}: {detail}")
        self._failed_signature = signature
        return ReloadResult("failed", detail)
