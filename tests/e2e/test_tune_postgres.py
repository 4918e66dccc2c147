"""`textclf tune --storage URL --study NAME` on a real PostgreSQL server that the test starts itself: two worker
processes at once on one study, and one clear line for a bad URL, a missing driver or an unreachable server."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.conftest import run_cli, tiny_config
from textclf_cli.config import load_config

REPO = Path(__file__).resolve().parents[2]
SPACE = {"train.lr": {"low": 1e-3, "high": 3e-2, "log": True}, "model.dropout": {"low": 0.0, "high": 0.6}}
PASSWORD = "s3cret-pw"  # trust authentication ignores it; it must never reach a log line
TRIALS = 4
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin folder (Debian keeps initdb and pg_ctl out of PATH)."""
    found = [Path(path).parent for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    found.sort(key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0)
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl", path=str(Path(initdb).parent)) else None


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway server on a free loopback port, its data and socket in a temp folder; stopped and removed
    afterwards, even when the test fails. initdb refuses root, so as root the server runs as `postgres`."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    as_user: list[str] = []
    # in /tmp, not pytest's tmp_path: pytest-of-root is private (0700) and the postgres user must reach the folder
    root = Path(tempfile.mkdtemp(prefix="textclf-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "--no-locale", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        subprocess.run([*pg_ctl, "-l", str(root / "server.log"), "-w", "-t", "60", "-o",
                        f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off -c max_connections=50", "start"],
                       check=True, capture_output=True, timeout=90)
        subprocess.run([*as_user, str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "textclf"], check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/textclf"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "-w", "-t", "60", "stop"], capture_output=True, timeout=90)
        shutil.rmtree(root, ignore_errors=True)


def worker(config: Path, url: str, runs_dir: Path) -> subprocess.Popen:
    """One worker as a user starts it on its machine: the same command, its own runs_dir."""
    command = [sys.executable, "-m", "textclf_cli", "tune", str(config), "--storage", url, "--study", "shared",
               "--trials", str(TRIALS), "--set", f"output.runs_dir={runs_dir}"]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_workers_share_one_postgres_study_and_its_best_yaml_trains(tmp_path: Path, postgres_url: str) -> None:
    config = tiny_config(tmp_path, train={"epochs": 2}, tune=SPACE)
    assert run_cli("prepare", str(config)).exit_code == 0  # shared by both workers, so they only train
    runs = {"a": tmp_path / "runs-a", "b": tmp_path / "runs-b"}
    workers = {name: worker(config, postgres_url, runs_dir) for name, runs_dir in runs.items()}
    try:
        outputs = {name: process.communicate(timeout=300) for name, process in workers.items()}
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, process in workers.items():
        assert process.returncode == 0, outputs[name]
        assert PASSWORD not in outputs[name][1]

    study = optuna.load_study(study_name="shared", storage=postgres_url)
    trials = study.get_trials()
    assert [trial.number for trial in trials] == list(range(TRIALS))  # --trials counts both workers' trials
    assert all(trial.state in FINISHED for trial in trials), [trial.state for trial in trials]
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == TRIALS  # no values drawn twice
    assert {trial.user_attrs["pid"] for trial in trials} == {process.pid for process in workers.values()}
    for trial in trials:  # each trial's run went into its worker's own runs_dir
        owner = next(name for name, process in workers.items() if process.pid == trial.user_attrs["pid"])
        assert Path(trial.user_attrs["run_dir"]).parent.parent == runs[owner] / "tiny"

    logs = {name: next((runs_dir / "tiny").glob("tune-*/tune.log")).read_text() for name, runs_dir in runs.items()}
    assert sorted(log.count("created study shared in ") + 2 * log.count("joined study shared in ")
                  for log in logs.values()) == [1, 2]  # one worker created the study, the other joined it
    assert all(f"postgresql://postgres:***@127.0.0.1:{postgres_url.rsplit(':', 1)[1]}" in log for log in logs.values())
    assert not any(PASSWORD in log for log in logs.values())

    study_dir = next((runs["a"] / "tiny").glob("tune-*"))
    assert pd.read_csv(study_dir / "trials.csv")["number"].tolist() == list(range(TRIALS))
    tuned = load_config(study_dir / "best.yaml")
    assert tuned.output.runs_dir == runs["a"] and tuned.tune is None
    assert (tuned.train.lr, tuned.model.dropout) in {(t.params["train.lr"], t.params["model.dropout"])
                                                     for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    trained = run_cli("train", str(study_dir / "best.yaml"))
    assert trained.exit_code == 0, trained.output
    assert Path(trained.stdout.strip().splitlines()[-1]).parent == runs["a"] / "tiny"


@pytest.mark.parametrize(("url", "code", "message"), [
    ("not a url", 2, "error: --storage: not a database URL"),
    (f"mysql://user:{PASSWORD}@127.0.0.1/textclf", 2,
     "error: --storage mysql://user:***@127.0.0.1/textclf: no database driver for mysql"),
    (f"postgresql://user:{PASSWORD}@127.0.0.1:{{port}}/textclf", 4,
     "error: --storage postgresql://user:***@127.0.0.1:{port}/textclf: cannot use the database: "),
])
def test_a_bad_url_a_missing_driver_or_no_server_is_one_line_without_the_password(
        tmp_path: Path, url: str, code: int, message: str) -> None:
    config = tiny_config(tmp_path, tune=SPACE)
    port = free_port()  # nothing listens there
    result = run_cli("tune", str(config), "--storage", url.format(port=port), "--study", "s")
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message.format(port=port)) and len(result.stderr.splitlines()) == 1
    assert PASSWORD not in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any folder is made


def test_storage_and_study_go_together(tmp_path: Path) -> None:
    result = run_cli("tune", str(tiny_config(tmp_path, tune=SPACE)), "--study", "s")
    assert result.exit_code == 2 and result.stderr.startswith("error: --storage and --study go together")
