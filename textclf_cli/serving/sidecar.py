"""The sidecar JSON beside an exported model: its name, its format marker, reading it back. No torch here: export
writes sidecars and ONNX predict reads them without importing it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from textclf_cli.errors import RunError

SIDECAR_FORMAT = "textclf-export"
SIDECAR_VERSION = 1
EXTRAS_HINT = "pip install 'textclf-cli[export]' (from a checkout: pip install -e '.[export]')"
# What predict needs from a sidecar; the other keys describe the model to people and other programs.
REQUIRED_KEYS = ("model_file", "model_format", "task", "labels", "thresholds", "tokenizer", "vocab", "max_length",
                 "truncate")


def missing_onnx_packages() -> list[str]:
    """The packages of the `export` extra that are not installed (found without importing them)."""
    return [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]


def sidecar_path(model_file: Path) -> Path:
    """model.onnx -> model.onnx.json: the sidecar sits beside its model and names it."""
    return model_file.with_name(f"{model_file.name}.json")


def checkpoint_stat(path: Path) -> dict[str, int]:
    """Size and modification time of a checkpoint file: rewritten (a resumed run's best.pt), it no longer matches."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_sidecar(path: Path) -> dict[str, Any]:
    """A sidecar's content, refused unless textclf export wrote it (in a version this textclf reads)."""
    fix = "re-run `textclf export RUN --format onnx` to write the model and its sidecar"
    if not path.is_file():
        raise RunError(f"{path}: export sidecar not found; {fix}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"{path}: not a textclf export sidecar ({str(exc).splitlines()[0][:120]}); {fix}") from None
    if not isinstance(content, dict) or content.get("format") != SIDECAR_FORMAT:
        raise RunError(f'{path}: not a textclf export sidecar (no "format": "{SIDECAR_FORMAT}"); {fix}')
    if content.get("version") != SIDECAR_VERSION:
        raise RunError(f"{path}: export sidecar version {content.get('version')!r}, this textclf reads version "
                       f"{SIDECAR_VERSION}; {fix}")
    missing = [key for key in REQUIRED_KEYS if key not in content]
    if missing:
        raise RunError(f"{path}: export sidecar without {', '.join(missing)}; {fix}")
    return content
