"""`textclf predict MODEL.onnx`: an exported model predicts through onnxruntime what the checkpoint predicts (within
1e-4), in every output format, from every text source, without importing torch; options that do not apply fail."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, tiny_config, tiny_examples, write_table
from tests.e2e.test_multilabel import multilabel_config

pytest.importorskip("onnxruntime", reason="predicting from ONNX needs the export extra (onnxruntime)")

TEXTS = [
    "great",  # one token: shorter than the widest CNN filter
    "awful film",
    "the movie was great and the actor was brilliant, I loved it",
    "terrible boring plot <br /> the worst scene " * 12,  # longer than vocab.max_length (50): truncated
    "an unknownword in a zzzz",
]
TOPIC_TEXTS = ["stock market profit", "the team won the match", "a robot with a chip and the bank shares", "news",
               "goal " * 80]  # the last one longer than max_length


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def train_and_export(config: Path, *settings: str) -> Path:
    """Train one epoch with these --set settings, export to ONNX; returns the model file (in run/export/)."""
    trained = ok(run_cli("train", str(config), "-q", *[arg for setting in settings for arg in ("--set", setting)]))
    run_dir = Path(trained.stdout.strip())
    exported = ok(run_cli("export", str(run_dir), "--format", "onnx", "-q"))
    return Path(exported.stdout.strip())


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory) -> Path:
    """The default model: a CNN in an ensemble with the n-gram model (truncate head_tail, the default)."""
    config = tiny_config(tmp_path_factory.mktemp("onnx-ensemble"), train={"epochs": 1})
    return train_and_export(config, "model.ensemble.min_df=1")


@pytest.fixture(scope="module")
def lstm(tmp_path_factory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("onnx-lstm"), model="lstm", labels=("pos", "neg", "mixed"),
                         train={"epochs": 1}, vocab={"truncate": "tail"})
    return train_and_export(config, "model.ensemble=null")


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory) -> Path:
    """A multi-label CNN + n-gram ensemble whose thresholds are tuned per label."""
    config = multilabel_config(tmp_path_factory.mktemp("onnx-multilabel"), separator=";", epochs=2,
                               threshold="per_label")
    return train_and_export(config, "model.ensemble.min_df=1", "vocab.truncate=head")


@pytest.fixture(params=["ensemble", "lstm", "multilabel"])
def model_file(request) -> Path:
    return request.getfixturevalue(request.param)


def checkpoint_of(model_file: Path) -> Path:
    return model_file.parent.parent / "checkpoints" / "best.pt"


def texts_for(model_file: Path) -> list[str]:
    sidecar = json.loads(model_file.with_name("model.onnx.json").read_text(encoding="utf-8"))
    return TOPIC_TEXTS if sidecar["task"] == "multilabel" else TEXTS


def records(target: Path, *args: str, input: str | None = None) -> list[dict]:
    result = ok(run_cli("predict", str(target), *args, "--format", "jsonl", input=input))
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_same_predictions(ours: list[dict], expected: list[dict]) -> None:
    """Same texts, labels and label order; probabilities within 1e-4."""
    assert len(ours) == len(expected)
    for mine, theirs in zip(ours, expected):
        assert mine["text"] == theirs["text"]
        assert mine.get("label") == theirs.get("label") and mine.get("labels") == theirs.get("labels")
        assert list(mine["probabilities"]) == list(theirs["probabilities"])
        for label, probability in theirs["probabilities"].items():
            assert mine["probabilities"][label] == pytest.approx(probability, abs=1e-4)


# ---------------------------------------------------------------------------------------------------------
# the same probabilities as the checkpoint


def test_probabilities_equal_the_checkpoints_within_1e_4(model_file: Path) -> None:
    from textclf_cli.runs.checkpoint import load_model
    from textclf_cli.serving.onnx import onnx_scorer
    from textclf_cli.serving.scoring import predict_texts, predict_with

    texts = texts_for(model_file) + [""]  # an empty text is one pad token, as in training
    loaded = load_model(checkpoint_of(model_file), torch.device("cpu"))
    expected = predict_with(loaded, texts, precision="fp32")
    for batch_size in (2, 128):  # batches of different widths, and all at once
        ours = predict_texts(onnx_scorer(model_file), texts, batch_size)
        assert ours.labels == expected.labels
        np.testing.assert_allclose(ours.probabilities, expected.probabilities, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(ours.thresholds, expected.thresholds)
    assert_same_predictions(records(model_file, *texts), records(checkpoint_of(model_file), *texts))


def test_the_sidecar_itself_is_a_target(ensemble: Path) -> None:
    assert records(ensemble.with_name("model.onnx.json"), *TEXTS) == records(ensemble, *TEXTS)


def test_a_large_input_streams_in_chunks_in_input_order(ensemble: Path, tmp_path: Path, monkeypatch) -> None:
    from textclf_cli.serving import scoring as predicting

    texts = [f"{text} number {i}" for i, (text, _) in enumerate(tiny_examples(40, seed=9))]
    source = write_table(tmp_path / "many.csv", [(text, "") for text in texts])
    at_once = records(ensemble, *texts)
    monkeypatch.setattr(predicting, "PREDICT_CHUNK", 7)  # six chunks, the last one short
    output = tmp_path / "out.jsonl"
    result = ok(run_cli("predict", str(ensemble), "--input", str(source), "--format", "jsonl", "-o", str(output)))
    assert result.stdout.strip() == f"40 prediction(s) written to {output}"
    assert [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()] == at_once
    assert_same_predictions(at_once, records(checkpoint_of(ensemble), *texts))


# ---------------------------------------------------------------------------------------------------------
# text sources and output formats, shared with the checkpoint path


@pytest.mark.parametrize("args", [["-"], ["--input", "-"]], ids=["dash-argument", "input-dash"])
def test_stdin(ensemble: Path, args: list[str]) -> None:
    assert records(ensemble, *args, input="\n".join(TEXTS) + "\n\n") == records(ensemble, *TEXTS)


def test_input_file(ensemble: Path, tmp_path: Path) -> None:
    source = write_table(tmp_path / "texts.tsv", [(text, "") for text in TEXTS], "tsv", text_column="review")
    assert records(ensemble, "--input", str(source), "--text-column", "review") == records(ensemble, *TEXTS)


def test_csv_and_table_formats(ensemble: Path) -> None:
    expected = records(ensemble, *TEXTS)
    rows = list(csv.DictReader(io.StringIO(ok(run_cli("predict", str(ensemble), *TEXTS, "-f", "csv")).stdout)))
    assert list(rows[0]) == ["text", "label", "p_neg", "p_pos"]
    for row, record in zip(rows, expected, strict=True):
        assert (row["text"], row["label"]) == (record["text"], record["label"])
        assert {label: float(row[f"p_{label}"]) for label in ("neg", "pos")} == record["probabilities"]
    table = ok(run_cli("predict", str(ensemble), *TEXTS[:2])).stdout  # short texts: the table folds long ones
    for record in expected[:2]:
        line = next(line for line in table.splitlines() if f" {record['text']} " in line)
        assert f" {record['label']} " in line
        assert f"{record['label']}: {record['probabilities'][record['label']]:.3f}" in line


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_output_file_is_what_stdout_shows(ensemble: Path, tmp_path: Path, fmt: str) -> None:
    output = tmp_path / f"predictions.{fmt}"
    result = ok(run_cli("predict", str(ensemble), *TEXTS, "--format", fmt, "--output", str(output)))
    assert result.stdout.strip() == f"{len(TEXTS)} prediction(s) written to {output}"
    assert output.read_text(encoding="utf-8") == ok(run_cli("predict", str(ensemble), *TEXTS, "-f", fmt)).stdout
    assert list(tmp_path.iterdir()) == [output]  # written atomically: no temporary file left


def test_top_k(lstm: Path) -> None:
    full = records(lstm, *TEXTS)
    for short, whole in zip(records(lstm, *TEXTS, "--top-k", "1"), full, strict=True):
        assert short["probabilities"] == {whole["label"]: whole["probabilities"][whole["label"]]}


def test_multilabel_uses_the_sidecars_thresholds_and_separator(multilabel: Path) -> None:
    sidecar = json.loads(multilabel.with_name("model.onnx.json").read_text(encoding="utf-8"))
    thresholds = dict(zip(sidecar["labels"], sidecar["thresholds"]))
    predicted = records(multilabel, *TOPIC_TEXTS)
    for record in predicted:
        chosen = [label for label, p in record["probabilities"].items() if p >= thresholds[label]]
        assert list(record) == ["text", "labels", "probabilities"] and record["labels"] == chosen
    assert any(len(record["labels"]) > 1 for record in predicted)  # so the separator below is exercised
    rows = list(csv.DictReader(io.StringIO(ok(run_cli("predict", str(multilabel), *TOPIC_TEXTS, "-f", "csv")).stdout)))
    assert list(rows[0]) == ["text", "labels", *(f"p_{label}" for label in sidecar["labels"])]
    assert [row["labels"] for row in rows] == [";".join(record["labels"]) for record in predicted]


# ---------------------------------------------------------------------------------------------------------
# no torch


def imported_modules(*args: str, input: str | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the real CLI in a fresh interpreter with -X importtime; (the process, every module it imported)."""
    process = subprocess.run([sys.executable, "-X", "importtime", "-m", "textclf_cli", *args], input=input,
                             capture_output=True, text=True, timeout=120)
    modules = {line.rsplit("|", 1)[1].strip() for line in process.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    return process, modules


def test_the_onnx_path_never_imports_torch(multilabel: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.csv"
    process, modules = imported_modules("predict", str(multilabel), "--input", "-", "-f", "csv", "-o", str(output),
                                        input="\n".join(TOPIC_TEXTS) + "\n")
    assert process.returncode == 0, process.stderr[-2000:]
    assert "onnxruntime" in modules and "textclf_cli.cli" in modules  # the trace is real
    assert not {name for name in modules if name == "torch" or name.startswith("torch.")}
    assert output.read_text(encoding="utf-8") == ok(run_cli("predict", str(multilabel), *TOPIC_TEXTS, "-f", "csv")
                                                    ).stdout


# ---------------------------------------------------------------------------------------------------------
# errors: one line each, nothing on stdout


def fails(exit_code: int, *args: str, input: str | None = "") -> str:
    result = run_cli("predict", *args, input=input)
    assert result.exit_code == exit_code, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


@pytest.mark.parametrize("option", [["--device", "cuda"], ["--device", "mps"], ["--precision", "bf16"],
                                    ["--precision", "fp16"]])
def test_options_that_do_not_apply(ensemble: Path, option: list[str]) -> None:
    error = fails(2, str(ensemble), "-", *option)  # refused before stdin is read
    assert f"predict: {' '.join(option)} does not apply to an ONNX model, which runs in fp32 on the CPU" in error


def test_cpu_and_fp32_do_apply(ensemble: Path) -> None:
    assert records(ensemble, *TEXTS, "--device", "cpu", "--precision", "fp32") == records(ensemble, *TEXTS)


def test_set_does_not_apply(ensemble: Path) -> None:
    error = fails(2, str(ensemble), "great", "--set", "vocab.max_length=10")
    assert "--set applies to a config; TARGET here is an exported ONNX model" in error


def test_missing_onnxruntime(ensemble: Path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    error = fails(2, str(ensemble), "great")
    assert "an ONNX model needs onnxruntime, which is not installed: pip install 'textclf-cli[export]'" in error


def test_missing_sidecar(ensemble: Path, tmp_path: Path) -> None:
    alone = tmp_path / "model.onnx"
    shutil.copy(ensemble, alone)
    error = fails(4, str(alone), "great")
    assert f"{tmp_path / 'model.onnx.json'}: export sidecar not found; re-run `textclf export" in error


def test_a_json_that_is_no_sidecar(tmp_path: Path) -> None:
    other = tmp_path / "settings.json"
    other.write_text('{"lr": 0.1}', encoding="utf-8")
    assert f'{other}: not a textclf export sidecar (no "format": "textclf-export"); re-run `textclf export' in fails(
        4, str(other), "great")
    other.write_text("{not json", encoding="utf-8")
    assert f"{other}: not a textclf export sidecar (Expecting property name" in fails(4, str(other), "great")


def test_a_torchscript_sidecar_or_a_missing_model(ensemble: Path, tmp_path: Path) -> None:
    sidecar = json.loads(ensemble.with_name("model.onnx.json").read_text(encoding="utf-8"))
    copied = tmp_path / "model.onnx.json"
    copied.write_text(json.dumps(sidecar), encoding="utf-8")
    assert f"{copied}: its model {tmp_path / 'model.onnx'} is not there; re-run `textclf export" in fails(
        4, str(copied), "great")
    copied.write_text(json.dumps({**sidecar, "model_format": "torchscript"}), encoding="utf-8")
    assert f"{copied}: the sidecar of a torchscript export; predict runs ONNX exports" in fails(4, str(copied), "x")
