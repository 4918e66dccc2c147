"""A TARGET as predict and serve see it: which model file it points at now (serve follows best/latest), and its
scorer: an ONNX export through onnxruntime, a run's own export for a few texts, or the checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textclf_cli import files
from textclf_cli.runs.folders import find_checkpoint
from textclf_cli.runs.status import read_status
from textclf_cli.serving import onnx as onnx_predict
from textclf_cli.serving.scoring import Scorer

ONNX = "onnx"  # an exported model, through onnxruntime (no torch)
RUN_EXPORT = "onnx export of the run (checkpoint for large inputs)"
CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class ModelFile:
    """The model file a TARGET points at right now, and the run folder it belongs to (None: a bare file)."""

    path: Path  # a checkpoint .pt, or an ONNX model (.onnx; its sidecar beside it)
    run_dir: Path | None
    onnx: bool

    def signature(self) -> tuple[str, int, int]:
        """Changes when a promotion moves best to another run, or when the file itself is rewritten."""
        stat = self.path.stat()
        return str(self.path.resolve()), stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class OpenedScorer:
    scorer: Scorer
    kind: str  # ONNX, RUN_EXPORT or CHECKPOINT: what scores the texts, for the log and GET /v1/model


def follow(target: Path) -> ModelFile:
    """What TARGET points at now: an experiment folder follows its best run, else its latest; a run folder, a
    checkpoint and an ONNX export (the .onnx file or its sidecar .json) stay themselves."""
    if onnx_predict.is_onnx_target(str(target)):
        model_file, _ = onnx_predict.export_files(target)
        return ModelFile(model_file, None, onnx=True)
    best = target / files.BEST_LINK
    if target.is_dir() and not (target / files.CHECKPOINTS_DIR).is_dir() and best.exists():
        target = best.resolve()
    checkpoint, run_dir = find_checkpoint(target)
    return ModelFile(checkpoint, run_dir, onnx=False)


def open_scorer(model: ModelFile, device: str = "auto", precision: str = "auto") -> OpenedScorer:
    """The scorer of a model file: an ONNX export through onnxruntime, else the checkpoint (or, for a few texts on
    the CPU in fp32, the run's own export made from this very checkpoint: no torch import)."""
    if model.onnx:
        return OpenedScorer(onnx_predict.onnx_scorer(model.path), ONNX)
    return checkpoint_scorer(model.path, model.run_dir, device, precision)


def checkpoint_scorer(checkpoint: Path, run_dir: Path | None, device: str, precision: str) -> OpenedScorer:
    """The scorer of a checkpoint, or of its run's export for a few texts on the CPU in fp32. torch is
    imported only once the checkpoint is loaded, never on an ONNX path."""

    def from_checkpoint() -> Scorer:
        # imported here, not at the top: these import torch, which the ONNX path never needs
        from textclf_cli.device import resolve_device
        from textclf_cli.runs.checkpoint import load_model
        from textclf_cli.serving import scoring

        return scoring.checkpoint_scorer(load_model(checkpoint, resolve_device(device)), precision)

    export = onnx_predict.run_export_scorer(checkpoint, run_dir, from_checkpoint) \
        if device in ("auto", "cpu") and precision in ("auto", "fp32") else None
    return OpenedScorer(export, RUN_EXPORT) if export is not None else OpenedScorer(from_checkpoint(), CHECKPOINT)


def describe(model: ModelFile) -> dict[str, Any]:
    """Where a model comes from, for GET /v1/model: run id, experiment and the metrics of the run's evaluations."""
    status = (read_status(model.run_dir) or {}) if model.run_dir is not None else {}
    return {"file": str(model.path), "run_dir": None if model.run_dir is None else str(model.run_dir),
            "run_id": status.get("run_id"), "experiment": status.get("experiment"),
            "monitor": status.get("monitor"), "best_metric": status.get("best_metric"),
            "evaluation": evaluation_metrics(model.run_dir)}


def evaluation_metrics(run_dir: Path | None) -> dict[str, dict[str, Any]]:
    """{split: headline metrics} from the run's evaluation/<split>/metrics.json files (unreadable ones skipped)."""
    found: dict[str, dict[str, Any]] = {}
    folder = run_dir / files.EVALUATION_DIR if run_dir is not None else None
    for path in sorted(folder.glob(f"*/{files.METRICS_FILE}")) if folder is not None and folder.is_dir() else []:
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        found[path.parent.name] = {key: value for key, value in metrics.items() if isinstance(value, int | float)}
    return found

