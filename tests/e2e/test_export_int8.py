"""export --quantize int8: ONNX Runtime's dynamic quantization, int8 weights, agreeing with fp32."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli, tiny_config, tiny_examples

pytest.importorskip("onnxruntime", reason="int8 export needs the export extra (onnx, onnxruntime)")
pytest.importorskip("onnx", reason="int8 export needs the export extra (onnx, onnxruntime)")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("int8"), n_train=200, train={"epochs": 2})
    result = run_cli("train", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def labels(model: Path, texts: list[str]) -> list[str]:
    result = run_cli("predict", str(model), *texts, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    return [json.loads(line)["label"] for line in result.stdout.splitlines()]


def test_int8_agrees_with_fp32_and_is_smaller(run_dir: Path) -> None:
    for options in ([], ["--quantize", "int8"]):
        result = run_cli("export", str(run_dir), "--format", "onnx", *options)
        assert result.exit_code == 0, result.output
    fp32, int8 = run_dir / "export/model.onnx", run_dir / "export/model.int8.onnx"
    assert "int8 check passed: the same top label as fp32 on" in run_cli(
        "export", str(run_dir), "--format", "onnx", "--quantize", "int8").stderr
    import onnx

    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    quantized = {i.name.split(".", 1)[-1] for i in onnx.load(int8).graph.initializer if i.data_type in eight_bit}
    # the embeddings, the n-gram table and the output layer hold int8 weights (on a model this
    # tiny the quantization's own scales outweigh the saving; bench/RESULTS.md has the sizes of real ones)
    assert any(name.endswith("network.embedding.weight_quantized") for name in quantized)
    assert any(name.endswith("ngram.weight_quantized") for name in quantized)
    sidecar = json.loads((run_dir / "export/model.int8.onnx.json").read_text(encoding="utf-8"))
    assert sidecar["quantization"] == "int8" and sidecar["model_file"] == "model.int8.onnx"
    assert json.loads((run_dir / "export/model.onnx.json").read_text(encoding="utf-8"))["quantization"] is None
    texts = [text for text, _ in tiny_examples(100, seed=5)]
    fp32_labels, int8_labels = labels(fp32, texts), labels(int8, texts)
    agreement = sum(a == b for a, b in zip(fp32_labels, int8_labels)) / len(texts)
    assert agreement >= 0.99


def test_quantize_needs_onnx(run_dir: Path) -> None:
    result = run_cli("export", str(run_dir), "--format", "torchscript", "--quantize", "int8")
    assert result.exit_code == 2
    assert "error: export: --quantize int8 needs --format onnx" in result.stderr
