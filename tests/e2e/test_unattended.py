"""Running unattended: signals, SIGKILL + --resume, NaN losses, concurrent runs, --promote-if-better, --quiet,
plain log lines and the cron script. The signal tests start real `python -m textclf_cli train` processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import kill_spawned_workers, run_cli, tiny_config
from textclf_cli.errors import RunError
from textclf_cli.runs.checkpoint import load_checkpoint
from textclf_cli.runs.folders import lock_run, promote_if_better
from textclf_cli.runs.status import read_status

REPO = Path(__file__).resolve().parents[2]
HISTORY_COLUMNS = ["train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "valid_f1_macro", "lr"]


def slow_config(tmp_path: Path, epochs: int = 200) -> Path:
    """Enough batches per epoch (~190) that a signal lands mid-epoch; prepared here, so the child only trains."""
    config = tiny_config(tmp_path, n_train=1500, train={"epochs": epochs, "batch_size": 8, "num_threads": 1})
    assert run_cli("prepare", str(config)).exit_code == 0
    return config


def start_train(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "textclf_cli", "train", str(config), *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_epochs(process: subprocess.Popen, runs: Path, epochs: int, timeout: float = 60) -> Path:
    """The run folder, once its status.json says `epochs` epochs are done (the child must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        for status_file in runs.glob("tiny/*/status.json"):
            status = read_status(status_file.parent) or {}
            if status.get("status") == "running" and (status.get("epochs_completed") or 0) >= epochs:
                return status_file.parent
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no run reached {epochs} epoch(s) in {timeout}s: {process.communicate()}")


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "history.csv")


def assert_consistent_stop(run_dir: Path, status: str) -> int:
    """After a stop, status, history and last.pt agree on the last completed epoch; nothing looks finished."""
    record = read_status(run_dir)
    assert record["status"] == status, record
    done = record["epochs_completed"]
    assert done >= 1
    assert history(run_dir)["epoch"].tolist() == list(range(1, done + 1))
    assert load_checkpoint(run_dir / "checkpoints/last.pt")["epoch"] == done
    assert not (run_dir.parent / "latest").exists() and not (run_dir.parent / "best").exists()
    return done


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_marks_interrupted_and_exits_130(tmp_path, sig):
    process = start_train(slow_config(tmp_path))
    run_dir = wait_for_epochs(process, tmp_path / "runs", 1)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr
    done = assert_consistent_stop(run_dir, "interrupted")
    assert f"error: interrupted by {sig.name} during epoch {done + 1}" in stderr
    assert f"resume with: textclf train CONFIG --resume {run_dir}" in stderr
    assert f"resume with: textclf train CONFIG --resume {run_dir}" in read_status(run_dir)["message"]


