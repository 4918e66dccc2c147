"""textclf as a Python library: load a trained model and predict, train from a config, evaluate a run.

    from textclf_cli import load
    model = load("runs/quickstart/latest")
    model.predict(["A wonderful, moving film."])  # [{"text": ..., "label": "pos", "probabilities": {...}}]

The same code paths as the command line (the CLI's train, evaluate and TARGET resolution call these). Errors are
textclf's own exception types (TextclfError and its subclasses in textclf_cli.errors), never SystemExit. torch is
imported only when a checkpoint is loaded or a model trained: an ONNX export predicts without it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from textclf_cli.config import Config, apply_override, load_config, validate_config
from textclf_cli.errors import ConfigError, TextclfError
from textclf_cli.serving import targets
from textclf_cli.serving.scoring import Scorer, predict_texts, rows

if TYPE_CHECKING:
    from textclf_cli.training.state import TrainState

__all__ = ["EvaluationOutcome", "Model", "TextclfError", "TrainOutcome", "evaluate", "load", "train"]

ConfigSource = str | Path | Mapping[str, Any] | Config


@dataclass
class Model:
    """A trained model, ready to predict. `labels` is the column order of predict_proba."""

    labels: list[str]
    task: str  # multiclass or multilabel
    info: dict[str, Any]  # where it comes from: file, run, scorer, metrics of the run's evaluations
    scorer: Scorer = field(repr=False)
    batch_size: int = 128

    def predict(self, texts: Sequence[str], top_k: int | None = None) -> list[dict[str, Any]]:
        """One record per text, shaped as `textclf predict --format jsonl` writes them: `label` (multi-label:
        `labels`) and `probabilities`, most likely first; `top_k` keeps the k most likely."""
        return rows(predict_texts(self.scorer, _texts(texts), self.batch_size), top_k)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, len(labels)) probabilities, row i for text i, columns in `labels` order (softmax rows sum to 1;
        multi-label: each label's own probability)."""
        return predict_texts(self.scorer, _texts(texts), self.batch_size).probabilities


@dataclass
class TrainOutcome:
    run_dir: Path
    metrics: dict[str, Any]  # monitor, best_metric, best_epoch, epochs; refit when train.refit ran
    main: bool = True  # under torchrun: whether this is rank 0, which wrote the run folder


@dataclass
class EvaluationOutcome:
    out_dir: Path  # <run>/evaluation/<split>/ with metrics.json and the reports
    metrics: dict[str, Any]


def load(target: str | Path, device: str = "auto", precision: str = "auto", batch_size: int = 128,
         overrides: Sequence[str] | None = None) -> Model:
    """TARGET as `textclf predict` takes it: a config (its latest run), a run or experiment folder, a checkpoint
    .pt, or an ONNX export (.onnx or its sidecar .json). A run with an export answers from it without torch."""
    if targets.onnx_predict.is_onnx_target(str(target)):
        model_file = targets.follow(Path(target))
    else:
        checkpoint, run_dir = resolve_target(str(target), overrides)
        model_file = targets.ModelFile(checkpoint, run_dir, onnx=False)
    opened = targets.open_scorer(model_file, device, precision)
    scorer = opened.scorer
    info = {**targets.describe(model_file), "scorer": opened.kind}
    task = "multilabel" if scorer.thresholds is not None else "multiclass"
    return Model(list(scorer.labels), task, info, scorer, batch_size)


def train(config: ConfigSource, overrides: Sequence[str] | Mapping[str, Any] | None = None,
          resume: str | Path | None = None, promote_if_better: bool = False) -> TrainOutcome:
    """Train one model: `config` is a YAML file, a dict of the same shape, or a Config; `overrides` are `--set`
    strings ("train.lr=3e-4") or a {dotted key: value} dict. Under torchrun, only rank 0 gets the outcome."""
    resolved = config_of(config, overrides)
    # imported here, not at the top: training imports torch, which load() of an ONNX model never needs
    from textclf_cli.train import train as train_stage
    from textclf_cli.training.distributed import distributed_context

    with distributed_context(resolved) as processes:
        result = train_stage(resolved, processes, resume=Path(resume) if resume else None,
                             promote_if_better=promote_if_better)
        main = processes.is_main
    return TrainOutcome(result.run_dir, train_metrics(resolved, result.state, result.refitted), main)


def evaluate(run: str | Path, split: str = "test", data: str | Path | None = None, device: str = "auto",
             precision: str = "auto", batch_size: int = 128) -> EvaluationOutcome:
    """Evaluate a run (or a config's latest run, or a checkpoint) on a prepared split or a labelled file; writes
    <run>/evaluation/<split>/ as `textclf evaluate` does and returns its metrics."""
    from textclf_cli.evaluate import evaluate as evaluate_stage  # torch: see train()

    if split not in ("test", "valid", "train"):
        raise ConfigError(f"evaluate: split {split!r} is not one of test, valid, train")
    checkpoint, run_dir = resolve_target(str(run), None)
    result = evaluate_stage(checkpoint, run_dir, split=split, data_file=Path(data) if data else None,
                            device_spec=device, precision=precision, batch_size=batch_size)
    return EvaluationOutcome(result.out_dir, result.metrics)


def resolve_target(target: str, overrides: Sequence[str] | None = None) -> tuple[Path, Path | None]:
    """(checkpoint, run folder) for a config (its latest completed run), a run or experiment folder or a .pt
    file; runs whose process died are marked stale on the way."""
    from textclf_cli.runs.folders import find_checkpoint, latest_run, mark_stale_runs

    path = Path(target)
    if path.suffix.lower() in (".yaml", ".yml"):
        config = load_config(path, list(overrides or []))
        mark_stale_runs(config.output.runs_dir / config.experiment)
        return find_checkpoint(latest_run(config.output.runs_dir, config.experiment))
    if overrides:
        raise ConfigError("--set applies to a config; TARGET here is a run folder or checkpoint, which carries its own")
    checkpoint, run_dir = find_checkpoint(path)
    if run_dir is not None:
        mark_stale_runs(run_dir.parent)
    return checkpoint, run_dir


def config_of(config: ConfigSource, overrides: Sequence[str] | Mapping[str, Any] | None = None) -> Config:
    """A validated Config from a file, a dict or a Config, with the overrides applied (they win)."""
    strings = [f"{key}={_yaml_value(value)}" for key, value in overrides.items()] if isinstance(overrides, Mapping) \
        else list(overrides or [])
    if isinstance(config, (str, Path)):
        return load_config(Path(config), strings)
    raw = config.model_dump(mode="json") if isinstance(config, Config) else copy.deepcopy(dict(config))
    for override in strings:
        apply_override(raw, override)
    return validate_config(raw, source="train(config)")


def train_metrics(config: Config, state: TrainState, refitted: dict[str, Any] | None) -> dict[str, Any]:
    metrics = {"monitor": config.train.monitor, "best_metric": state.best_metric, "best_epoch": state.best_epoch,
               "epochs": state.epoch}
    return {**metrics, "refit": refitted} if refitted else metrics


def _texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):  # a lone string would be read as its characters
        return [texts]
    texts = list(texts)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise ConfigError(f"predict: texts[{bad}] is a {type(texts[bad]).__name__}, not a string")
    return texts


def _yaml_value(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: --set parses the value as YAML
