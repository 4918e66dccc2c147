"""Predict from an exported ONNX model with onnxruntime: its sidecar says how texts become ids. Nothing here imports
torch, so a cold single predict skips torch's slow import; reading texts and formatting are predict.py's."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from textclf_cli.console import log
from textclf_cli.data.prepared import EncodedSplit, truncate_ids
from textclf_cli.data.text import TokenizerSettings
from textclf_cli.data.vocab import PAD_ID
from textclf_cli.errors import ConfigError, RunError
from textclf_cli.files import EXPORT_DIR, EXPORT_ONNX
from textclf_cli.serving.scoring import Scorer, few_texts
from textclf_cli.serving.sidecar import EXTRAS_HINT, checkpoint_stat, read_sidecar, sidecar_path

EXPORT_AGAIN = "re-run `textclf export RUN --format onnx`"
TRUNCATIONS = ("head", "tail", "head_tail")


def is_onnx_target(target: str) -> bool:
    """An exported model (.onnx) or its sidecar (.json), rather than a config, run folder or checkpoint."""
    return Path(target).suffix.lower() in (".onnx", ".json")


def check_onnx_options(device: str, precision: str, overrides: list[str] | None) -> None:
    """Refuse options that do not apply to an ONNX model, and a missing onnxruntime, before any input is read."""
    if device not in ("auto", "cpu"):
        raise ConfigError(f"predict: --device {device} does not apply to an ONNX model, which runs in fp32 on the "
                          f"CPU (onnxruntime); leave it out, or predict from the checkpoint")
    if precision not in ("auto", "fp32"):
        raise ConfigError(f"predict: --precision {precision} does not apply to an ONNX model, which runs in fp32 on "
                          f"the CPU (onnxruntime); leave it out, or predict from the checkpoint")
    if overrides:
        raise ConfigError("--set applies to a config; TARGET here is an exported ONNX model, whose sidecar carries "
                          "its own settings")
    if importlib.util.find_spec("onnxruntime") is None:
        raise ConfigError(f"predict: an ONNX model needs onnxruntime, which is not installed: {EXTRAS_HINT}")


def onnx_scorer(target: Path) -> Scorer:
    """The scorer of an exported ONNX model (TARGET: the .onnx file or its sidecar .json)."""
    model_file, sidecar = export_files(target)
    session = functools.cache(lambda: inference_session(model_file))
    session()  # a model onnxruntime cannot load fails now, before any input is read
    return scorer_of(session, sidecar)


def scorer_of(session: Callable[[], Any], sidecar: dict[str, Any]) -> Scorer:
    """The scorer of an ONNX model given its (checked) sidecar; session() returns its onnxruntime session."""
    labels, max_length, truncate = list(sidecar["labels"]), int(sidecar["max_length"]), str(sidecar["truncate"])

    def score(encoded: EncodedSplit, batch_size: int, whole_input: bool) -> np.ndarray:
        probabilities = np.zeros((len(encoded), len(labels)), dtype=np.float32)
        order = np.argsort(np.clip(encoded.lengths, 1, max_length), kind="stable")  # similar lengths: less padding
        for start in range(0, len(order), batch_size):
            indices = order[start: start + batch_size]
            token_ids, lengths = padded_batch(encoded, indices, max_length, truncate)
            probabilities[indices] = session().run(["probabilities"], {"token_ids": token_ids, "lengths": lengths})[0]
        return probabilities

    thresholds = np.array(sidecar["thresholds"], dtype=np.float64) if sidecar["task"] == "multilabel" else None
    return Scorer(TokenizerSettings(**sidecar["tokenizer"]), list(sidecar["vocab"]), labels, score, thresholds,
                  str(sidecar.get("label_separator") or "|"))  # sidecars before label_separator: the default


def run_export_scorer(checkpoint: Path, run_dir: Path | None, checkpoint_scorer: Callable[[], Scorer]
                      ) -> Scorer | None:
    """The run's own ONNX export (train writes it, output.export_onnx) for an input of a few texts (a cold single
    predict, no torch import) and the checkpoint for more (bf16 and several threads there outrun onnxruntime's
    fp32); None unless the export was made from this very checkpoint file and onnxruntime is installed. Both run
    the same weights in fp32 for a few texts, so the probabilities differ by no more than the export's parity
    check allows. onnxruntime and the model are loaded only when the export scores."""
    model_file = run_dir / EXPORT_DIR / EXPORT_ONNX if run_dir is not None else None
    if model_file is None or not model_file.is_file() or importlib.util.find_spec("onnxruntime") is None:
        return None
    try:
        _, sidecar = export_files(model_file)
    except RunError:
        return None
    made_from = Path(str(sidecar.get("source_checkpoint", ""))).name
    if made_from != checkpoint.name or sidecar.get("source_checkpoint_stat") != checkpoint_stat(checkpoint):
        return None
    export = scorer_of(functools.cache(lambda: inference_session(model_file)), sidecar)
    from_checkpoint = functools.cache(checkpoint_scorer)

    def score(encoded: EncodedSplit, batch_size: int, whole_input: bool) -> np.ndarray:
        if few_texts(encoded, whole_input):
            try:
                return export.score(encoded, batch_size, whole_input)
            except RunError as exc:  # e.g. a damaged model.onnx: the checkpoint beside it still predicts
                log.warning(f"{exc}; predicting from the checkpoint")
        return from_checkpoint().score(encoded, batch_size, whole_input)

    return replace(export, score=score)


def export_files(target: Path) -> tuple[Path, dict[str, Any]]:
    """(ONNX model file, checked sidecar content) for a .onnx file (its sidecar beside it) or the sidecar itself."""
    if target.suffix.lower() == ".json":
        sidecar_file, model_file = target, None
    elif not target.is_file():
        raise RunError(f"{target}: file not found")
    else:
        sidecar_file, model_file = sidecar_path(target), target
    sidecar = read_sidecar(sidecar_file)
    model_file = model_file or sidecar_file.parent / str(sidecar["model_file"])
    if sidecar["model_format"] != "onnx":
        raise RunError(f"{sidecar_file}: the sidecar of a {sidecar['model_format']} export; predict runs ONNX "
                       f"exports ({EXPORT_AGAIN}) or the checkpoint itself")
    if not model_file.is_file():
        raise RunError(f"{sidecar_file}: its model {model_file} is not there; {EXPORT_AGAIN}")
    check_sidecar_values(sidecar, sidecar_file)
    return model_file, sidecar


def check_sidecar_values(sidecar: dict[str, Any], sidecar_file: Path) -> None:
    """The values predict relies on, so that an edited sidecar fails here with its name, not deep in scoring."""
    problem = None
    tokenizer = sidecar["tokenizer"]
    if not isinstance(tokenizer, dict) or not set(tokenizer) <= {field.name for field in fields(TokenizerSettings)}:
        problem = f"tokenizer settings this textclf does not know ({tokenizer})"
    elif sidecar["truncate"] not in TRUNCATIONS:
        problem = f"truncate {sidecar['truncate']!r} is none of {', '.join(TRUNCATIONS)}"
    elif not isinstance(sidecar["max_length"], int) or sidecar["max_length"] < 1:
        problem = f"max_length {sidecar['max_length']!r} is not a positive integer"
    elif sidecar["task"] == "multilabel" and (not isinstance(sidecar["thresholds"], list)
                                              or len(sidecar["thresholds"]) != len(sidecar["labels"])):
        problem = "a multi-label model without one threshold per label"
    if problem:
        raise RunError(f"{sidecar_file}: {problem}; {EXPORT_AGAIN}")


def inference_session(model_file: Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings about the graph are not the user's to act on
    try:
        return onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...) share no public base
        raise RunError(f"{model_file}: onnxruntime cannot load it ({str(exc).splitlines()[0][:160]}); "
                       f"{EXPORT_AGAIN}") from None


def padded_batch(split: EncodedSplit, indices: np.ndarray, max_length: int, truncate: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(token_ids (B, T) int64, lengths (B,) int64) as the exported graph takes them: each text truncated as the
    sidecar's `truncation` says, an empty text one PAD_ID of length 1, PAD_ID after each text up to the longest.
    The graph appends its own extra padding, so T need not reach the widest CNN filter."""
    rows = [truncate_ids(split.ids[split.offsets[i]: split.offsets[i + 1]], max_length, truncate) for i in indices]
    lengths = np.array([max(1, len(row)) for row in rows], dtype=np.int64)
    token_ids = np.full((len(rows), int(lengths.max())), PAD_ID, dtype=np.int64)
    for r, row in enumerate(rows):
        token_ids[r, : len(row)] = row
    return token_ids, lengths
