"""`textclf tune` end to end on tiny data: a 3-trial study whose best.yaml trains, a resumed study (also after a
killed process), an unknown tune: key, and SIGTERM mid-trial."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from tests.conftest import run_cli, tiny_config
from textclf_cli.config import load_config
from textclf_cli.runs.status import read_status

REPO = Path(__file__).resolve().parents[2]
RESULT_LINE = re.compile(r"^best valid_f1_macro (\d\.\d{4}) \(trial (\d+)\); config written to (.+)$")
STUDY_FILES = {"study.db", "study.yaml", "tune.log", "trials.csv", "best.yaml", "tuning.png"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {"train.lr": {"low": 1e-3, "high": 3e-2, "log": True}, "model.dropout": {"low": 0.0, "high": 0.6}}


def tune_config(tmp_path: Path, epochs: int = 2, **sections: object) -> Path:
    # refit auto: trials are never refitted (compared on validation), the tuned config keeps auto
    return tiny_config(tmp_path, train={"epochs": epochs, "refit": "auto"}, tune=SPACE, **sections)


def tune(config: Path, *args: str):
    result = run_cli("tune", str(config), *args)
    assert result.exit_code == 0, result.output
    return result


def study_dir_of(config: Path) -> Path:
    (study,) = (config.parent / "runs/tiny").glob("tune-*")
    return study


def trials_csv(study: Path) -> pd.DataFrame:
    return pd.read_csv(study / "trials.csv")


def test_three_trial_study_writes_a_best_yaml_that_trains_to_the_same_metric(tmp_path: Path) -> None:
    config = tune_config(tmp_path)
    result = tune(config, "--trials", "3")
    value, number, best_yaml = RESULT_LINE.match(result.stdout.strip().splitlines()[-1]).groups()
    study = study_dir_of(config)
    assert Path(best_yaml) == study / "best.yaml"
    assert STUDY_FILES <= {path.name for path in study.iterdir()}
    assert (study / "tuning.png").read_bytes().startswith(PNG_MAGIC)

    trials = trials_csv(study)
    assert trials.columns.tolist() == ["number", "state", "value", "seconds", "train.lr", "model.dropout", "run_dir",
                                       "message"]
    assert trials["number"].tolist() == [0, 1, 2] and set(trials["state"]) <= {"complete", "pruned"}
    assert (trials["seconds"] > 0).all()
    assert trials.loc[0, ["train.lr", "model.dropout"]].tolist() == [0.01, 0.5]  # trial 0: the config as written
    best = trials.loc[int(number)]
    assert best["state"] == "complete" and f"{best['value']:.4f}" == value
    assert best["value"] == trials[trials["state"] == "complete"]["value"].max()

    kept = [path for path in study.iterdir() if path.is_dir() and not path.is_symlink()]
    assert {str(path) for path in kept} == set(trials["run_dir"].dropna())  # 3 trials: every completed one kept
    assert (study / "best").resolve() == Path(best["run_dir"]).resolve()
    assert read_status(Path(best["run_dir"]))["status"] == "completed"
    for trial_dir in kept:
        assert load_config(trial_dir / "config.yaml").train.refit is False
        assert not (trial_dir / "checkpoints/selected.pt").exists()

    tuned = load_config(Path(best_yaml))
    assert tuned.experiment == "tiny" and tuned.output.runs_dir == tmp_path / "runs" and tuned.tune is None
    assert (tuned.train.lr, tuned.model.dropout) == (best["train.lr"], best["model.dropout"])
    assert tuned.train.refit == "auto"
    trained = run_cli("train", best_yaml)
    assert trained.exit_code == 0, trained.output
    run_dir = Path(trained.stdout.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs/tiny"
    assert read_status(run_dir)["best_metric"] == best["value"]  # same seed, same values: the trial again


def test_resumed_study_continues_after_a_killed_process(tmp_path: Path) -> None:
    config = tune_config(tmp_path, epochs=1)
    tune(config, "--trials", "2")
    study = study_dir_of(config)
    # what a SIGKILLed tune leaves: a trial stuck in `running` and its half-written run folder
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    storage = f"sqlite:///{study / 'study.db'}"
    orphan = optuna.load_study(study_name="textclf", storage=storage).ask()
    orphan.set_user_attr("host", socket.gethostname())
    orphan.set_user_attr("pid", dead.pid)
    leftover = study / "20000101-000000"
    leftover.mkdir()
    (leftover / "status.json").write_text(json.dumps({"tool": "textclf", "format_version": 1, "status": "running",
                                                      "pid": dead.pid, "run_id": leftover.name,
                                                      "experiment": study.name}))  # as textclf writes it

    result = tune(config, "--resume", str(study), "--trials", "4")
    assert f"trial 2 was left running by process {dead.pid}, which is gone: marked failed" in result.stderr
    assert "continuing study" in result.stderr
    trials = trials_csv(study)
    assert trials["number"].tolist() == [0, 1, 2, 3, 4]
    assert trials["state"].tolist()[2] == "fail"
    assert (trials["state"] != "fail").sum() == 4  # --trials counts the study's finished trials, resumes included
    assert not leftover.exists()
    assert len(optuna.load_study(study_name="textclf", storage=storage).trials) == 5
    assert RESULT_LINE.match(result.stdout.strip().splitlines()[-1])

    again = tune(config, "--resume", str(study), "--trials", "4")  # already there: nothing more runs
    assert "nothing to run" in again.stderr and len(trials_csv(study)) == 5


def test_resume_refuses_another_config_or_a_folder_that_is_no_study(tmp_path: Path) -> None:
    config = tune_config(tmp_path, epochs=1)
    tune(config, "--trials", "1")
    study = study_dir_of(config)
    changed = run_cli("tune", str(config), "--resume", str(study), "--set", "train.batch_size=4")
    assert changed.exit_code == 2
    assert f"--resume {study}: the config differs from the study's in train.batch_size" in changed.stderr
    wrong = run_cli("tune", str(config), "--resume", str(tmp_path))
    assert wrong.exit_code == 4 and "not a textclf study folder" in wrong.stderr


def test_unknown_tune_key_is_refused_before_any_work(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, tune={"train.lrr": {"low": 1e-3, "high": 1e-2}})
    result = run_cli("tune", str(config))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {config}: tune.train.lrr: unknown key; did you mean 'lr'?")
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_sigterm_mid_trial_marks_it_failed_and_exits_130_with_the_study_intact(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, n_train=400, train={"epochs": 500, "num_threads": 1}, tune=SPACE)
    assert run_cli("prepare", str(config)).exit_code == 0  # so that the child only trains
    process = subprocess.Popen([sys.executable, "-m", "textclf_cli", "tune", str(config), "--trials", "1"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((tmp_path / "runs/tiny").glob("tune-*/*/history.csv")):  # the trial is training
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the trial never started training: {process.communicate()}")
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    study = study_dir_of(config)
    assert f"tune interrupted during trial 0, which is marked failed; 0 trial(s) completed; the study is intact: " \
           f"continue with textclf tune CONFIG --resume {study}" in stderr
    assert stdout == ""
    trials = trials_csv(study)
    assert trials[["state", "message"]].values.tolist() == [["fail", "interrupted"]]
    assert not (study / "best.yaml").exists()

    stored = optuna.load_study(study_name="textclf", storage=f"sqlite:///{study / 'study.db'}")
    assert [trial.state.name for trial in stored.trials] == ["FAIL"]
    assert not [path for path in study.iterdir() if path.is_dir() and not path.is_symlink()]  # not useful: gone


def test_jobs_runs_a_worker_process_on_the_same_study(tmp_path: Path) -> None:
    config = tune_config(tmp_path, epochs=20)
    result = tune(config, "--trials", "4", "--jobs", "2")
    study = study_dir_of(config)
    log_text = (study / "tune.log").read_text()
    assert "started 1 worker process(es) on the study" in log_text
    assert f"continuing study {study}" in log_text  # the worker joined through --resume
    trials = trials_csv(study)
    assert trials["number"].tolist() == list(range(len(trials)))
    assert 4 <= (trials["state"] != "fail").sum() <= 5  # the two processes may both start the last trial
    stored = optuna.load_study(study_name="textclf", storage=f"sqlite:///{study / 'study.db'}")
    worker_pid = int(re.search(r"worker process\(es\) on the study \(pids (\d+)\)", log_text).group(1))
    assert {trial.user_attrs["pid"] for trial in stored.trials} <= {os.getpid(), worker_pid}
    assert RESULT_LINE.match(result.stdout.strip().splitlines()[-1])
