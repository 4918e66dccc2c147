"""The Python API: the docs page's worked example runs as written, and the API's contract (records like predict's
JSONL, probabilities in label order, textclf's own errors, no torch for an ONNX model)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli, tiny_config
from textclf_cli import load
from textclf_cli.errors import ConfigError, RunError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "guides" / "python-api.md"


def test_the_worked_example_runs_as_written(tmp_path: Path) -> None:
    code = re.search(r"## A worked example.*?```python\n(.*?)```", EXAMPLE.read_text(encoding="utf-8"), re.S).group(1)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "samples").symlink_to(REPO / "data" / "samples")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("runs/api-demo/") and " valid_f1_macro " in lines[0]
    assert lines[1].startswith("test accuracy 0.")
    assert lines[2].startswith("['neg', 'pos'] multiclass ")
    assert lines[3].split()[0] in ("neg", "pos") and lines[4].split()[0] in ("neg", "pos")
    assert lines[5].startswith("error: runs/no-such-run: no such run folder or checkpoint file")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("api"), train={"epochs": 1})
    result = run_cli("train", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


def test_predict_records_equal_the_cli_jsonl_and_proba_follows_labels(run_dir: Path) -> None:
    texts = ["a great film", "awful and boring"]
    model = load(run_dir / "checkpoints" / "best.pt")
    cli = run_cli("predict", str(run_dir / "checkpoints" / "best.pt"), *texts, "--format", "jsonl")
    assert model.predict(texts) == [json.loads(line) for line in cli.stdout.splitlines()]
    probabilities = model.predict_proba(texts)
    assert probabilities.shape == (2, len(model.labels)) and np.allclose(probabilities.sum(axis=1), 1.0)
    for row, record in zip(probabilities, model.predict(texts)):
        assert record["label"] == model.labels[int(row.argmax())]
    assert model.task == "multiclass" and model.info["run_dir"] == str(run_dir)


def test_errors_are_textclfs_own(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no such run folder or checkpoint file"):
        load(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"texts\[1\] is a int, not a string"):
        load(run_dir).predict(["fine", 3])


def test_an_onnx_export_predicts_without_importing_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    config = tiny_config(tmp_path, train={"epochs": 1}, output={"export_onnx": True})
    result = run_cli("train", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    exported = Path(result.stdout.strip()) / "export" / "model.onnx"
    code = ("import sys; from textclf_cli import load; model = load(sys.argv[1]); "
            "print(model.predict(['a great film'])[0]['label'], model.info['scorer'], 'torch' in sys.modules)")
    checked = subprocess.run([sys.executable, "-c", code, str(exported)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stderr[-2000:]
    label, scorer, torch_loaded = checked.stdout.split()
    assert label in ("pos", "neg") and scorer == "onnx" and torch_loaded == "False"
