"""sidecar.py: where a sidecar sits, and which files read_sidecar refuses (each naming the file and the fix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textclf_cli.errors import RunError
from textclf_cli.serving.sidecar import REQUIRED_KEYS, SIDECAR_FORMAT, SIDECAR_VERSION, read_sidecar, sidecar_path


def test_sidecar_sits_beside_its_model() -> None:
    assert sidecar_path(Path("out/model.onnx")) == Path("out/model.onnx.json")
    assert sidecar_path(Path("model.torchscript.pt")) == Path("model.torchscript.pt.json")


def minimal_sidecar() -> dict:
    return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **{key: None for key in REQUIRED_KEYS}}


def test_a_sidecar_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx.json"
    path.write_text(json.dumps(minimal_sidecar()), encoding="utf-8")
    assert read_sidecar(path) == minimal_sidecar()


@pytest.mark.parametrize(("content", "message"), [
    (None, "export sidecar not found"),
    ("[1, 2]", 'not a textclf export sidecar (no "format": "textclf-export")'),
    ('{"format": "textclf-export"', "not a textclf export sidecar (Expecting ',' delimiter"),
    (json.dumps({**minimal_sidecar(), "version": 2}), "export sidecar version 2, this textclf reads version 1"),
    (json.dumps({key: value for key, value in minimal_sidecar().items() if key not in ("vocab", "labels")}),
     "export sidecar without labels, vocab"),
], ids=["missing", "not-a-mapping", "bad-json", "newer-version", "missing-keys"])
def test_what_read_sidecar_refuses(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "model.onnx.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(RunError) as caught:
        read_sidecar(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert str(caught.value).endswith("re-run `textclf export RUN --format onnx` to write the model and its sidecar")