def test_second_signal_exits_at_once(tmp_path):
    script = (
        "import os, signal, time\n"
        "from textclf_cli.training.state import SignalGuard\n"
        "with SignalGuard() as guard:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.2)\n"
        "    print('first:', guard.requested, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(20)\n"
        "print('never here')\n"
    )
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 130
    assert result.stdout == "first: SIGTERM\n"
    assert time.monotonic() - started < 20


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    config = slow_config(tmp_path)
    process = start_train(config)
    run_dir = wait_for_epochs(process, tmp_path / "runs", 2)
    seconds = float(history(run_dir)["seconds"].iloc[-1])
    time.sleep(seconds * 0.4)  # into epoch 3
    process.kill()
    process.communicate(timeout=30)
    done = assert_consistent_stop(run_dir, "running")  # SIGKILL leaves "running": nothing looks complete
    started_at = read_status(run_dir)["started_at"]

    total = done + 1
    resumed = run_cli("train", str(config), "--resume", str(run_dir), "--set", f"train.epochs={total}")

    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.strip() == str(run_dir)
    assert f"resuming {run_dir} after epoch {done}" in resumed.stderr
    assert history(run_dir)["epoch"].tolist() == list(range(1, total + 1))  # every epoch exactly once
    record = read_status(run_dir)
    assert record["status"] == "completed" and record["epochs_completed"] == total
    assert record["started_at"] == started_at and "resumed_at" in record and record.get("message") is None
    assert (run_dir.parent / "latest").resolve() == run_dir.resolve()
    # the same epochs trained without interruption: identical numbers (weights, optimizer, RNG all restored)
    reference = run_cli("train", str(config), "--set", f"train.epochs={total}", "--quiet")
    assert reference.exit_code == 0, reference.output
    expected = history(Path(reference.stdout.strip()))[HISTORY_COLUMNS]
    pd.testing.assert_frame_equal(history(run_dir)[HISTORY_COLUMNS], expected, rtol=1e-5)


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 1})
    trained = run_cli("train", str(config), "--quiet")
    run_dir = trained.stdout.strip()

    refused = run_cli("train", str(config), "--resume", run_dir, "--set", "train.lr=0.5",
                      "--set", "model.num_filters=4", "--set", "train.epochs=2")
    assert refused.exit_code == 2
    assert (f"error: --resume {run_dir}: the config differs from the run's in model.num_filters, train.lr; "
            f"only train.epochs (and train.refit, output.keep_runs, output.tensorboard, output.export_onnx) may change "
            f"when resuming") in refused.stderr
    assert history(Path(run_dir))["epoch"].tolist() == [1]

    extended = run_cli("train", str(config), "--resume", run_dir, "--set", "train.epochs=2", "--quiet")
    assert extended.exit_code == 0, extended.output
    assert history(Path(run_dir))["epoch"].tolist() == [1, 2]


def test_a_resume_that_fails_to_load_leaves_the_run_as_it_was(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 1})
    run_dir = Path(run_cli("train", str(config), "--quiet").stdout.strip())
    last = run_dir / "checkpoints" / "last.pt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["state_dict"].pop(next(iter(checkpoint["state_dict"])))  # weights that no longer fit the model
    torch.save(checkpoint, last)
    before = {name: (run_dir / name).read_bytes() for name in ("status.json", "config.yaml")}

    refused = run_cli("train", str(config), "--resume", str(run_dir), "--set", "train.epochs=2")
    assert refused.exit_code == 4
    assert f"error: {last}: its weights do not fit the model this config builds (" in refused.stderr
    assert "start a new run instead of resuming" in refused.stderr and "Traceback" not in refused.output
    assert {name: (run_dir / name).read_bytes() for name in before} == before  # still completed, same config
    assert history(run_dir)["epoch"].tolist() == [1]


def test_a_resumed_run_keeps_the_values_it_resolved_from_auto(tmp_path):
    from textclf_cli.config import validate_config, with_stored_auto

    raw = {"experiment": "e", "data": {"train": "t.csv"}, "model": {"type": "cnn"}}
    stored = validate_config({**raw, "vocab": {"max_length": 96}, "model": {"type": "cnn", "ensemble": {"buckets": 4096}}},
                             "stored")
    current = with_stored_auto(validate_config(raw, "current"), stored)
    assert (current.vocab.max_length, current.model.ensemble.buckets) == (96, 4096)
    explicit = validate_config({**raw, "vocab": {"max_length": 64}}, "current")
    assert with_stored_auto(explicit, stored).vocab.max_length == 64  # only `auto` follows the stored run


def test_a_resumed_run_reads_the_data_prepared_with_auto_min_freq(tmp_path):
    config = tiny_config(tmp_path, n_train=40, n_test=10, vocab={"min_freq": "auto"}, train={"epochs": 1})
    first = run_cli("train", str(config), "--quiet")
    assert first.exit_code == 0, first.stderr
    run_dir = Path(first.stdout.strip().splitlines()[-1])
    assert yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["vocab"]["min_freq"] == 1
    prepared = sorted((tmp_path / "prepared").iterdir())
    resumed = run_cli("train", str(config), "--quiet", "--resume", str(run_dir), "--set", "train.epochs=2")
    assert resumed.exit_code == 0, resumed.stderr
    assert sorted((tmp_path / "prepared").iterdir()) == prepared  # not prepared again under min_freq 1's key
    assert len(pd.read_csv(run_dir / "history.csv")) == 2


