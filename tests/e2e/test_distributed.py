"""`torchrun --nproc_per_node=2 -m textclf_cli train` on the CPU (gloo): one run folder, a portable checkpoint, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import run_cli, tiny_config
from textclf_cli.runs.checkpoint import load_model
from textclf_cli.serving.scoring import predict_with

RUN_FILES = {".lock", "config.yaml", "status.json", "history.csv", "train.log", "training_curves.png",
             "checkpoints/best.pt", "checkpoints/last.pt", "checkpoints/selected.pt"}
EPOCHS = 3
METRIC_COLUMNS = ["epoch", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_f1_macro", "lr"]
TIMEOUT_S = 180  # generous: the machine running the suite may be shared


def torchrun_command(*args: str) -> list[str]:
    # `python -m torch.distributed.run` is the torchrun script, run by this very interpreter
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "textclf_cli", *args]


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(*args), cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)


def run_folders(root: Path) -> list[Path]:
    experiment = root / "runs" / "tiny"
    return sorted(path for path in experiment.iterdir() if path.is_dir() and not path.is_symlink())


def files_in(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*") if path.is_file()}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass
class DistributedRun:
    root: Path
    config: Path
    result: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> DistributedRun:
    """One uninterrupted 2-process run of EPOCHS epochs, refitted on train + valid (shared: torchrun start-up costs
    seconds per process)."""
    root = tmp_path_factory.mktemp("ddp")
    config = tiny_config(root, train={"epochs": EPOCHS, "refit": True},
                         output={"runs_dir": str(root / "runs"), "tensorboard": True})
    return DistributedRun(root, config, torchrun("train", str(config), cwd=root))


def test_two_processes_write_exactly_one_run_folder(ddp_run):
    assert ddp_run.result.returncode == 0, ddp_run.result.stderr
    [run_dir] = run_folders(ddp_run.root)
    assert ddp_run.result.stdout.splitlines() == [str(run_dir)]  # printed by rank 0 alone
    tensorboard = {name for name in files_in(run_dir) if name.startswith("tensorboard/")}
    assert files_in(run_dir) - tensorboard == RUN_FILES
    assert len(tensorboard) == 2  # rank 0's scalars and hparams event files; rank 1 writes none
    status = read_json(run_dir / "status.json")
    assert (status["status"], status["world_size"], status["epochs_completed"]) == ("completed", 2, EPOCHS)
    # both ranks refit (the members of a DDP ensemble train as long as each other), rank 0 writes best.pt
    assert status["refit"]["epochs"] == {"network": status["best_epoch"], "ngram": status["best_epoch"]}
    assert ddp_run.result.stderr.count("INFO refit epoch 1/") == 1
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    assert (ddp_run.root / "runs/tiny/latest").resolve() == run_dir.resolve()


def test_only_rank_0_logs(ddp_run):
    stderr = ddp_run.result.stderr
    assert stderr.count(f"INFO epoch 1/{EPOCHS} ") == 1
    assert stderr.count("INFO run folder ") == 1
    assert "2 processes" in (run_folders(ddp_run.root)[0] / "train.log").read_text(encoding="utf-8")


def test_the_checkpoint_loads_and_predicts_like_a_single_process_one(ddp_run, tmp_path):
    [run_dir] = run_folders(ddp_run.root)
    single = run_cli("train", str(ddp_run.config), "--quiet", "--set", "train.epochs=1",
                     "--set", f"output.runs_dir={tmp_path / 'runs'}")
    assert single.exit_code == 0, single.output
    single_dir = Path(single.stdout.strip().splitlines()[-1])
    ddp_model = load_model(run_dir / "checkpoints/best.pt", torch.device("cpu"))
    single_model = load_model(single_dir / "checkpoints/best.pt", torch.device("cpu"))
    ddp_state, single_state = ddp_model.model.state_dict(), single_model.model.state_dict()
    assert list(ddp_state) == list(single_state)  # plain names: no "module." from DDP
    assert [t.shape for t in ddp_state.values()] == [t.shape for t in single_state.values()]
    assert (ddp_model.vocab, ddp_model.labels) == (single_model.vocab, single_model.labels)
    probabilities = predict_with(ddp_model, ["great wonderful film", "awful boring plot", ""]).probabilities
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    predicted = run_cli("predict", str(run_dir), "great wonderful film", "--format", "jsonl")
    assert predicted.exit_code == 0, predicted.output
    assert sum(json.loads(predicted.stdout)["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def interrupt_after_first_epoch(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Start a long 2-process run and send torchrun SIGINT (Ctrl-C) once rank 0 logged epoch 1."""
    process = subprocess.Popen(torchrun_command("train", str(config), "--set", "train.epochs=500"), cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(TIMEOUT_S, process.kill)
    watchdog.start()
    try:
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "INFO epoch 1/500 " in line:
                process.send_signal(signal.SIGINT)  # torchrun forwards it to both workers
                break
        stdout, stderr = process.communicate()
    finally:
        watchdog.cancel()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, "".join(seen) + stderr)


def test_an_interrupted_distributed_run_resumes_under_torchrun(ddp_run, tmp_path):
    config = tiny_config(tmp_path, train={"epochs": EPOCHS})  # the same data and settings as ddp_run
    interrupted = interrupt_after_first_epoch(config, tmp_path)
    assert interrupted.returncode != 0, interrupted.stderr
    [run_dir] = run_folders(tmp_path)
    status = read_json(run_dir / "status.json")
    assert status["status"] == "interrupted", interrupted.stderr
    done = status["epochs_completed"]
    if done >= EPOCHS:  # the signal came late on a busy machine: nothing left to resume into
        pytest.skip(f"the run had already completed {done} epochs when the signal arrived")

    resumed = torchrun("train", str(config), "--resume", str(run_dir), cwd=tmp_path)  # epochs back to EPOCHS
    assert resumed.returncode == 0, resumed.stderr
    assert run_folders(tmp_path) == [run_dir]
    status = read_json(run_dir / "status.json")
    assert (status["status"], status["world_size"], status["epochs_completed"]) == ("completed", 2, EPOCHS)
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))  # every epoch exactly once
    # Same numbers as the uninterrupted run: batch order, dropout stream and weights all carried over.
    [uninterrupted_dir] = run_folders(ddp_run.root)
    uninterrupted = pd.read_csv(uninterrupted_dir / "history.csv")
    pd.testing.assert_frame_equal(history[METRIC_COLUMNS], uninterrupted[METRIC_COLUMNS], rtol=1e-5)
