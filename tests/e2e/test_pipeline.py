"""The CLI end to end on tiny data: prepare -> train -> evaluate -> predict, per model, format and class count."""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import run_cli, tiny_config, tiny_examples, write_table

BINARY, THREE = ("pos", "neg"), ("pos", "neg", "mixed")
N_TRAIN, N_TEST, EPOCHS = 60, 30, 2
RUN_FILES = {".lock", "config.yaml", "status.json", "history.csv", "train.log", "training_curves.png",
             "checkpoints/best.pt", "checkpoints/last.pt"}
EVALUATION_FILES = {"metrics.json", "classification_report.txt", "confusion_matrix.csv", "confusion_matrix.png",
                    "errors.csv", "top_confusions.csv", "roc.png", "pr.png", "reliability.png", "risk_coverage.csv",
                    "risk_coverage.png"}
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_f1_macro", "lr",
                   "seconds"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Case:
    model: str
    fmt: str
    labels: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.model}-{self.fmt}-{len(self.labels)}classes"


CASES = [
    Case("cnn", "csv", BINARY),
    Case("cnn", "tsv", THREE),
    Case("lstm", "jsonl", BINARY),
    Case("lstm", "csv", THREE),
    Case("bag", "jsonl", THREE),
    Case("cnn", "imdb", BINARY),
]


@dataclass
class Trained:
    case: Case
    config: Path
    run_dir: Path
    files_after_train: set[str]
    stdout: str
    stderr: str

    @property
    def root(self) -> Path:
        return self.config.parent

    @property
    def labels(self) -> list[str]:
        return sorted(self.case.labels)

    def test_examples(self) -> list[tuple[str, str]]:
        return tiny_examples(N_TEST, self.case.labels, seed=2)  # what tiny_config wrote as the test split


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


def train(config: Path, *args: str) -> tuple[Path, object]:
    result = ok(run_cli("train", str(config), *args))
    run_dir = Path(result.stdout.strip().splitlines()[-1])
    assert run_dir.is_dir(), result.stdout
    return run_dir, result


def train_case(case: Case, folder: Path) -> Trained:
    config = tiny_config(folder, fmt=case.fmt, labels=case.labels, model=case.model, n_train=N_TRAIN, n_test=N_TEST)
    run_dir, result = train(config)
    return Trained(case, config, run_dir, files_under(run_dir), result.stdout, result.stderr)


@pytest.fixture(scope="module")
def cache() -> dict[Case, Trained]:
    return {}


@pytest.fixture(scope="module", params=CASES, ids=str)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, cache: dict) -> Trained:
    case = request.param
    if case not in cache:
        cache[case] = train_case(case, tmp_path_factory.mktemp(str(case)))
    return cache[case]


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory, cache: dict) -> Trained:
    """The CNN on binary CSV data, for the tests of single options."""
    case = CASES[0]
    if case not in cache:
        cache[case] = train_case(case, tmp_path_factory.mktemp(str(case)))
    return cache[case]


def predict_records(target: str | Path, *args: str, input: str | None = None) -> list[dict]:
    result = ok(run_cli("predict", str(target), *args, "--format", "jsonl", input=input))
    return [json.loads(line) for line in result.stdout.splitlines()]


def evaluate(target: str | Path, *args: str) -> dict:
    result = ok(run_cli("evaluate", str(target), "--quiet", *args))
    out_dir = Path(result.stdout.strip().split("written to ")[-1])
    return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))