def test_a_run_being_trained_cannot_be_resumed_twice(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "status.json").write_text(json.dumps({"status": "running", "pid": 4242}))
    lock = lock_run(run_dir)
    with pytest.raises(RunError, match=r"another textclf process \(pid 4242\) is training in this run folder"):
        lock_run(run_dir)
    lock.release()
    lock_run(run_dir).release()  # free again once the first one ends


# ---------------------------------------------------------------------------------------------------------
# NaN / inf


def test_nan_loss_stops_with_exit_4_and_saves_nothing_from_it(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 3, "optimizer": "sgd", "lr": 1e30, "grad_clip": None})
    result = run_cli("train", str(config))

    assert result.exit_code == 4
    assert "error: the training loss became nan at epoch 1, batch 2; nothing was saved from this state: " \
           "lower train.lr or set train.grad_clip" in result.stderr
    run_dir = next((tmp_path / "runs/tiny").iterdir())
    assert read_status(run_dir)["status"] == "failed"
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["last.pt"]
    last = load_checkpoint(run_dir / "checkpoints/last.pt")
    assert last["epoch"] == 0 and all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert not (run_dir / "history.csv").exists() and not (tmp_path / "runs/tiny/latest").exists()


def test_nan_validation_loss_stops_too(tmp_path, monkeypatch):
    from textclf_cli.training import loop

    real_validate = loop.validate
    monkeypatch.setattr(loop, "validate", lambda trainer, *rest: {**real_validate(trainer, *rest), "loss": float("inf")})
    result = run_cli("train", str(tiny_config(tmp_path)))
    assert result.exit_code == 4
    assert "error: the validation loss became inf after epoch 1" in result.stderr
    assert not list((tmp_path / "runs").rglob("best.pt"))


# ---------------------------------------------------------------------------------------------------------
# concurrent runs, promotion, output for scripts


def test_two_trains_at_once_get_separate_runs_and_latest_is_completed(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 2, "num_threads": 1})  # not prepared: they race on that too
    processes = [start_train(config, "--quiet") for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]

    assert [process.returncode for process in processes] == [0, 0], outputs
    run_dirs = {Path(stdout.strip()) for stdout, _ in outputs}
    assert len(run_dirs) == 2 and all(run.parent == tmp_path / "runs/tiny" for run in run_dirs)
    for run in run_dirs:
        assert read_status(run)["status"] == "completed" and (run / "checkpoints/best.pt").is_file()
    assert (tmp_path / "runs/tiny/latest").resolve() == max(run_dirs)
    assert len(list((tmp_path / "prepared").glob("*/meta.json"))) == 1
    assert not [p for p in (tmp_path / "prepared").iterdir() if p.name.startswith(".")], "no staging left"


def fake_run(experiment_dir: Path, name: str, best_metric: float | None, monitor: str = "valid_f1_macro") -> Path:
    run = experiment_dir / name
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"tool": "textclf", "format_version": 1, "run_id": name,
                                                 "experiment": experiment_dir.name, "status": "completed",
                                                 "best_metric": best_metric, "monitor": monitor}))
    return run


def best_of(experiment_dir: Path) -> str:
    return (experiment_dir / "best").resolve().name


