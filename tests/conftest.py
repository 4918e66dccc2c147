"""Shared test helpers: tiny generated datasets, tiny configs, and an in-process CLI runner."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from textclf_cli.cli import app


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models run fastest on one thread, and torch's default of one spin-waiting thread per core collapses
    # when several processes share the cores (a tiny LSTM forward took seconds, not milliseconds). The variable
    # also reaches the subprocesses tests start (torchrun, signal tests).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# Words that make a class easy to learn, so a 1-3 epoch tiny model gets clearly above chance.
CLASS_WORDS = {
    "pos": ["great", "wonderful", "superb", "loved", "brilliant"],
    "neg": ["awful", "terrible", "boring", "hated", "worst"],
    "mixed": ["okay", "average", "fine", "mediocre", "middling"],
}
FILLER = ["the", "movie", "plot", "actor", "scene", "film", "story", "was", "and", "a", "it", "<br />"]


def tiny_examples(n: int, labels: tuple[str, ...] = ("pos", "neg"), seed: int = 0) -> list[tuple[str, str]]:
    """n (text, label) pairs, balanced over labels, each text 3-30 words with class-specific words."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 25))]
        for _ in range(rng.randint(1, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(CLASS_WORDS.get(label, [label])))
        examples.append((" ".join(words), label))
    return examples


def write_table(path: Path, examples: list[tuple[str, str]], fmt: str = "csv", text_column: str = "text",
                label_column: str = "label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for text, label in examples:
                handle.write(json.dumps({text_column: text, label_column: label}) + "\n")
        return path
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t" if fmt == "tsv" else ",")
        writer.writerow([text_column, label_column])
        writer.writerows(examples)
    return path


def imdb_members(splits: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """aclImdb member name -> text for (text, label) pairs per split; labels must be pos/neg. Adds the
    archive's other files (unsup reviews, vocab, urls) that readers must ignore."""
    members = {"aclImdb/imdb.vocab": "the\nmovie\n", "aclImdb/train/unsup/0_0.txt": "unlabelled review",
               "aclImdb/train/urls_pos.txt": "http://example.com\n"}
    for split, examples in splits.items():
        for review_id, (text, label) in enumerate(examples):
            members[f"aclImdb/{split}/{label}/{review_id}_{7 if label == 'pos' else 2}.txt"] = text
    return members


def write_imdb_tarball(path: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """A tiny fake aclImdb_v1.tar.gz with the official layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, text in imdb_members(splits).items():
            payload = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def write_imdb_folder(root: Path, splits: dict[str, list[tuple[str, str]]]) -> Path:
    """The same tiny aclImdb, extracted: returns the folder that holds aclImdb/."""
    for name, text in imdb_members(splits).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def tiny_config(tmp_path: Path, fmt: str = "csv", labels: tuple[str, ...] = ("pos", "neg"), model: str = "cnn",
                n_train: int = 60, n_test: int = 30, **sections: Any) -> Path:
    """Write tiny train/test files and a config for them under tmp_path; returns the config path.

    fmt "imdb" writes a fake aclImdb tarball holding both splits (labels pos/neg). Keyword arguments replace
    or extend config sections, e.g. train={"epochs": 1}.
    """
    train_examples, test_examples = tiny_examples(n_train, labels, seed=1), tiny_examples(n_test, labels, seed=2)
    if fmt == "imdb":
        train = write_imdb_tarball(tmp_path / "data/aclImdb_v1.tar.gz", {"train": train_examples, "test": test_examples})
        test = None
    else:
        train = write_table(tmp_path / f"data/train.{fmt}", train_examples, fmt)
        test = write_table(tmp_path / f"data/test.{fmt}", test_examples, fmt)
    models = {
        "cnn": {"type": "cnn", "embedding_dim": 16, "num_filters": 8, "filter_sizes": [2, 3]},
        "lstm": {"type": "lstm", "embedding_dim": 16, "hidden_size": 8},
        "bag": {"type": "bag", "embedding_dim": 16, "buckets": 1000},
        "ngram": {"type": "ngram"},
    }
    config: dict[str, Any] = {
        "experiment": "tiny",
        "seed": 7,
        "device": "cpu",
        "data": {"format": fmt, "train": str(train), "valid_fraction": 0.2, "prepared_dir": str(tmp_path / "prepared")},
        "vocab": {"max_size": 500, "min_freq": 1, "max_length": 50},
        "model": models[model],
        # no ONNX export after every tiny train (seconds each across the suite): tests/e2e/test_run_export.py covers
        # it; refit (off by default) is spelled out because tests compare best.pt with the validation history
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.01, "early_stopping_patience": None, "refit": False},
        "output": {"runs_dir": str(tmp_path / "runs"), "export_onnx": False},
    }
    if test is not None:
        config["data"]["test"] = str(test)
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def spawned_workers(parent: int) -> list[int]:
    """The multiprocessing (spawn) worker processes whose parent is `parent`, found through /proc."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(command name)", which may hold spaces
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == parent and b"spawn_main" in cmdline:
            workers.append(int(stat.parent.name))
    return workers


def kill_spawned_workers(parent: int) -> int:
    """SIGKILL every spawned worker of `parent` (as the OOM killer would); how many were still there to kill."""
    killed = 0
    for pid in spawned_workers(parent):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:  # it ended between the listing and the kill
            pass
    return killed


def run_cli(*args: str, input: str | None = None):
    """run_cli("train", str(config)) -> click Result with .exit_code, .stdout, .stderr (in-process)."""
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cli():
    """cli("train", str(config)) -> click Result with .exit_code, .stdout, .stderr."""
    return run_cli


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` need CUDA: on a machine without it they are skipped, saying why."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch  # only here: collecting the rest of the suite should not pay for importing torch

    if torch.cuda.is_available():
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none visible)"))