def assert_consistent(metrics: dict, labels: list[str], num_examples: int) -> None:
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    assert metrics["confusion_matrix"]["labels"] == labels
    assert matrix.shape == (len(labels), len(labels))
    assert metrics["num_examples"] == matrix.sum() == num_examples
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    for i, label in enumerate(labels):
        per_class = metrics["per_class"][label]
        assert per_class["support"] == matrix[i].sum()
        assert per_class["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum() if matrix[i].sum() else 0.0)
        column = matrix[:, i].sum()
        assert per_class["precision"] == pytest.approx(matrix[i, i] / column if column else 0.0)
    assert metrics["f1_macro"] == pytest.approx(np.mean([metrics["per_class"][label]["f1"] for label in labels]))


# ---------------------------------------------------------------------------------------------------------
# every model x format x class count


def test_train_writes_exactly_the_run_files(trained: Trained) -> None:
    assert trained.files_after_train == RUN_FILES
    assert trained.run_dir.parent == trained.root / "runs" / "tiny"
    assert trained.stdout.strip() == str(trained.run_dir)  # the one result line on stdout


def test_status_json_says_completed(trained: Trained) -> None:
    status = json.loads((trained.run_dir / "status.json").read_text(encoding="utf-8"))
    history = pd.read_csv(trained.run_dir / "history.csv")
    assert status["status"] == "completed"
    assert status["epochs_completed"] == EPOCHS
    assert status["monitor"] == "valid_f1_macro"
    assert status["best_metric"] == pytest.approx(history["valid_f1_macro"].max())
    assert status["best_epoch"] == int(history.loc[history["valid_f1_macro"].idxmax(), "epoch"])
    assert status["run_id"] == trained.run_dir.name and status["experiment"] == "tiny"


def test_history_has_one_row_per_epoch(trained: Trained) -> None:
    history = pd.read_csv(trained.run_dir / "history.csv")
    assert list(history.columns) == HISTORY_COLUMNS
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))
    for column in ("train_accuracy", "valid_accuracy", "valid_f1_macro"):
        assert history[column].between(0, 1).all()
    assert (history[["train_loss", "valid_loss", "seconds"]] > 0).all().all()
    assert (history["lr"] == 0.01).all()


