"""Hostile input: every bad config, data file or run gives its exit code and one clear line, and leaves nothing
behind that looks valid (no latest link, no completed run, no prepared data)."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import run_cli, tiny_config, tiny_examples, write_table

Setup = Callable[["Workspace"], tuple[list[str], list[str]]]  # -> (CLI arguments, texts stderr must contain)


@dataclass
class Workspace:
    """A fresh tmp folder per case, plus a trained run shared by the cases that need one."""

    tmp: Path
    trained: Callable[[], Path]

    def config(self, change: Callable[[dict], None] | None = None, **sections) -> Path:
        path = tiny_config(self.tmp, **sections)
        if change is not None:
            raw = yaml.safe_load(path.read_text())
            change(raw)
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def train_file(self, content: str | bytes, name: str = "train.csv", **data) -> tuple[Path, Path]:
        """A config whose data.train is `content` (in input/, beside tiny_config's data/); returns (config, file)."""
        file = self.tmp / "input" / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        fmt = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl"}[name.rsplit(".", 1)[1]]
        config = self.config(lambda raw: raw["data"].update(train=str(file), format=fmt, **data))
        if fmt != "csv":  # the test file stays CSV-only when the train file is another format
            raw = yaml.safe_load(config.read_text())
            raw["data"].pop("test")
            config.write_text(yaml.safe_dump(raw, sort_keys=False))
        return config, file

    def raw_config(self, text: str) -> Path:
        path = self.tmp / "config.yaml"
        path.write_text(text, encoding="utf-8")
        return path


def csv_rows(rows: list[tuple[str, str]], good: int = 20) -> str:
    """A CSV header, `good` clean examples, then `rows` (lines 2.. good+1 are clean)."""
    lines = ["text,label"] + [f"{text},{label}" for text, label in tiny_examples(good)] + [f"{t},{lab}" for t, lab in rows]
    return "\n".join(lines) + "\n"


def imdb_tarball(path: Path, n: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for split in ("train", "test"):
            for i, (text, label) in enumerate(tiny_examples(n)):
                add_member(archive, f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt", text)
    return path


def add_member(archive: tarfile.TarFile, name: str, text: str = "", kind: bytes = tarfile.REGTYPE,
               linkname: str = "") -> None:
    payload = text.encode("utf-8")
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    archive.addfile(info, io.BytesIO(payload) if kind == tarfile.REGTYPE else None)


def imdb_config(ws: Workspace, archive: Path, **data) -> Path:
    return ws.config(lambda raw: raw["data"].update(format="imdb", train=str(archive), test=None, **data))


# ---------------------------------------------------------------------------------------------------------
# config: exit 2, names the file and the key (or file:line:column)


def invalid_yaml(ws):
    path = ws.raw_config("experiment: tiny\ndata:\n  train: [a.csv\n  test: b.csv\n")
    return ["train", str(path)], [f"{path}:4:7: invalid YAML", "expected ',' or ']'"]


def not_a_mapping(ws):
    path = ws.raw_config("- experiment\n- data\n")
    return ["train", str(path)], [str(path), "top level must be a mapping", "got list"]


def empty_config(ws):
    path = ws.raw_config("# nothing yet\n")
    return ["train", str(path)], [str(path), "the config is empty", "experiment", "data.train"]


def unknown_key(ws):
    path = ws.config(lambda raw: raw["train"].update(epocs=3))
    return ["train", str(path)], [f"{path}: train.epocs: unknown key; did you mean 'epochs'?"]


def unknown_top_level_key(ws):
    path = ws.config(lambda raw: raw.update(tokeniser={"lowercase": True}))
    return ["train", str(path)], [f"{path}: tokeniser: unknown key; did you mean 'tokenizer'?"]


def wrong_type(ws):
    path = ws.config(lambda raw: raw["train"].update(epochs="many"))
    return ["train", str(path)], [f"{path}: train.epochs:", "valid integer", "'many'"]


def zero_lr(ws):
    path = ws.config(lambda raw: raw["train"].update(lr=0))
    return ["train", str(path)], [f"{path}: train.lr:", "greater than 0"]


def negative_batch_size(ws):
    path = ws.config(lambda raw: raw["train"].update(batch_size=-8))
    return ["train", str(path)], [f"{path}: train.batch_size:", "greater than or equal to 1", "-8"]


def zero_epochs(ws):
    path = ws.config(lambda raw: raw["train"].update(epochs=0))
    return ["train", str(path)], [f"{path}: train.epochs:", "greater than or equal to 1"]


def unknown_model_type(ws):
    path = ws.config(lambda raw: raw["model"].update(type="transformer"))
    return ["train", str(path)], [f"{path}: model.type: unknown model type 'transformer'; allowed: cnn, lstm, bag"]


def unknown_encoding(ws):
    path = ws.config(lambda raw: raw["data"].update(encoding="utf-9"))
    return ["train", str(path)], [f"{path}: data.encoding: unknown text encoding", "latin-1"]


def set_unknown_path(ws):
    path = ws.config()
    return ["train", str(path), "--set", "train.lrr=0.1"], [f"{path}: train.lrr: unknown key; did you mean 'lr'?"]


def set_without_equals(ws):
    path = ws.config()
    return ["train", str(path), "--set", "train.lr"], ["--set 'train.lr'", "expected KEY.PATH=VALUE", "--set train.lr=3e-4"]


def set_below_a_value(ws):
    path = ws.config()
    return ["train", str(path), "--set", "train.lr.value=1"], ["--set train.lr.value", "train.lr is a value"]


def missing_config(ws):
    path = ws.tmp / "nope.yaml"
    return ["train", str(path)], [f"{path}: config file not found", "configs/"]


def cuda_without_gpu(ws):
    path = ws.config(lambda raw: raw.update(device="cuda"))
    return ["train", str(path)], ["device: 'cuda' was asked for", "use device: auto or cpu"]


# ---------------------------------------------------------------------------------------------------------
# data: exit 3, names the file and line/row


def missing_train_file(ws):
    path = ws.config(lambda raw: raw["data"].update(train=str(ws.tmp / "data/missing.csv")))
    return ["train", str(path)], [f"{ws.tmp / 'data/missing.csv'}: not found", "data.train"]


def zero_byte_file(ws):
    config, file = ws.train_file(b"")
    return ["train", str(config)], [f"{file}: the file is empty", "header row"]


def no_text_column(ws):
    config = ws.config(lambda raw: raw["data"].update(text_column="review"))
    return ["train", str(config)], [f"{ws.tmp / 'data/train.csv'}: no column 'review' (data.text_column)",
                                    "columns: text, label"]


def no_label_column(ws):
    config = ws.config(lambda raw: raw["data"].update(label_column="sentiment"))
    return ["train", str(config)], ["train.csv: no column 'sentiment' (data.label_column)", "columns: text, label"]


def bad_rows_refused(ws):
    config, file = ws.train_file(csv_rows([("", "pos"), ("fine words", ""), ("  ", "neg")]), bad_rows="error")
    return ["train", str(config)], [f"{file}: 3 row(s) with an empty 'text' or 'label' at line(s) 22, 23, 24",
                                    "set data.bad_rows: skip"]


def all_rows_bad(ws):
    config, file = ws.train_file("text,label\n,pos\n,neg\n")
    return ["train", str(config)], [f"{file}: no usable examples"]


def not_utf8(ws):
    content = csv_rows([("caf\xe9 was great", "pos")]).encode("latin-1")
    config, file = ws.train_file(content)
    return ["train", str(config)], [f"{file}:22: not valid utf-8", "data.encoding (e.g. latin-1)"]


def malformed_jsonl(ws):
    lines = [json.dumps({"text": text, "label": label}) for text, label in tiny_examples(10)]
    lines.insert(6, '{"text": "unterminated, "label": "pos"}')
    config, file = ws.train_file("\n".join(lines) + "\n", name="train.jsonl")
    return ["train", str(config)], [f"{file}:7: malformed JSON", "one JSON object"]


def jsonl_not_an_object(ws):
    config, file = ws.train_file('{"text": "good", "label": "pos"}\n["a", "list"]\n', name="train.jsonl")
    return ["train", str(config)], [f"{file}:2: expected a JSON object per line, got list"]


def tsv_unbalanced_quote(ws):
    rows = "\n".join(f"{text}\t{label}" for text, label in tiny_examples(10))
    config, file = ws.train_file(f"text\tlabel\n{rows}\n\"Best\" movie ever\tpos\n", name="train.tsv")
    return ["train", str(config)], [f"{file}:12: malformed row", "check the quoting"]


def csv_extra_field(ws):
    config, file = ws.train_file(csv_rows([("one, two", "pos")]))
    return ["train", str(config)], [f"{file}:22: 3 fields but the header has 2", "quote texts"]


def one_class(ws):
    config, file = ws.train_file(csv_rows([], good=0) + "".join(f"great film {i},pos\n" for i in range(20)))
    return ["train", str(config)], [f"{file}", "only one class ('pos')", "at least two"]


def unseen_test_label(ws):
    config = ws.config()
    test = ws.tmp / "data/test.csv"
    test.write_text(test.read_text() + "an odd one,meh\n")
    return ["train", str(config)], [f"{test}:32: label 'meh' in the test split never occurs in the training data",
                                    "known labels: neg, pos"]


def imdb_truncated(ws):
    archive = imdb_tarball(ws.tmp / "imdb/aclImdb_v1.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    return ["train", str(imdb_config(ws, archive))], [f"{archive}: the IMDb archive is truncated or corrupt",
                                                      "download aclImdb_v1.tar.gz again"]


def imdb_not_an_archive(ws):
    archive = ws.tmp / "imdb/aclImdb_v1.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"<html>404 not found</html>" * 20)
    return ["train", str(imdb_config(ws, archive))], [f"{archive}: the IMDb archive is truncated or corrupt",
                                                      "not a gzip file"]


def imdb_wrong_layout(ws):
    archive = ws.tmp / "imdb/aclImdb_v1.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "reviews/0.txt", "a review")
    return ["train", str(imdb_config(ws, archive))], [f"{archive}: no aclImdb/train/pos or neg reviews found"]


def checksum_mismatch(ws):
    source = imdb_tarball(ws.tmp / "mirror/aclImdb_v1.tar.gz")
    target = ws.tmp / "downloads/aclImdb_v1.tar.gz"
    config = imdb_config(ws, target, url=source.as_uri(), sha256="0" * 64)
    return ["train", str(config)], [f"{source.as_uri()}: checksum mismatch", "expected " + "0" * 64,
                                    "the download was deleted"]


def checksum_mismatch_of_an_existing_archive(ws):
    # symlinked in as the quickstart suggests: no download happens, and the hash is checked all the same
    archive = imdb_tarball(ws.tmp / "elsewhere/aclImdb_v1.tar.gz")
    link = ws.tmp / "data/aclImdb_v1.tar.gz"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(archive)
    config = imdb_config(ws, link, url="https://example.invalid/aclImdb_v1.tar.gz", sha256="0" * 64)
    return ["prepare", str(config)], [f"{link}: checksum mismatch", "expected " + "0" * 64, "in data.sha256"]


# ---------------------------------------------------------------------------------------------------------
# runs and checkpoints: exit 4 (2 for usage)


def unfinished_run(ws) -> Path:
    """A run that died in its first epoch: status running, only the epoch-0 last.pt."""
    run = ws.tmp / "runs/tiny/20250101-000000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "running", "epochs_completed": 0}))
    shutil.copy(ws.trained() / "checkpoints/last.pt", run / "checkpoints/last.pt")
    return run


def evaluate_unfinished_run(ws):
    run = unfinished_run(ws)
    return ["evaluate", str(run)], [f"{run}: no completed checkpoint", "run status: running", "pick another run"]


def predict_unfinished_run(ws):
    run = unfinished_run(ws)
    return ["predict", str(run), "great film"], [f"{run}: no completed checkpoint", "train it to the end"]


def evaluate_config_never_trained(ws):
    config = ws.config()
    return ["evaluate", str(config)], [f"{ws.tmp / 'runs/tiny'}: no completed run", "run `textclf train` first"]


def foreign_checkpoint(ws):
    path = ws.tmp / "model.pt"
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, path)
    return ["predict", str(path), "great film"], [f"{path}: not a textclf checkpoint", "another tool"]


def pickled_object_checkpoint(ws):
    path = ws.tmp / "model.pt"
    torch.save({"format": "textclf-checkpoint", "args": argparse.Namespace(lr=1)}, path)
    return ["predict", str(path), "great film"], [f"{path}: not a readable textclf checkpoint",
                                                  "not written by textclf"]


def truncated_checkpoint(ws):
    path = ws.tmp / "best.pt"
    payload = (ws.trained() / "checkpoints/best.pt").read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    return ["evaluate", str(path), "--data", str(ws.trained().parent.parent.parent / "data/test.csv")], [
        f"{path}: not a readable textclf checkpoint (truncated", "retrain or pick another checkpoint"]


def evaluate_unseen_label(ws):
    data = write_table(ws.tmp / "labelled.csv", tiny_examples(6) + [("so so", "meh")])
    return ["evaluate", str(ws.trained()), "--data", str(data)], [
        f"{data}:8: label 'meh' was never seen by this model", "it knows: neg, pos"]


def predict_without_text(ws):
    return ["predict", str(ws.trained())], ["predict: no text given", "--input FILE", '"-" to read stdin']


def predict_empty_stdin(ws):
    return ["predict", str(ws.trained()), "-"], ["predict: stdin was empty", "one text per line"]


def predict_missing_input(ws):
    missing = ws.tmp / "texts.txt"
    return ["predict", str(ws.trained()), "--input", str(missing)], [f"{missing}: file not found"]


def predict_on_cuda(ws):
    return ["predict", str(ws.trained()), "great", "--device", "cuda"], ["device: 'cuda' was asked for"]


def resume_a_folder_that_is_no_run(ws):
    config = ws.config()
    folder = ws.tmp / "data"
    return ["train", str(config), "--resume", str(folder)], [f"{folder}: not a textclf run folder (no config.yaml)"]


CASES: dict[str, tuple[int, Setup]] = {
    # config
    "invalid_yaml": (2, invalid_yaml),
    "not_a_mapping": (2, not_a_mapping),
    "empty_config": (2, empty_config),
    "unknown_key": (2, unknown_key),
    "unknown_top_level_key": (2, unknown_top_level_key),
    "wrong_type": (2, wrong_type),
    "zero_lr": (2, zero_lr),
    "negative_batch_size": (2, negative_batch_size),
    "zero_epochs": (2, zero_epochs),
    "unknown_model_type": (2, unknown_model_type),
    "unknown_encoding": (2, unknown_encoding),
    "set_unknown_path": (2, set_unknown_path),
    "set_without_equals": (2, set_without_equals),
    "set_below_a_value": (2, set_below_a_value),
    "missing_config": (2, missing_config),
    "cuda_without_gpu": (2, cuda_without_gpu),
    # data
    "missing_train_file": (3, missing_train_file),
    "zero_byte_file": (3, zero_byte_file),
    "no_text_column": (3, no_text_column),
    "no_label_column": (3, no_label_column),
    "bad_rows_refused": (3, bad_rows_refused),
    "all_rows_bad": (3, all_rows_bad),
    "not_utf8": (3, not_utf8),
    "malformed_jsonl": (3, malformed_jsonl),
    "jsonl_not_an_object": (3, jsonl_not_an_object),
    "tsv_unbalanced_quote": (3, tsv_unbalanced_quote),
    "csv_extra_field": (3, csv_extra_field),
    "one_class": (3, one_class),
    "unseen_test_label": (3, unseen_test_label),
    "imdb_truncated": (3, imdb_truncated),
    "imdb_not_an_archive": (3, imdb_not_an_archive),
    "imdb_wrong_layout": (3, imdb_wrong_layout),
    "checksum_mismatch": (3, checksum_mismatch),
    "checksum_mismatch_of_an_existing_archive": (3, checksum_mismatch_of_an_existing_archive),
    # runs and checkpoints
    "evaluate_unfinished_run": (4, evaluate_unfinished_run),
    "predict_unfinished_run": (4, predict_unfinished_run),
    "evaluate_config_never_trained": (4, evaluate_config_never_trained),
    "foreign_checkpoint": (4, foreign_checkpoint),
    "pickled_object_checkpoint": (4, pickled_object_checkpoint),
    "truncated_checkpoint": (4, truncated_checkpoint),
    "evaluate_unseen_label": (3, evaluate_unseen_label),
    "predict_without_text": (2, predict_without_text),
    "predict_empty_stdin": (2, predict_empty_stdin),
    "predict_missing_input": (3, predict_missing_input),
    "predict_on_cuda": (2, predict_on_cuda),
    "resume_a_folder_that_is_no_run": (4, resume_a_folder_that_is_no_run),
}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    result = run_cli("train", str(tiny_config(root, train={"epochs": 1, "num_threads": 1})), "--quiet")
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, tmp_path, request, monkeypatch):
    exit_code, setup = CASES[name]
    if "cuda" in name and torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    monkeypatch.chdir(tmp_path)
    workspace = Workspace(tmp_path, lambda: request.getfixturevalue("trained_run"))
    args, expected = setup(workspace)
    trained_before = evaluation_files(request) if name in NEEDS_TRAINED else set()

    result = run_cli(*args, input="")

    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.stderr, result.output
    errors = "\n".join(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert errors and result.stderr.rstrip().endswith(errors), result.stderr  # the error lines come last
    for text in expected:
        assert text in errors, f"{text!r} not in:\n{result.stderr}"
    assert result.stdout == "", "nothing on stdout when a command fails"
    assert_nothing_valid_left(tmp_path)
    if name in NEEDS_TRAINED:
        assert evaluation_files(request) == trained_before, "a failed evaluate must not write into the run"


NEEDS_TRAINED = {"evaluate_unfinished_run", "predict_unfinished_run", "truncated_checkpoint", "evaluate_unseen_label",
                 "predict_without_text", "predict_empty_stdin", "predict_missing_input", "predict_on_cuda"}


def evaluation_files(request) -> set[Path]:
    return set(request.getfixturevalue("trained_run").rglob("evaluation/**/*"))


def assert_nothing_valid_left(root: Path) -> None:
    """No latest/best link, no completed run, no prepared data: a failed command publishes nothing."""
    runs = root / "runs"
    assert not list(runs.glob("*/latest")) and not list(runs.glob("*/best"))
    for status in runs.glob("*/*/status.json"):
        assert json.loads(status.read_text())["status"] != "completed", status
    assert not list(runs.glob("*/*/checkpoints/best.pt"))
    assert not list((root / "prepared").glob("*/meta.json"))
    assert not [path for path in root.rglob("*") if path.name.endswith((".tmp", ".part"))]


def test_hostile_case_count():
    assert len(CASES) >= 25


def test_checksum_mismatch_deletes_the_download(tmp_path):
    args, _ = checksum_mismatch(Workspace(tmp_path, lambda: Path()))
    assert run_cli(*args).exit_code == 3
    downloads = tmp_path / "downloads"
    assert downloads.is_dir() and list(downloads.iterdir()) == [], "the bad download (and its .part) is gone"


def test_a_mismatching_existing_archive_is_kept(tmp_path):
    args, _ = checksum_mismatch_of_an_existing_archive(Workspace(tmp_path, lambda: Path()))
    assert run_cli(*args).exit_code == 3
    assert (tmp_path / "elsewhere/aclImdb_v1.tar.gz").is_file(), "the user's own archive is never deleted"


def test_a_matching_existing_archive_is_hashed_once(tmp_path, monkeypatch):
    from textclf_cli.data import splits as splits_module
    from textclf_cli.data.download import sha256_of

    ws = Workspace(tmp_path, lambda: Path())
    archive = imdb_tarball(tmp_path / "data/aclImdb_v1.tar.gz")
    config = imdb_config(ws, archive, url="https://example.invalid/a.tar.gz", sha256=sha256_of(archive))
    hashed = []
    monkeypatch.setattr(splits_module, "sha256_of", lambda path: hashed.append(path) or sha256_of(path))
    result = run_cli("prepare", str(config))
    assert result.exit_code == 0, result.output
    assert hashed == [archive] and "WARNING" not in result.stderr


@pytest.mark.parametrize(("url", "sha256", "warning"), [
    ("https://example.invalid/a.tar.gz", False, "data.url https://example.invalid/a.tar.gz: data.sha256 is not set, "
                                                "so it is not checked"),
    ("http://example.invalid/a.tar.gz", True, "data.url http://example.invalid/a.tar.gz: it is plain http://, open "
                                              "to tampering on the way (use https://)"),
])
def test_an_unverifiable_url_is_warned_about(tmp_path, url, sha256, warning):
    from textclf_cli.data.download import sha256_of

    ws = Workspace(tmp_path, lambda: Path())
    archive = imdb_tarball(tmp_path / "data/aclImdb_v1.tar.gz")
    config = imdb_config(ws, archive, url=url, **({"sha256": sha256_of(archive)} if sha256 else {}))
    result = run_cli("prepare", str(config))
    assert result.exit_code == 0, result.output
    assert [line.split("WARNING ", 1)[1] for line in result.stderr.splitlines() if "WARNING" in line] == [warning]


def test_a_download_is_hashed_while_it_streams_in(tmp_path, monkeypatch):
    from textclf_cli.data import splits as splits_module
    from textclf_cli.data.download import sha256_of

    source = imdb_tarball(tmp_path / "mirror/aclImdb_v1.tar.gz")
    target = tmp_path / "downloads/aclImdb_v1.tar.gz"
    config = imdb_config(Workspace(tmp_path, lambda: Path()), target, url=source.as_uri(), sha256=sha256_of(source))
    hashed = []
    monkeypatch.setattr(splits_module, "sha256_of", lambda path: hashed.append(path) or sha256_of(path))
    result = run_cli("prepare", str(config))
    assert result.exit_code == 0, result.output
    assert target.is_file() and hashed == []


# ---------------------------------------------------------------------------------------------------------
# inputs that look odd but must just work


def prepared_counts(root: Path) -> dict:
    meta = json.loads(next((root / "prepared").glob("*/meta.json")).read_text())
    labels = json.loads(next((root / "prepared").glob("*/labels.json")).read_text())
    return {"splits": meta["splits"], "labels": labels}


def test_bom_and_crlf_just_work(tmp_path):
    ws = Workspace(tmp_path, lambda: Path())
    content = csv_rows([], good=30).replace("\n", "\r\n").encode("utf-8")
    config, _ = ws.train_file(b"\xef\xbb\xbf" + content)
    result = run_cli("prepare", str(config))
    assert result.exit_code == 0, result.output
    assert prepared_counts(tmp_path)["labels"] == ["neg", "pos"]


def test_tsv_with_quotes_and_tabs_inside_texts(tmp_path):
    examples = [(f'she said "{text}"\tand\tleft', label) for text, label in tiny_examples(30)]
    train = write_table(tmp_path / "data/train.tsv", examples, fmt="tsv")
    from textclf_cli.data.sources import read_table

    table = read_table(train, "tsv", "text", "label")
    assert len(table) == 30
    assert all(text.startswith('she said "') and "\tand\t" in text for text in table.texts)


def test_bad_rows_are_skipped_with_a_warning_by_default(tmp_path):
    ws = Workspace(tmp_path, lambda: Path())
    config, file = ws.train_file(csv_rows([("", "pos"), ("fine words", "")], good=30))
    result = run_cli("prepare", str(config))
    assert result.exit_code == 0, result.output
    assert f"{file}: 2 row(s) with an empty 'text' or 'label' at line(s) 32, 33; skipped" in result.stderr
    assert "data.bad_rows: error" in result.stderr


def test_latin1_file_with_data_encoding(tmp_path):
    ws = Workspace(tmp_path, lambda: Path())
    config, _ = ws.train_file(csv_rows([("caf\xe9 cr\xe8me great", "pos")], good=30).encode("latin-1"),
                              encoding="latin-1")
    assert run_cli("prepare", str(config)).exit_code == 0
    vocab = json.loads(next((tmp_path / "prepared").glob("*/vocab.json")).read_text())
    assert "café" in vocab


def test_unsafe_tar_members_are_ignored_and_nothing_is_written_outside(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    absolute = tmp_path / "absolute-evil.txt"
    archive = tmp_path / "imdb/aclImdb_v1.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            for i, (text, label) in enumerate(tiny_examples(12)):
                add_member(tar, f"aclImdb/{split}/{label}/{i}_{7 if label == 'pos' else 2}.txt", text)
        add_member(tar, "../evil.txt", "escaped")
        add_member(tar, "../aclImdb/train/pos/100_9.txt", "great great escaped review")
        add_member(tar, str(absolute), "absolute")
        add_member(tar, "aclImdb/train/pos/101_9.txt", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_member(tar, "aclImdb/train/neg/102_1.txt", kind=tarfile.LNKTYPE, linkname="aclImdb/train/neg/0_2.txt")
    before = set(tmp_path.rglob("*"))
    config = imdb_config(Workspace(work, lambda: Path()), archive)

    result = run_cli("prepare", str(config))

    assert result.exit_code == 0, result.output
    assert "ignored 5 archive member(s) that are links or point outside" in result.stderr
    assert "'../evil.txt'" in result.stderr
    created = {path for path in set(tmp_path.rglob("*")) - before if work not in path.parents and path != work}
    assert created == set() and not absolute.exists() and not (tmp_path / "evil.txt").exists()
    from textclf_cli.data.sources import read_imdb

    splits = read_imdb(archive)
    assert len(splits["train"]) == 12 and len(splits["test"]) == 12  # only the 12 safe reviews per split
    assert not any("escaped" in text for text in splits["train"].texts)


def test_predict_checks_its_options_before_loading_a_model_or_reading_input(tmp_path):
    # neither the target nor the input exists: the option mistake is what gets reported
    missing_run, missing_input = tmp_path / "no-run", tmp_path / "no-input.txt"
    result = run_cli("predict", str(missing_run), "--input", str(missing_input), "--format", "table",
                     "--output", str(tmp_path / "out.txt"))
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: predict: --output needs --format jsonl or csv (the table is for the terminal)"
    result = run_cli("predict", str(missing_run), "--format", "jsonl", "--output", str(tmp_path), "some text")
    assert result.exit_code == 2 and "is a folder; name a file" in result.stderr
    assert not (tmp_path / "out.txt").exists()
