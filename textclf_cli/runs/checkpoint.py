"""Self-contained checkpoints: weights plus everything predict needs (vocab, labels, tokenizer, sizes),
and in last.pt the training state a resumed run continues from."""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from textclf_cli.atomic import write_atomic
from textclf_cli.data.text import TokenizerSettings
from textclf_cli.errors import RunError
from textclf_cli.models.build import build_model
from textclf_cli.models.calibration import TemperatureScaled

if TYPE_CHECKING:  # loop.py and config.py are not needed to load a model for predict
    from textclf_cli.config import Config
    from textclf_cli.data.prepared import PreparedData

CHECKPOINT_FORMAT = "textclf-checkpoint"
CHECKPOINT_VERSION = 2  # one version read: a file of another is refused with what to do
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel


def unwrapped_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights under their plain names, on the CPU, so the file loads anywhere."""
    return {strip_wrapper_prefixes(name): tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def strip_wrapper_prefixes(name: str) -> str:
    """`_orig_mod.module.conv.weight` / `module._orig_mod.conv.weight` -> `conv.weight`, in any nesting order."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


@dataclass
class CheckpointMeta:
    """What a checkpoint holds besides weights: enough to rebuild the model and encode text like training did.

    Stored as plain top-level values of the checkpoint dict, so the file loads with weights_only=True.
    """

    model_type: str
    model_kwargs: dict[str, Any]
    vocab: list[str]
    labels: list[str]
    tokenizer: TokenizerSettings
    max_length: int
    truncate: str
    config: dict[str, Any]  # the resolved config, as config_to_dict writes it
    versions: dict[str, str]  # textclf and torch that wrote the file
    prepared_fingerprint: str | None  # the prepared data trained on (evaluate reads it, never rebuilds it)
    task: str  # multiclass or multilabel
    label_separator: str  # multilabel: joins a label set in CSV output

    def to_dict(self) -> dict[str, Any]:
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        # the vocabulary as one JSON string: torch's weights-only unpickler is pure Python, and slow on many
        # separate strings, which json.loads reads in a fraction of the time
        return dict(values, tokenizer=self.tokenizer.to_dict(), vocab=json.dumps(self.vocab, ensure_ascii=False))

    @classmethod
    def from_dict(cls, checkpoint: dict[str, Any]) -> CheckpointMeta:
        """Raises KeyError naming a missing value, TypeError for a malformed one."""
        values = {item.name: checkpoint[item.name] for item in fields(cls)}
        try:
            vocab = json.loads(values["vocab"])
        except (TypeError, ValueError):
            raise TypeError("vocab is not a JSON list of tokens") from None
        return cls(**dict(values, vocab=vocab, tokenizer=TokenizerSettings(**checkpoint["tokenizer"])))


def checkpoint_meta(config: Config, data: PreparedData, model_kwargs: dict[str, Any]) -> CheckpointMeta:
    import textclf_cli
    from textclf_cli.config import config_to_dict, with_absolute_paths

    return CheckpointMeta(
        model_type=config.model.type, model_kwargs=model_kwargs, vocab=data.vocab, labels=data.labels,
        tokenizer=data.tokenizer, max_length=config.vocab.max_length, truncate=config.vocab.truncate,
        config=config_to_dict(with_absolute_paths(config)),  # absolute: evaluate works from any folder
        versions={"textclf": textclf_cli.__version__, "torch": str(torch.__version__)},
        prepared_fingerprint=data.meta.get("fingerprint"),
        task=config.task, label_separator=config.data.label_separator,
    )


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    write_atomic(path, lambda handle: torch.save(checkpoint, handle))


def new_checkpoint(model: nn.Module, meta: CheckpointMeta, **extra: Any) -> dict[str, Any]:
    """The plain dict written to a .pt file: marker, metadata, weights and `extra` (epoch, metrics, training)."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **meta.to_dict(),
            "state_dict": unwrapped_state_dict(model), "temperature": 1.0, **extra}


def load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """mmap: tensors are read from the file when first touched (predicting a few texts reads a few table rows)."""
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = "it holds Python objects that are not plain tensors/values, so it was not written by textclf" \
            if "Unsupported global" in str(exc) else "truncated or not a torch file"
        raise RunError(f"{path}: not a readable textclf checkpoint ({reason}); retrain or pick another checkpoint") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a textclf checkpoint (no '{CHECKPOINT_FORMAT}' marker); was it made by another tool?")
    version = checkpoint.get("version")
    if version != CHECKPOINT_VERSION:
        written_by = (checkpoint.get("versions") or {}).get("textclf", "another textclf")
        fix = "upgrade textclf" if isinstance(version, int) and version > CHECKPOINT_VERSION else \
            "retrain the model with this textclf"
        raise RunError(f"{path}: checkpoint format version {version} (written by textclf {written_by}); this textclf "
                       f"reads version {CHECKPOINT_VERSION}: {fix}, or read it with the textclf that wrote it")
    return checkpoint


@dataclass
class LoadedModel:
    model: nn.Module
    vocab: list[str]
    labels: list[str]
    tokenizer: TokenizerSettings
    max_length: int
    truncate: str
    checkpoint: dict[str, Any]
    path: Path
    task: str = "multiclass"
    thresholds: list[float] | None = None  # multilabel: decision threshold per label
    label_separator: str = "|"  # multilabel: joins label sets in CSV output
    temperature: float = 1.0  # model.calibration: the model's logits are already divided by it


def load_model(path: Path, device: torch.device) -> LoadedModel:
    checkpoint = load_checkpoint(path, mmap=True)
    try:
        meta = CheckpointMeta.from_dict(checkpoint)
        model = build_model(meta.model_type, len(meta.vocab), len(meta.labels), meta.model_kwargs)
        model.load_state_dict(checkpoint["state_dict"], assign=True)
        temperature = float(checkpoint["temperature"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RunError(f"{path}: checkpoint is incomplete or does not match its model ({str(exc)[:160]})") from None
    if temperature != 1.0:
        model = TemperatureScaled(model, temperature)
    model.to(device).eval()
    thresholds = checkpoint.get("thresholds")  # multilabel: per label, from the saved epoch
    if meta.task == "multilabel" and (not isinstance(thresholds, list) or len(thresholds) != len(meta.labels)):
        raise RunError(f"{path}: multi-label checkpoint without one decision threshold per label; retrain it")
    return LoadedModel(model, meta.vocab, meta.labels, meta.tokenizer, meta.max_length, meta.truncate, checkpoint, path,
                       meta.task, thresholds, meta.label_separator, temperature)
