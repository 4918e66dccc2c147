"""model.calibration: the temperature that makes best.pt's probabilities calibrated, fitted on validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from textclf_cli import files
from textclf_cli.calibration import fit_temperature, negative_log_likelihood
from textclf_cli.config import Config
from textclf_cli.console import log
from textclf_cli.data.prepared import PreparedData
from textclf_cli.runs.checkpoint import load_checkpoint, load_model, save_checkpoint
from textclf_cli.serving.inference import model_logits


def calibrate_best(run_dir: Path, config: Config, data: PreparedData) -> float | None:
    """Fit the temperature on the validation split and store it in best.pt (multi-label thresholds move with it,
    so every decision stays the same). With train.refit the model chosen on validation (selected.pt) is the one
    measured: the refitted best.pt has seen the validation texts, which would make it look sure of them."""
    if config.model.calibration == "none" or len(data.splits["valid"]) == 0:
        return None
    checkpoints = run_dir / files.CHECKPOINTS_DIR
    measured = checkpoints / files.SELECTED_CHECKPOINT
    measured = measured if measured.is_file() else checkpoints / files.BEST_CHECKPOINT
    loaded = load_model(measured, torch.device("cpu"))
    valid = data.splits["valid"]
    logits = model_logits(loaded.model, valid, loaded.max_length, loaded.truncate,
                          config.train.eval_batch_size, torch.device("cpu")) * loaded.temperature
    multilabel = config.task == "multilabel"
    targets = np.asarray(valid.targets)
    temperature = fit_temperature(logits, targets, multilabel)
    before, after = (negative_log_likelihood(logits, targets, t, multilabel) for t in (1.0, temperature))
    best_path = checkpoints / files.BEST_CHECKPOINT
    best = loaded.checkpoint if measured == best_path else load_checkpoint(best_path)  # read once
    if multilabel:  # the same decisions: p >= t  <=>  sigmoid(z / T) >= sigmoid(logit(t) / T)
        best["thresholds"] = [moved_threshold(t, temperature) for t in best["thresholds"]]
    best["temperature"] = temperature
    save_checkpoint(best_path, best)
    log.info(f"calibration: temperature {temperature:.3f} fitted on the validation split ({len(valid)} texts; "
             f"NLL {before:.4f} -> {after:.4f})")
    return temperature


def moved_threshold(threshold: float, temperature: float) -> float:
    threshold = min(max(threshold, 1e-12), 1 - 1e-12)
    return 1.0 / (1.0 + math.exp(-math.log(threshold / (1 - threshold)) / temperature))
