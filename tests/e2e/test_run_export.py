"""output.export_onnx: train leaves <run>/export/model.onnx beside its checkpoints, and `predict RUN` answers a few
texts from it without importing torch; many texts, a rewritten best.pt and options the export cannot honour take
the checkpoint. A failed export never fails the trained run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import run_cli, tiny_config
from tests.e2e.test_onnx_predict import TEXTS, assert_same_predictions, imported_modules, ok, records
from textclf_cli import export as exporting
from textclf_cli.data.prepared import EncodedSplit
from textclf_cli.serving.onnx import run_export_scorer
from textclf_cli.serving.scoring import BF16_MIN_TEXTS_ON_CPU, Scorer
from textclf_cli.serving.sidecar import checkpoint_stat

pytest.importorskip("onnxruntime", reason="the run's export needs the export extra (onnx, onnxruntime)")
pytest.importorskip("onnx", reason="the run's export needs the export extra (onnx, onnxruntime)")


def config_with(tmp_path: Path, export_onnx: object = "auto") -> Path:
    return tiny_config(tmp_path, train={"epochs": 1}, output={"export_onnx": export_onnx})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run with output.export_onnx: auto (its default) and the packages installed: a CNN + n-gram ensemble."""
    return Path(ok(run_cli("train", str(config_with(tmp_path_factory.mktemp("run-export"))), "-q")).stdout.strip())


def uses_torch(*args: str) -> bool:
    process, modules = imported_modules("predict", *args, "-f", "jsonl")
    assert process.returncode == 0, process.stderr[-2000:]
    assert "textclf_cli.cli" in modules  # the trace is real
    return "torch" in modules


def test_train_exports_its_best_checkpoint(run_dir: Path) -> None:
    sidecar = json.loads((run_dir / "export" / "model.onnx.json").read_text(encoding="utf-8"))
    best = run_dir / "checkpoints" / "best.pt"
    assert (run_dir / "export" / "model.onnx").is_file()
    assert Path(sidecar["source_checkpoint"]) == best.resolve()
    assert sidecar["source_checkpoint_stat"] == checkpoint_stat(best)
    assert "(output.export_onnx)" in (run_dir / "train.log").read_text(encoding="utf-8")


def test_a_few_texts_are_predicted_without_torch_and_as_the_checkpoint_predicts(run_dir: Path, tmp_path: Path) -> None:
    assert not uses_torch(str(run_dir), *TEXTS)
    alone = tmp_path / "best.pt"  # a checkpoint outside its run folder has no export to use
    shutil.copy(run_dir / "checkpoints" / "best.pt", alone)
    assert uses_torch(str(alone), TEXTS[0])
    assert_same_predictions(records(run_dir, *TEXTS), records(alone, *TEXTS))


def test_a_copied_run_keeps_its_export_until_its_best_checkpoint_changes(run_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))  # copy2: modification times kept
    assert not uses_torch(str(copy), TEXTS[0])
    best = copy / "checkpoints" / "best.pt"
    stat = best.stat()
    os.utime(best, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # as a resumed run rewrites it
    assert uses_torch(str(copy), TEXTS[0])
    assert uses_torch(str(run_dir / "checkpoints" / "last.pt"), TEXTS[0])  # the export is best.pt's only
    assert uses_torch(str(run_dir), TEXTS[0], "--precision", "bf16")  # what the export cannot do


def test_many_texts_or_a_stream_take_the_checkpoint(run_dir: Path) -> None:
    loaded = []

    def checkpoint_scorer() -> Scorer:
        loaded.append(True)
        return Scorer(scorer.tokenizer, scorer.vocab, scorer.labels, lambda encoded, *_: np.full((len(encoded), 2), 7.0))

    scorer = run_export_scorer(run_dir / "checkpoints" / "best.pt", run_dir, checkpoint_scorer)

    def split(n: int) -> EncodedSplit:
        return EncodedSplit(np.full(n, 5, dtype=np.int32), np.arange(n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64))

    few = scorer.score(split(3), 128, True)
    assert not loaded and np.allclose(few.sum(axis=1), 1.0)  # the export's probabilities; torch not loaded
    assert (scorer.score(split(BF16_MIN_TEXTS_ON_CPU), 128, True) == 7.0).all()
    assert (scorer.score(split(3), 128, False) == 7.0).all()  # a chunk of a longer stream
    assert len(loaded) == 1  # loaded once, then kept


def test_export_asked_for_without_the_packages_is_refused_before_training(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(exporting, "missing_onnx_packages", lambda: ["onnx"])
    monkeypatch.setattr("textclf_cli.training.auto.missing_onnx_packages", lambda: ["onnx"])
    result = run_cli("train", str(config_with(tmp_path, export_onnx=True)))
    assert result.exit_code == 2
    assert "error: output.export_onnx: true needs onnx, which is not installed: pip install 'textclf-cli[export]'" \
        in result.stderr
    assert not (tmp_path / "runs").exists()
    # auto: no export, one line that says why, and the run records the choice
    result = ok(run_cli("train", str(config_with(tmp_path, export_onnx="auto"))))
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert not (run_dir / "export").exists()
    assert [line for line in result.stderr.splitlines() if "output.export_onnx" in line] == [
        line for line in result.stderr.splitlines() if "output.export_onnx auto -> false: onnx not installed" in line]
    assert len([line for line in result.stderr.splitlines() if "output.export_onnx" in line]) == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["output"]["export_onnx"] is False


def test_a_failed_export_leaves_a_completed_run_that_predicts(tmp_path: Path, monkeypatch) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the exporter cannot trace this")

    monkeypatch.setattr(exporting, "export_model", broken)
    result = ok(run_cli("train", str(config_with(tmp_path))))
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert "output.export_onnx: no ONNX export (the exporter cannot trace this); predict uses the checkpoint" \
        in result.stderr
    assert json.loads((run_dir / "status.json").read_text(encoding="utf-8"))["status"] == "completed"
    assert not (run_dir / "export").exists()
    assert [record["label"] for record in records(run_dir, *TEXTS)]


def test_a_large_input_never_loads_the_export(run_dir: Path, tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\n".join(f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(BF16_MIN_TEXTS_ON_CPU)) + "\n",
                       encoding="utf-8")
    process, modules = imported_modules("predict", str(run_dir), "--input", str(reviews), "-f", "jsonl")
    assert process.returncode == 0, process.stderr[-2000:]
    assert len(process.stdout.splitlines()) == BF16_MIN_TEXTS_ON_CPU
    assert "torch" in modules and "onnxruntime" not in modules  # onnxruntime's import and model load: ~1 s


def test_a_damaged_export_falls_back_to_the_checkpoint(run_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    (copy / "export" / "model.onnx").write_bytes(b"not a model")
    result = ok(run_cli("predict", str(copy), *TEXTS, "--format", "jsonl"))
    assert "onnxruntime cannot load it" in result.stderr and "predicting from the checkpoint" in result.stderr
    assert_same_predictions([json.loads(line) for line in result.stdout.splitlines()], records(run_dir, *TEXTS))