def test_run_folder_describes_itself(trained: Trained) -> None:
    config = yaml.safe_load((trained.run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert config["model"]["type"] == trained.case.model and config["data"]["format"] == trained.case.fmt
    assert (trained.run_dir / "config.yaml").read_text(encoding="utf-8").startswith("# textclf ")
    log = (trained.run_dir / "train.log").read_text(encoding="utf-8")
    assert "epoch 1/2" in log and "epoch 2/2" in log
    assert (trained.run_dir / "training_curves.png").read_bytes().startswith(PNG_MAGIC)
    best = torch.load(trained.run_dir / "checkpoints/best.pt", weights_only=True)
    last = torch.load(trained.run_dir / "checkpoints/last.pt", weights_only=True)
    assert best["labels"] == trained.labels and best["model_type"] == trained.case.model
    assert last["epoch"] == EPOCHS and "training" in last and "training" not in best


def test_latest_points_at_the_run(trained: Trained) -> None:
    latest = trained.run_dir.parent / "latest"
    assert latest.is_symlink()
    assert latest.resolve() == trained.run_dir.resolve()


def test_evaluate_writes_consistent_metrics(trained: Trained) -> None:
    result = ok(run_cli("evaluate", str(trained.run_dir)))
    out_dir = trained.run_dir / "evaluation" / "test"
    assert files_under(out_dir) == EVALUATION_FILES
    metrics = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    assert_consistent(metrics, trained.labels, N_TEST)
    assert metrics["data"] == "test"
    assert f"on {N_TEST} examples; written to {out_dir}" in result.stdout
    matrix = pd.read_csv(out_dir / "confusion_matrix.csv", index_col=0)
    assert list(matrix.index) == list(matrix.columns) == trained.labels
    assert matrix.values.tolist() == metrics["confusion_matrix"]["matrix"]
    report = (out_dir / "classification_report.txt").read_text(encoding="utf-8")
    assert all(label in report for label in trained.labels)
    assert (out_dir / "confusion_matrix.png").read_bytes().startswith(PNG_MAGIC)


def test_predictions_agree_with_evaluation(trained: Trained) -> None:
    metrics = evaluate(trained.run_dir)
    examples = trained.test_examples()
    texts_file = trained.root / "test_texts.txt"
    texts_file.write_text("".join(text + "\n" for text, _ in examples), encoding="utf-8")
    records = predict_records(trained.run_dir, "--input", str(texts_file))
    assert [record["text"] for record in records] == [text for text, _ in examples]
    index = {label: i for i, label in enumerate(trained.labels)}
    matrix = np.zeros((len(index), len(index)), dtype=int)
    for record, (_, label) in zip(records, examples):
        probabilities = record["probabilities"]
        assert set(probabilities) == set(trained.labels)
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert record["label"] == max(probabilities, key=probabilities.get)
        matrix[index[label], index[record["label"]]] += 1
    assert matrix.tolist() == metrics["confusion_matrix"]["matrix"]


# ---------------------------------------------------------------------------------------------------------
# evaluate options


def test_evaluate_data_file_in_another_format(binary: Trained) -> None:
    on_split = evaluate(binary.run_dir)
    holdout = write_table(binary.root / "holdout.jsonl", binary.test_examples(), "jsonl")
    on_file = evaluate(binary.run_dir, "--data", str(holdout))
    assert files_under(binary.run_dir / "evaluation" / "data-holdout") == EVALUATION_FILES
    assert on_file["data"] == str(holdout)
    for key in ("num_examples", "accuracy", "f1_macro", "confusion_matrix", "per_class"):
        assert on_file[key] == on_split[key], key


def test_evaluate_gzip_and_parquet_data_files(binary: Trained) -> None:
    import gzip


    on_split = evaluate(binary.run_dir)
    plain = write_table(binary.root / "holdout2.csv", binary.test_examples())
    packed = binary.root / "holdout2.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    parquet = binary.root / "holdout3.parquet"
    pd.read_csv(plain).to_parquet(parquet, row_group_size=4)
    for path, name in ((packed, "data-holdout2"), (parquet, "data-holdout3")):
        on_file = evaluate(binary.run_dir, "--data", str(path))
        assert (binary.run_dir / "evaluation" / name).is_dir()
        for key in ("num_examples", "accuracy", "confusion_matrix"):
            assert on_file[key] == on_split[key], (path, key)


def test_evaluate_valid_split(binary: Trained) -> None:
    metrics = evaluate(binary.run_dir, "--split", "valid")
    assert files_under(binary.run_dir / "evaluation" / "valid") == EVALUATION_FILES
    assert_consistent(metrics, binary.labels, round(N_TRAIN * 0.2))
    assert metrics["data"] == "valid"
    history = pd.read_csv(binary.run_dir / "history.csv")
    best = json.loads((binary.run_dir / "status.json").read_text(encoding="utf-8"))["best_epoch"]
    assert metrics["accuracy"] == pytest.approx(history.loc[history["epoch"] == best, "valid_accuracy"].item())


def test_evaluate_a_config_uses_its_latest_run(binary: Trained) -> None:
    result = ok(run_cli("evaluate", str(binary.config), "--quiet"))
    assert result.stdout.strip().endswith(f"written to {binary.run_dir / 'evaluation' / 'test'}")


# ---------------------------------------------------------------------------------------------------------
# predict options

TEXTS = ["great wonderful film", "awful boring worst movie", "the plot"]


def test_predict_texts_as_arguments(binary: Trained) -> None:
    records = predict_records(binary.run_dir, *TEXTS)
    assert [record["text"] for record in records] == TEXTS
    for record in records:
        assert list(record) == ["text", "label", "probabilities"]
        probabilities = record["probabilities"]
        assert list(probabilities.values()) == sorted(probabilities.values(), reverse=True)  # most likely first
        assert record["label"] == next(iter(probabilities))
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["texts.txt", "texts.csv", "texts.jsonl", "texts.tsv"])
def test_predict_input_file(binary: Trained, name: str) -> None:
    path = binary.root / name
    if name.endswith(".txt"):
        path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    else:
        write_table(path, [(text, "") for text in TEXTS], name.rsplit(".", 1)[1])
    assert predict_records(binary.run_dir, "--input", str(path)) == predict_records(binary.run_dir, *TEXTS)


@pytest.mark.parametrize("args", [["-"], ["--input", "-"]], ids=["dash-argument", "input-dash"])
def test_predict_stdin(binary: Trained, args: list[str]) -> None:
    from_stdin = predict_records(binary.run_dir, *args, input="\n".join(TEXTS) + "\n\n")
    assert from_stdin == predict_records(binary.run_dir, *TEXTS)


def test_predict_csv_format(binary: Trained) -> None:
    result = ok(run_cli("predict", str(binary.run_dir), *TEXTS, "--format", "csv"))
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["text", "label", "p_neg", "p_pos"]
    expected = predict_records(binary.run_dir, *TEXTS)
    for row, record in zip(rows, expected, strict=True):
        assert (row["text"], row["label"]) == (record["text"], record["label"])
        assert float(row["p_neg"]) + float(row["p_pos"]) == pytest.approx(1.0, abs=1e-5)
        assert float(row[f"p_{record['label']}"]) == record["probabilities"][record["label"]]


def test_predict_table_format(binary: Trained) -> None:
    result = ok(run_cli("predict", str(binary.run_dir), *TEXTS))
    records = predict_records(binary.run_dir, *TEXTS)
    lines = result.stdout.splitlines()
    for record in records:
        line = next(line for line in lines if record["text"] in line)
        assert f" {record['label']} " in line
        assert f"{record['label']}: {record['probabilities'][record['label']]:.3f}" in line


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_predict_output_file(binary: Trained, tmp_path: Path, fmt: str) -> None:
    output = tmp_path / f"predictions.{fmt}"
    result = ok(run_cli("predict", str(binary.run_dir), *TEXTS, "--format", fmt, "--output", str(output)))
    assert result.stdout.strip() == f"3 prediction(s) written to {output}"
    on_stdout = ok(run_cli("predict", str(binary.run_dir), *TEXTS, "--format", fmt)).stdout
    assert output.read_text(encoding="utf-8") == on_stdout
    assert list(tmp_path.iterdir()) == [output]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_predict_streams_a_large_input_in_chunks_in_input_order(binary: Trained, tmp_path: Path, fmt: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from textclf_cli.device import resolve_device
    from textclf_cli.runs.checkpoint import load_model
    from textclf_cli.serving import scoring as predicting

    texts = [f"{text} number {i}" for i, (text, _) in enumerate(tiny_examples(40, seed=9))]
    source = write_table(tmp_path / "many.csv", [(text, "") for text in texts])
    monkeypatch.setattr(predicting, "PREDICT_CHUNK", 7)  # six chunks, the last one short
    output = tmp_path / f"out.{fmt}"
    result = ok(run_cli("predict", str(binary.run_dir), "--input", str(source), "--format", fmt, "-o", str(output)))
    assert result.stdout.strip() == f"40 prediction(s) written to {output}"
    loaded = load_model(binary.run_dir / "checkpoints" / "best.pt", resolve_device("cpu"))
    at_once = predicting.rows(predicting.predict_with(loaded, texts), None)  # one batch of all the texts
    if fmt == "jsonl":
        streamed = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        assert streamed == at_once
    else:
        rows = list(csv.DictReader(output.open(encoding="utf-8", newline="")))
        assert [row["text"] for row in rows] == texts  # one header, then every text in input order
        assert [row["label"] for row in rows] == [record["label"] for record in at_once]


def test_predict_top_k(binary: Trained) -> None:
    full = predict_records(binary.run_dir, *TEXTS)
    top = predict_records(binary.run_dir, *TEXTS, "--top-k", "1")
    for short, whole in zip(top, full):
        assert short["label"] == whole["label"]
        assert short["probabilities"] == {whole["label"]: whole["probabilities"][whole["label"]]}
    assert predict_records(binary.run_dir, *TEXTS, "--top-k", "5") == full  # k above the label count: all


def test_predict_a_config_uses_its_latest_run(binary: Trained) -> None:
    assert predict_records(binary.config, *TEXTS) == predict_records(binary.run_dir, *TEXTS)


def test_checkpoint_moved_elsewhere_still_predicts(binary: Trained, tmp_path: Path) -> None:
    expected = predict_records(binary.run_dir / "checkpoints" / "best.pt", *TEXTS)
    moved = tmp_path / "elsewhere" / "model.pt"
    moved.parent.mkdir()
    shutil.copy(binary.run_dir / "checkpoints" / "best.pt", moved)
    hidden = {folder: folder.with_name(folder.name + ".hidden") for folder in (binary.root / "data",
                                                                               binary.root / "prepared")}
    for folder, away in hidden.items():
        folder.rename(away)
    try:
        assert predict_records(moved, *TEXTS) == expected
    finally:
        for folder, away in hidden.items():
            away.rename(folder)
    assert files_under(moved.parent) == {"model.pt"}


# ---------------------------------------------------------------------------------------------------------
# config, seeds and prepared data


def test_set_overrides_beat_the_file(binary: Trained) -> None:
    run_dir, result = train(binary.config, "--set", "train.epochs=1", "--set", "experiment=overridden",
                            "--set", "model.num_filters=3", "--set", "train.lr=0.02", "--quiet")
    assert run_dir.parent == binary.root / "runs" / "overridden"
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == [1] and (history["lr"] == 0.02).all()
    stored = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert (stored["train"]["epochs"], stored["model"]["num_filters"], stored["experiment"]) == (1, 3, "overridden")
    checkpoint = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert checkpoint["model_kwargs"]["num_filters"] == 3
    assert result.stderr == ""  # --quiet: only the result line, on stdout


def test_prepare_prints_its_folder_and_train_does_not_prepare_again(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, model="bag", n_train=30, n_test=10, train={"epochs": 1})
    prepared = ok(run_cli("prepare", str(config)))
    root = Path(prepared.stdout.strip())
    assert root.parent == tmp_path / "prepared" and (root / "meta.json").is_file()
    assert f"prepared {root} in " in prepared.stderr
    run_dir, trained = train(config)
    assert f"using prepared data {root}" in trained.stderr
    assert "INFO prepared " not in trained.stderr
    again = ok(run_cli("prepare", str(config)))
    assert again.stdout.strip() == str(root) and f"using prepared data {root}" in again.stderr
    assert [path.name for path in (tmp_path / "prepared").iterdir()] == [root.name]
    changed = ok(run_cli("prepare", str(config), "--set", "tokenizer.lowercase=false"))
    assert Path(changed.stdout.strip()) != root and "INFO prepared " in changed.stderr


def test_same_config_and_seed_train_identically(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, model="lstm", n_train=40, n_test=10)  # dropout 0.5: the seed must cover it
    first, _ = train(config, "--quiet")
    second, _ = train(config, "--quiet")
    assert first != second and first.parent == second.parent
    metric_columns = HISTORY_COLUMNS[:-1]  # all but seconds
    histories = [pd.read_csv(run / "history.csv")[metric_columns] for run in (first, second)]
    pd.testing.assert_frame_equal(histories[0], histories[1])
    weights = [torch.load(run / "checkpoints" / "last.pt", weights_only=True)["state_dict"] for run in (first, second)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
    assert (first.parent / "latest").resolve() == second.resolve()  # the newest completed run
    other_seed, _ = train(config, "--quiet", "--set", "seed=8", "--set", "train.epochs=1")
    assert not torch.equal(torch.load(other_seed / "checkpoints" / "last.pt", weights_only=True)["state_dict"]
                           ["network.embedding.weight"], weights[0]["network.embedding.weight"])


def test_auto_precision_keeps_a_few_texts_in_fp32_and_streams_many_in_chunks(trained: Trained, monkeypatch) -> None:
    from textclf_cli import precision
    from textclf_cli.runs.checkpoint import load_model
    from textclf_cli.serving import scoring as predicting

    asked: list[str] = []
    real = precision.inference_dtype
    monkeypatch.setattr(precision, "inference_dtype", lambda requested, device: asked.append(requested)
                        or real(requested, device))
    loaded = load_model(trained.run_dir / "checkpoints" / "best.pt", torch.device("cpu"))
    scorer = predicting.checkpoint_scorer(loaded, "auto")
    few = list(predicting.predict_stream(scorer, ["great film", "awful"]))
    assert [len(chunk.texts) for chunk in few] == [2] and asked == ["fp32"]  # bf16 kernel set-up would not pay
    asked.clear()
    many = list(predicting.predict_stream(scorer, (f"text {i}" for i in range(7)), chunk_size=3))
    assert [len(chunk.texts) for chunk in many] == [3, 3, 1] and asked == ["auto"] * 3  # even the short last one
