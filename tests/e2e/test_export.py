"""`textclf export`: ONNX (in onnxruntime) and TorchScript models that give textclf's probabilities within 1e-4,
driven only by the sidecar JSON, for every model family and for texts shorter than the widest CNN filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, tiny_config
from textclf_cli.data.text import Tokenizer, TokenizerSettings
from textclf_cli.runs.checkpoint import load_model
from textclf_cli.serving.scoring import predict_with

TEXTS = [
    "great",  # one token: shorter than the widest filter (3)
    "awful film",
    "the movie was great and the actor was brilliant, I loved it",
    "terrible boring plot <br /> the worst scene " * 12,  # longer than vocab.max_length (50): truncated
    "an unknownword in a zzzz",
]
SIDECAR_KEYS = {"format", "version", "model_file", "model_format", "model_type", "task", "labels", "thresholds", "temperature", "quantization",
                "label_separator", "inputs", "outputs", "tokenizer", "preprocessing", "vocab", "pad_id", "unk_id",
                "max_length", "truncate", "truncation", "empty_text", "source_checkpoint", "source_checkpoint_stat", "epoch", "exported_at",
                "versions"}


# these short texts give the n-gram member character n-grams (chars: auto); "cnn+words" is the words-only member
@pytest.fixture(scope="module", params=["cnn", "lstm", "bag", "ngram", "cnn+ngram", "cnn+words"])
def trained(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    model = request.param.split("+")[0]
    config = tiny_config(root, model=model, train={"epochs": 1}, vocab={"truncate": "head_tail"})
    settings = {"cnn": ["model.filter_sizes=[2,3]", "model.ensemble=null"], "lstm": ["model.pooling=last"],
                "bag": ["model.ngrams=3"], "ngram": ["model.ngrams=3", "model.min_df=1"],
                "cnn+ngram": ["model.ensemble.type=ngram", "model.ensemble.min_df=1"],
                "cnn+words": ["model.ensemble.min_df=1", "model.ensemble.chars=0"]}[request.param]
    result = run_cli("train", str(config), "-q", *[arg for setting in settings for arg in ("--set", setting)])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def encode_with_sidecar(texts: list[str], sidecar: dict) -> tuple[np.ndarray, np.ndarray]:
    """What a serving program does with the sidecar alone: tokenize, look up, truncate, pad."""
    tokenize = Tokenizer(TokenizerSettings(**sidecar["tokenizer"]))
    index = {token: i for i, token in enumerate(sidecar["vocab"])}
    max_length, rows = sidecar["max_length"], []
    for text in texts:
        ids = [index.get(token, sidecar["unk_id"]) for token in tokenize(text)] or [sidecar["pad_id"]]
        if len(ids) > max_length:
            assert sidecar["truncate"] == "head_tail"
            head = max_length // 4
            ids = ids[:head] + ids[len(ids) - (max_length - head):]
        rows.append(ids)
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    token_ids = np.full((len(rows), lengths.max()), sidecar["pad_id"], dtype=np.int64)
    for r, row in enumerate(rows):
        token_ids[r, : len(row)] = row
    return token_ids, lengths


def textclf_probabilities(run_dir: Path, texts: list[str]) -> np.ndarray:
    loaded = load_model(run_dir / "checkpoints/best.pt", torch.device("cpu"))
    return predict_with(loaded, texts, precision="fp32").probabilities


def exported_probabilities(model_file: Path, fmt: str, token_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"token_ids": token_ids, "lengths": lengths})[0]
    module = torch.jit.load(str(model_file))
    with torch.inference_mode():
        return module(torch.from_numpy(token_ids), torch.from_numpy(lengths)).numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_matches_textclf_within_1e_4(trained: Path, fmt: str, tmp_path: Path) -> None:
    output = tmp_path / "served" / ("model.onnx" if fmt == "onnx" else "model.pt")
    result = run_cli("export", str(trained), "--format", fmt, "--output", str(output))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(output)
    assert sorted(path.name for path in output.parent.iterdir()) == sorted([output.name, f"{output.name}.json"])
    sidecar = json.loads((output.parent / f"{output.name}.json").read_text(encoding="utf-8"))
    assert set(sidecar) == SIDECAR_KEYS
    checkpoint = torch.load(trained / "checkpoints/best.pt", weights_only=True)
    assert sidecar["vocab"] == json.loads(checkpoint["vocab"]) and sidecar["labels"] == checkpoint["labels"]
    assert (sidecar["model_file"], sidecar["model_format"], sidecar["task"]) == (output.name, fmt, "multiclass")
    assert (sidecar["max_length"], sidecar["truncate"]) == (50, "head_tail")

    expected = textclf_probabilities(trained, TEXTS)
    one_by_one = np.concatenate([exported_probabilities(output, fmt, *encode_with_sidecar([text], sidecar))
                                 for text in TEXTS])
    batched = exported_probabilities(output, fmt, *encode_with_sidecar(TEXTS, sidecar))
    assert one_by_one.shape == batched.shape == (len(TEXTS), len(sidecar["labels"]))
    np.testing.assert_allclose(one_by_one, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(batched, expected, atol=1e-4, rtol=0)


def test_default_output_goes_to_the_run_export_folder(trained: Path) -> None:
    result = run_cli("export", str(trained), "--format", "torchscript")
    assert result.exit_code == 0, result.output
    model_file = trained / "export" / "model.torchscript.pt"
    assert result.stdout.strip() == str(model_file)
    assert model_file.is_file() and (trained / "export" / "model.torchscript.pt.json").is_file()
    assert "parity check passed" in result.stderr


def test_missing_onnx_extra_is_a_clear_error(trained: Path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    result = run_cli("export", str(trained), "--format", "onnx")
    assert result.exit_code == 2
    assert "export --format onnx needs onnxruntime" in result.stderr and "[export]" in result.stderr
    assert not (trained / "export" / "model.onnx").exists()
