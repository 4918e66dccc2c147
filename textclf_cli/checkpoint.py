"""Self-contained checkpoints: weights plus everything predict needs (vocab, labels, tokenizer, sizes)."""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from textclf_cli.atomic import write_atomic
from textclf_cli.data.text import TokenizerSettings
from textclf_cli.errors import RunError
from textclf_cli.models import build_model

CHECKPOINT_FORMAT = "textclf-checkpoint"
CHECKPOINT_VERSION = 1
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel


def unwrapped_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Weights under their plain names, on the CPU, so the file loads anywhere."""
    return {strip_wrapper_prefixes(name): tensor.detach().cpu() for name, tensor in model.state_dict().items()}


def strip_wrapper_prefixes(name: str) -> str:
    """`_orig_mod.module.conv.weight` / `module._orig_mod.conv.weight` -> `conv.weight`, in any nesting order."""
    while name.startswith(WRAPPER_PREFIXES):
        name = name.split(".", 1)[1]
    return name


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    write_atomic(path, lambda handle: torch.save(checkpoint, handle))


def new_checkpoint(model: nn.Module, info: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """`info` holds model_type, model_kwargs, vocab, labels, tokenizer, max_length, truncate, config."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **info,
            "state_dict": unwrapped_state_dict(model), **extra}


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = "it holds Python objects that are not plain tensors/values, so it was not written by textclf" \
            if "Unsupported global" in str(exc) else "truncated or not a torch file"
        raise RunError(f"{path}: not a readable textclf checkpoint ({reason}); retrain or pick another checkpoint") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a textclf checkpoint (no '{CHECKPOINT_FORMAT}' marker); was it made by another tool?")
    if checkpoint.get("version", 0) > CHECKPOINT_VERSION:
        raise RunError(f"{path}: checkpoint version {checkpoint['version']} is newer than this textclf; upgrade textclf")
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


def load_model(path: Path, device: torch.device) -> LoadedModel:
    checkpoint = load_checkpoint(path)
    try:
        model = build_model(checkpoint["model_type"], len(checkpoint["vocab"]), len(checkpoint["labels"]),
                            checkpoint["model_kwargs"])
        model.load_state_dict(checkpoint["state_dict"])
        tokenizer = TokenizerSettings(**checkpoint["tokenizer"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise RunError(f"{path}: checkpoint is incomplete or does not match its model ({str(exc)[:160]})") from None
    model.to(device).eval()
    return LoadedModel(model, checkpoint["vocab"], checkpoint["labels"], tokenizer, checkpoint["max_length"],
                       checkpoint.get("truncate", "head"), checkpoint, path)