def test_promote_if_better_decisions(tmp_path):
    runs = tmp_path / "exp"
    first = fake_run(runs, "1", 0.80)
    assert promote_if_better(first, "valid_f1_macro", 0.80) == (
        True, "promoted best -> 1: valid_f1_macro 0.8000 beats no previous best")
    worse = fake_run(runs, "2", 0.70)
    assert promote_if_better(worse, "valid_f1_macro", 0.70) == (
        False, "kept best -> 1: valid_f1_macro 0.7000 does not beat 0.8000")
    tie = fake_run(runs, "3", 0.80)
    assert promote_if_better(tie, "valid_f1_macro", 0.80)[0] is False and best_of(runs) == "1"
    better = fake_run(runs, "4", 0.85)
    assert promote_if_better(better, "valid_f1_macro", 0.85) == (
        True, "promoted best -> 4: valid_f1_macro 0.8500 beats 0.8000 of 1")
    loss_run = fake_run(runs, "5", 0.01, monitor="valid_loss")
    promoted, message = promote_if_better(loss_run, "valid_loss", 0.01)
    assert not promoted and "cannot be compared" in message and best_of(runs) == "4"


def test_promote_if_better_lower_loss_wins_and_a_dangling_best_is_replaced(tmp_path):
    runs = tmp_path / "exp"
    promote_if_better(fake_run(runs, "1", 0.30, "valid_loss"), "valid_loss", 0.30)
    assert promote_if_better(fake_run(runs, "2", 0.40, "valid_loss"), "valid_loss", 0.40)[0] is False
    assert promote_if_better(fake_run(runs, "3", 0.20, "valid_loss"), "valid_loss", 0.20)[0] is True
    (runs / "3" / "status.json").unlink()
    (runs / "3").rmdir()  # the best run was deleted by hand
    assert promote_if_better(fake_run(runs, "4", 0.90, "valid_loss"), "valid_loss", 0.90)[0] is True
    assert best_of(runs) == "4"


def test_train_promote_if_better_records_the_decision(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 1})
    first = run_cli("train", str(config), "--promote-if-better")
    assert first.exit_code == 0, first.output
    run_dir = Path(first.stdout.strip())
    status = read_status(run_dir)
    assert status["promoted"] is True
    assert status["promotion"].startswith(f"promoted best -> {run_dir.name}: valid_f1_macro ")
    assert re.search(r"INFO promoted best -> \S+: valid_f1_macro \d\.\d{4} beats no previous best\n", first.stderr)
    assert "promoted best" in (run_dir / "train.log").read_text()
    assert best_of(run_dir.parent) == run_dir.name


def test_quiet_prints_only_the_result_line(tmp_path):
    result = run_cli("train", str(tiny_config(tmp_path)), "--quiet")
    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout == f"{next((tmp_path / 'runs/tiny').glob('2*'))}\n"


def test_without_a_terminal_one_timestamped_line_per_epoch(tmp_path):
    result = run_cli("train", str(tiny_config(tmp_path, train={"epochs": 3})))
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (INFO|WARNING) ", line) for line in lines), lines
    epoch_lines = [line for line in lines if " INFO epoch " in line]
    assert [re.search(r"epoch (\d)/3 ", line).group(1) for line in epoch_lines] == ["1", "2", "3"]
    assert result.stdout.count("\n") == 1


# ---------------------------------------------------------------------------------------------------------
# the cron script


