"""Two torchrun "nodes" on loopback (gloo on the CPU): one run trained across both, and a node killed mid-epoch.

Each node is its own `torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --node-rank N` launcher, as on
two machines; which node's process becomes global rank 0 is up to the rendezvous.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, tiny_config, tiny_examples
from textclf_cli.runs.checkpoint import load_model
from textclf_cli.serving.scoring import predict_with

pytestmark = pytest.mark.slow

TIMEOUT_S = 150  # a whole two-node run, generous: the machine running the suite may be shared
DIST_TIMEOUT_S = 20  # TEXTCLF_DIST_TIMEOUT for the kill case: the survivor must fail well within it
HANG_TIMEOUT_S = 8  # for a frozen peer, which only the timeout can detect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """The processes whose parent is pid (torchrun starts its workers in sessions of their own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def processes_running(config: Path) -> list[int]:
    """Every process still alive whose command line names this test's config (launchers and workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(config).encode() in cmdline:
                found.append(int(entry.name))
    return found


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Nodes:
    """Two launchers started at once; stdout/stderr of node N go to nodeN.out/.err under root."""

    def __init__(self, root: Path, config: Path, *args: str, env: dict[str, str] | None = None):
        self.root, self.config = root, config
        port = free_port()
        self.launchers = []
        for rank in (0, 1):
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                       "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"nodes-{port}",
                       "--node-rank", str(rank), "-m", "textclf_cli", "train", str(config), *args]
            with open(root / f"node{rank}.out", "w") as out, open(root / f"node{rank}.err", "w") as err:
                self.launchers.append(subprocess.Popen(command, cwd=root, stdout=out, stderr=err,
                                                       start_new_session=True, env={**os.environ, **(env or {})}))

    def stderr(self, rank: int) -> str:
        return (self.root / f"node{rank}.err").read_text(encoding="utf-8", errors="replace")

    def kill_node(self, rank: int) -> None:
        """What a dead machine does: its launcher and its workers gone at once, without a word."""
        launcher = self.launchers[rank]
        workers = children_of(launcher.pid)
        kill_group(launcher.pid)
        for worker in workers:
            kill_group(worker)

    def close(self) -> None:
        for launcher in self.launchers:
            for worker in children_of(launcher.pid):
                kill_group(worker)
            kill_group(launcher.pid)
            launcher.wait(timeout=30)
        for pid in processes_running(self.config):  # workers orphaned by a killed launcher
            kill_group(pid)


@pytest.fixture
def nodes():
    started: list[Nodes] = []

    def start(*args, **kwargs) -> Nodes:
        started.append(Nodes(*args, **kwargs))
        return started[-1]

    yield start
    for each in started:
        each.close()
        assert not processes_running(each.config)


def run_folders(root: Path) -> list[Path]:
    return sorted(path for path in (root / "runs/tiny").iterdir() if path.is_dir() and not path.is_symlink())


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_two_nodes_train_one_run_that_predicts_like_a_single_process_one(nodes, tmp_path):
    config = tiny_config(tmp_path, n_train=200, train={"epochs": 3})
    run = nodes(tmp_path, config)
    codes = [launcher.wait(timeout=TIMEOUT_S) for launcher in run.launchers]
    assert codes == [0, 0], run.stderr(0) + run.stderr(1)
    [run_dir] = run_folders(tmp_path)
    status = read_json(run_dir / "status.json")
    assert (status["status"], status["world_size"], status["epochs_completed"]) == ("completed", 2, 3)
    # one process printed the run folder and logged the epochs: global rank 0, on whichever node it landed
    printed = [(tmp_path / f"node{rank}.out").read_text().split() for rank in (0, 1)]
    assert sorted(printed, key=len) == [[], [str(run_dir)]]
    assert (run.stderr(0) + run.stderr(1)).count("INFO epoch 1/3 ") == 1

    single = run_cli("train", str(config), "--quiet", "--set", f"output.runs_dir={tmp_path / 'single'}")
    assert single.exit_code == 0, single.output
    single_dir = Path(single.stdout.strip().splitlines()[-1])
    texts, labels = zip(*tiny_examples(30, seed=2))  # the test split tiny_config wrote: a fixed sample
    accuracy = {}
    for name, folder in {"nodes": run_dir, "single": single_dir}.items():
        model = load_model(folder / "checkpoints/best.pt", torch.device("cpu"))
        predicted = predict_with(model, list(texts)).probabilities.argmax(axis=1)
        accuracy[name] = float(np.mean([model.labels[i] == label for i, label in zip(predicted, labels)]))
    assert accuracy["nodes"] >= 0.8 and abs(accuracy["nodes"] - accuracy["single"]) <= 0.1, accuracy


def start_long_run(nodes, tmp_path: Path, dist_timeout_s: int) -> Nodes:
    """Two nodes on a run long enough (batches and epochs) that it is still training once epoch 1 is recorded."""
    config = tiny_config(tmp_path, n_train=400, train={"epochs": 200})
    run = nodes(tmp_path, config, env={"TEXTCLF_DIST_TIMEOUT": str(dist_timeout_s)})
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        status_files = list(tmp_path.glob("runs/tiny/2*/status.json"))
        try:
            if status_files and (read_json(status_files[0]).get("epochs_completed") or 0) >= 1:
                return run
        except ValueError:  # caught mid-write
            pass
        assert all(launcher.poll() is None for launcher in run.launchers), run.stderr(0) + run.stderr(1)
        time.sleep(0.2)
    pytest.fail("epoch 1 never completed:\n" + run.stderr(0) + run.stderr(1))


def wait_for_failure(run: Nodes, within_s: float) -> str:
    """Node 0's launcher must exit non-zero within within_s, its worker having printed one error: line."""
    started = time.monotonic()
    try:
        code = run.launchers[0].wait(timeout=within_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"node 0 still running {within_s}s after node 1 went away:\n{run.stderr(0)}")
    assert time.monotonic() - started < within_s
    assert code != 0
    errors = [line for line in run.stderr(0).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr(0)
    assert "a peer process died or the network failed" in errors[0]
    assert "--resume" in errors[0]
    return errors[0]


def test_a_node_killed_mid_epoch_fails_the_other_and_resume_continues(nodes, tmp_path):
    run = start_long_run(nodes, tmp_path, DIST_TIMEOUT_S)
    run.kill_node(1)  # its sockets close: gloo on node 0 notices at the next collective, long before the timeout
    wait_for_failure(run, DIST_TIMEOUT_S + 15)  # + the launcher's own teardown (its rendezvous may have died too)

    [run_dir] = run_folders(tmp_path)
    done = read_json(run_dir / "status.json")["epochs_completed"]
    assert done >= 1
    # status.json says failed (rank 0 survived) or running (rank 0 was on node 1): --resume takes either
    resumed = run_cli("train", str(run.config), "--quiet", "--resume", str(run_dir),
                      "--set", f"train.epochs={done + 1}")
    assert resumed.exit_code == 0, resumed.output
    assert run_folders(tmp_path) == [run_dir]
    status = read_json(run_dir / "status.json")
    assert (status["status"], status["epochs_completed"]) == ("completed", done + 1)


def test_a_frozen_node_fails_the_other_after_the_timeout(nodes, tmp_path):
    run = start_long_run(nodes, tmp_path, HANG_TIMEOUT_S)
    for worker in children_of(run.launchers[1].pid):
        os.kill(worker, signal.SIGSTOP)  # alive, sockets open, silent: only the timeout can end node 0's wait
    error = wait_for_failure(run, HANG_TIMEOUT_S + 15)
    assert f"collectives wait {HANG_TIMEOUT_S}s, set by TEXTCLF_DIST_TIMEOUT" in error


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_timeout_is_a_config_error(monkeypatch, value):
    from textclf_cli.errors import ConfigError
    from textclf_cli.training.distributed import dist_timeout

    monkeypatch.setenv("TEXTCLF_DIST_TIMEOUT", value)
    with pytest.raises(ConfigError, match="TEXTCLF_DIST_TIMEOUT"):
        dist_timeout()
    monkeypatch.setenv("TEXTCLF_DIST_TIMEOUT", "90")
    assert dist_timeout().total_seconds() == 90