def run_cron(tmp_path: Path, config: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TEXTCLF=f"{sys.executable} -m textclf_cli", TEXTCLF_DIR=str(tmp_path),
               TEXTCLF_LOG=str(tmp_path / "logs/cron.log"), PYTHONPATH=str(REPO), **extra_env)
    return subprocess.run(["bash", str(REPO / "scripts/cron_retrain.sh"), str(config)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_cron_script_twice_keeps_the_best_run(tmp_path):
    config = tiny_config(tmp_path, train={"epochs": 2, "num_threads": 1})
    first = run_cron(tmp_path, config)
    second = run_cron(tmp_path, config)

    assert (first.returncode, first.stdout, first.stderr) == (0, "", "")
    assert (second.returncode, second.stdout, second.stderr) == (0, "", "")
    experiment = tmp_path / "runs/tiny"
    run1, run2 = sorted(experiment.glob("2*"))
    assert best_of(experiment) == run1.name  # same seed, same metric: a tie never replaces the best
    assert (experiment / "latest").resolve() == run2
    assert read_status(run1)["promoted"] is True and read_status(run2)["promoted"] is False
    log = (tmp_path / "logs/cron.log").read_text()
    assert f"cron_retrain: ok {run1}" in log and f"cron_retrain: ok {run2}" in log
    assert "promoted best -> " in log and f"kept best -> {run1.name}" in log


def test_cron_script_keeps_a_bounded_number_of_runs(tmp_path):
    experiment = tmp_path / "runs/tiny"
    old = [fake_run(experiment, f"2020010{day}-000000", 0.5) for day in (1, 2, 3)]
    config = tiny_config(tmp_path, train={"epochs": 1, "num_threads": 1})
    result = run_cron(tmp_path, config, TEXTCLF_KEEP_RUNS="2")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    [new] = [run for run in experiment.glob("2*") if run not in old]
    assert sorted(run.name for run in experiment.glob("2*")) == [old[2].name, new.name]
    log = (tmp_path / "logs/cron.log").read_text()
    assert f"output.keep_runs 2: removed {old[0]}" in log and f"output.keep_runs 2: removed {old[1]}" in log


def test_cron_script_passes_the_exit_code_on(tmp_path):
    config = tiny_config(tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["train"]["lr"] = -1
    config.write_text(yaml.safe_dump(raw))
    result = run_cron(tmp_path, config)
    assert result.returncode == 2
    assert "failed with exit code 2" in result.stderr and "train.lr" in result.stderr
    assert not (tmp_path / "runs/tiny/best").exists()


def test_sigterm_during_prepare_exits_130_and_leaves_no_staging_folder(tmp_path):
    config = tiny_config(tmp_path, n_train=60_000, data={"chunk_size": 500})  # long enough to be caught midway
    prepared = tmp_path / "prepared"
    process = subprocess.Popen([sys.executable, "-m", "textclf_cli", "prepare", str(config)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(prepared.glob(".*")) and time.monotonic() < deadline:  # the hidden staging folder
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert stderr.strip().endswith("error: interrupted by SIGTERM") and "Traceback" not in stderr
    assert stdout == ""
    assert list(prepared.iterdir()) == []  # neither a staging folder nor a prepared key that looks complete


def kill_workers_until_exit(process: subprocess.Popen, timeout: float = 30) -> tuple[str, str, int]:
    """SIGKILL each tokenizer worker of `process` as soon as it appears (as the OOM killer would), until the
    process ends; (stdout, stderr, kills). multiprocessing.Pool replaced killed workers and waited forever for
    the chunks they held: this then runs into the timeout."""
    deadline, kills = time.monotonic() + timeout, 0
    while process.poll() is None and time.monotonic() < deadline:
        kills += kill_spawned_workers(process.pid)
        time.sleep(0.005)
    if process.poll() is None:
        process.kill()
        raise AssertionError(f"still running {timeout}s after its first tokenizer worker was killed")
    stdout, stderr = process.communicate()
    return stdout, stderr, kills


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes through /proc")
def test_prepare_fails_at_once_when_a_tokenizer_worker_is_killed(tmp_path):
    # the worker pool starts at 2,000 texts: 8,000 in chunks of 200 leave 30 chunks for it
    config = tiny_config(tmp_path, n_train=8000, n_test=10, data={"chunk_size": 200})
    process = subprocess.Popen([sys.executable, "-m", "textclf_cli", "prepare", str(config)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr, kills = kill_workers_until_exit(process)
    assert kills >= 1 and process.returncode == 1, stderr
    assert stderr.splitlines()[-1] == (
        "error: a tokenizer worker process was killed (most likely by the out-of-memory killer, or by a signal such "
        "as SIGKILL); nothing was written: free memory, or lower data.chunk_size, and run again"), stderr
    assert stdout == "" and "Traceback" not in stderr
    assert list((tmp_path / "prepared").iterdir()) == [], "no staging folder, no prepared data"
