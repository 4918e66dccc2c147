"""`textclf runs`: listing with honest status (stale after SIGKILL), pruning that spares best/latest/live runs and
every folder textclf did not make, output.keep_runs, --resume only inside the experiment folder and locked
before any work, signals during setup (before the first epoch), --output that would destroy the checkpoint."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli, tiny_config
from tests.e2e.test_unattended import REPO, start_train, wait_for_epochs
from textclf_cli.atomic import symlink_atomic
from textclf_cli.runs.folders import lock_run
from textclf_cli.runs.prune import prune_runs
from textclf_cli.runs.status import read_status

LISTING_KEYS = ["experiment", "run_id", "status", "epochs", "monitor", "best_metric", "test_accuracy",
                "test_f1_macro", "started_at", "duration_s", "tags", "path"]


def fake_run(experiment_dir: Path, run_id: str, status: str, **fields) -> Path:
    run = experiment_dir / run_id
    (run / "checkpoints").mkdir(parents=True)
    record = {"status": status, "experiment": experiment_dir.name, "run_id": run_id, "epochs_completed": 2,
              "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:01:30+00:00",
              "updated_at": "2026-01-01T00:01:30+00:00", "best_metric": 0.5, "monitor": "valid_f1_macro", **fields}
    (run / "status.json").write_text(json.dumps(record), encoding="utf-8")
    return run


def listing(path: Path, *args: str) -> list[dict]:
    result = run_cli("runs", str(path), "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------------------
# listing


def test_listing_after_sigkill_shows_stale_and_marks_status_json(tmp_path):
    config = tiny_config(tmp_path, n_train=200, train={"epochs": 1000, "num_threads": 1})
    assert run_cli("prepare", str(config)).exit_code == 0
    process = start_train(config)
    run_dir = wait_for_epochs(process, tmp_path / "runs", 1)
    [live] = listing(tmp_path / "runs")
    assert (live["run_id"], live["status"], live["experiment"]) == (run_dir.name, "running", "tiny")
    process.kill()
    process.communicate(timeout=30)
    assert read_status(run_dir)["status"] == "running"  # what SIGKILL leaves behind

    [record] = listing(tmp_path / "runs" / "tiny")
    assert list(record) == LISTING_KEYS
    assert (record["status"], record["path"], record["tags"]) == ("stale", str(run_dir), [])
    assert record["epochs"] >= 1 and record["duration_s"] >= 0
    status = read_status(run_dir)  # the listing touched the experiment: status.json says so now too
    assert status["status"] == "stale" and f"--resume {run_dir}" in status["message"]


def test_listing_newest_first_with_metrics_tags_and_formats(tmp_path):
    experiment = tmp_path / "runs" / "exp"
    old = fake_run(experiment, "20260101-000000", "completed", best_metric=0.9)
    fake_run(experiment, "20260102-000000", "failed", message="boom")
    new = fake_run(experiment, "20260103-000000", "completed", best_metric=0.7)
    (new / "evaluation" / "test").mkdir(parents=True)
    (new / "evaluation/test/metrics.json").write_text(json.dumps({"accuracy": 0.75, "f1_macro": 0.74}))
    symlink_atomic(experiment / "best", old.name)
    symlink_atomic(experiment / "latest", new.name)
    fake_run(tmp_path / "runs" / "other", "20260102-120000", "interrupted")

    records = listing(tmp_path / "runs")
    assert [(r["experiment"], r["run_id"], r["status"]) for r in records] == [
        ("exp", "20260103-000000", "completed"), ("other", "20260102-120000", "interrupted"),
        ("exp", "20260102-000000", "failed"), ("exp", "20260101-000000", "completed")]
    assert (records[0]["tags"], records[0]["test_accuracy"], records[0]["test_f1_macro"]) == (["latest"], 0.75, 0.74)
    assert (records[-1]["tags"], records[-1]["best_metric"], records[-1]["duration_s"]) == (["best"], 0.9, 90.0)

    rows = list(csv.DictReader(io.StringIO(run_cli("runs", str(experiment), "--format", "csv").stdout)))
    assert [row["run_id"] for row in rows] == ["20260103-000000", "20260102-000000", "20260101-000000"]
    assert rows[0]["tags"] == "latest" and rows[0]["test_accuracy"] == "0.75" and rows[1]["test_accuracy"] == ""

    table = run_cli("runs", str(experiment))
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if "2026010" in line]
    assert [row.split("│")[2].strip() for row in rows] == ["20260103-000000", "20260102-000000", "20260101-000000"]
    cells = [cell.strip() for cell in rows[0].split("│")[1:-1]]
    assert cells == ["exp", "20260103-000000", "completed", "2", "valid_f1_macro 0.7000", "0.7500", "0.7400",
                     "1m30s", "latest", str(new)]  # the run folder is the last column


def test_listing_a_missing_folder_is_exit_4(tmp_path):
    result = run_cli("runs", str(tmp_path / "nowhere"))
    assert result.exit_code == 4
    assert f"{tmp_path / 'nowhere'}: no such runs or experiment folder" in result.stderr


# ---------------------------------------------------------------------------------------------------------
# pruning


def test_prune_keeps_newest_best_latest_and_live_runs(tmp_path):
    experiment = tmp_path / "runs" / "exp"
    best = fake_run(experiment, "20260101-000000", "completed")
    stale_old = fake_run(experiment, "20260102-000000", "running")  # its process is gone: stale
    failed = fake_run(experiment, "20260103-000000", "failed")
    live = fake_run(experiment, "20260104-000000", "running")
    interrupted = fake_run(experiment, "20260105-000000", "interrupted")
    completed = fake_run(experiment, "20260106-000000", "completed")
    latest = fake_run(experiment, "20260107-000000", "completed")
    newest = fake_run(experiment, "20260108-000000", "completed")
    symlink_atomic(experiment / "best", best.name)
    symlink_atomic(experiment / "latest", latest.name)
    lock = lock_run(live)  # as a training process holds it
    try:
        dry = run_cli("runs", "prune", str(experiment), "--keep", "1", "--dry-run")
        assert dry.exit_code == 0, dry.output
        doomed = [completed, interrupted, failed, stale_old]
        assert dry.stdout.splitlines() == [f"would remove {run}" for run in doomed]
        assert all(run.is_dir() for run in doomed)

        result = run_cli("runs", "prune", str(experiment), "--keep", "1")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines() == [f"removed {run}" for run in doomed]
        assert "removed 4 run(s)" in result.stderr
    finally:
        lock.release()
    left = sorted(path.name for path in experiment.iterdir())
    assert left == sorted([".lock", "best", "latest", best.name, live.name, latest.name, newest.name])
    assert (experiment / "best").resolve() == best.resolve() and (experiment / "latest").resolve() == latest.resolve()


def test_prune_refuses_a_folder_that_is_not_an_experiment(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("runs", "prune", str(tmp_path / "empty"), "--keep", "2")
    assert result.exit_code == 4 and "not an experiment folder" in result.stderr
    result = run_cli("runs", "prune", str(tmp_path / "empty"), "--keep", "0")
    assert result.exit_code == 2


@pytest.fixture(scope="module")
def kept(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """Two old completed runs, one stale, then a real train with output.keep_runs: 2."""
    root = tmp_path_factory.mktemp("keep")
    experiment = root / "runs" / "tiny"
    old = [fake_run(experiment, f"2020010{day}-000000", status) for day, status in
           ((1, "completed"), (2, "running"), (3, "completed"))]
    config = tiny_config(root, output={"runs_dir": str(root / "runs"), "keep_runs": 2})
    result = run_cli("train", str(config))
    assert result.exit_code == 0, result.output
    return root, Path(result.stdout.strip()), old


def test_keep_runs_prunes_after_a_successful_train(kept):
    root, run_dir, old = kept
    runs = sorted(path.name for path in (root / "runs/tiny").iterdir() if not path.name.startswith("."))
    assert runs == sorted([old[2].name, run_dir.name, "latest"])
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert f"output.keep_runs 2: removed {old[1]}" in log and f"output.keep_runs 2: removed {old[0]}" in log


# ---------------------------------------------------------------------------------------------------------
# signals before the first epoch


def start_with_slow_step(config: Path, step: str) -> subprocess.Popen:
    """`textclf train CONFIG` in a child whose `step` (a function of textclf_cli.train) first sleeps 30 s, as a
    big embeddings file or a slow data set would: a signal then lands before the first epoch."""
    script = (
        "import sys, time\n"
        "import textclf_cli.train as train\n"
        f"slow = train.{step}\n"
        f"train.{step} = lambda *a, **k: (print('in {step}', file=sys.stderr, flush=True), time.sleep(30), "
        "slow(*a, **k))[-1]\n"
        "from textclf_cli.cli import app\n"
        f"app(['train', {str(config)!r}])\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if text in line:
            return
        assert line or process.poll() is None, process.communicate()
    process.kill()
    pytest.fail(f"never saw {text!r}")


def test_sigterm_while_building_the_model_marks_the_run_interrupted(tmp_path):
    sig = signal.SIGTERM
    config = tiny_config(tmp_path)
    assert run_cli("prepare", str(config)).exit_code == 0
    process = start_with_slow_step(config, "build_trainer")
    wait_for_line(process, "in build_trainer")
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr
    [run_dir] = [path for path in (tmp_path / "runs/tiny").iterdir() if path.is_dir()]
    status = read_status(run_dir)
    assert status["status"] == "interrupted"
    assert status["message"] == f"stopped by {sig.name} before training began"
    assert f"error: interrupted by {sig.name} before training began" in stderr
    [record] = listing(tmp_path / "runs")
    assert record["status"] == "interrupted"


def test_sigint_while_preparing_exits_130_without_a_run_folder(tmp_path):
    process = start_with_slow_step(tiny_config(tmp_path), "prepare")
    wait_for_line(process, "in prepare")
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "error: interrupted by SIGINT" in stderr
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------
# only what textclf made: other tools' folders, --resume outside the runs folder, a prune during a resume


def other_tools_folders(root: Path) -> list[Path]:
    """The issue's reproduction: folders with a config.yaml or a checkpoints/ of their own, two hours old."""
    (root / "alpha").mkdir(parents=True)
    (root / "alpha/config.yaml").write_text("x\n")
    (root / "beta/checkpoints").mkdir(parents=True)
    (root / "beta/checkpoints/m.ckpt").write_text("precious\n")
    (root / "gamma").mkdir()
    (root / "gamma/config.yaml").write_text("x\n")
    made = [root / "alpha/config.yaml", root / "beta/checkpoints/m.ckpt", root / "gamma/config.yaml"]
    old = time.time() - 7200
    for path in [*made, root / "alpha", root / "beta", root / "beta/checkpoints", root / "gamma"]:
        os.utime(path, (old, old))
    return made


def test_prune_refuses_a_folder_of_other_tools_and_deletes_nothing(tmp_path):
    made = other_tools_folders(tmp_path / "p")
    result = run_cli("runs", "prune", str(tmp_path / "p"), "--keep", "1")
    assert result.exit_code == 4, result.output
    assert result.stderr == (f"error: {tmp_path / 'p'}: not an experiment folder (no run folder made by textclf in "
                             f"it, and no latest/best link); pass runs/<experiment>\n")
    assert result.stdout == "" and all(path.is_file() for path in made)
    assert (tmp_path / "p/beta/checkpoints/m.ckpt").read_text() == "precious\n"


def test_other_tools_folders_in_an_experiment_are_listed_and_never_pruned(tmp_path):
    experiment = tmp_path / "runs" / "exp"
    made = other_tools_folders(experiment)
    old_run = fake_run(experiment, "20200101-000000", "completed")
    fake_run(experiment, "20200102-000000", "completed")
    records = listing(tmp_path / "runs")
    assert [(r["run_id"], r["status"]) for r in records] == [
        ("gamma", "not a textclf run"), ("beta", "not a textclf run"), ("alpha", "not a textclf run"),
        ("20200102-000000", "completed"), ("20200101-000000", "completed")]
    result = run_cli("runs", "prune", str(experiment), "--keep", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed {old_run}\n"
    assert all(path.is_file() for path in made)


def test_a_damaged_status_json_is_listed_and_warned_about_once(tmp_path):
    experiment = tmp_path / "runs" / "exp"
    damaged = experiment / "20200101-000000"
    (damaged / "checkpoints").mkdir(parents=True)
    (damaged / "status.json").write_text("[]")
    fake_run(experiment, "20200102-000000", "completed")
    result = run_cli("runs", str(tmp_path / "runs"), "--format", "json")
    assert result.exit_code == 0, result.output
    assert [(r["run_id"], r["status"]) for r in json.loads(result.stdout)] == [
        ("20200102-000000", "completed"), ("20200101-000000", "damaged")]
    assert result.stderr.count("damaged (not a JSON object)") == 1, result.stderr
    pruned = run_cli("runs", "prune", str(experiment), "--keep", "1")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout == "" and damaged.is_dir()


@pytest.fixture
def trained(tmp_path) -> tuple[Path, Path]:
    """(config, run folder) of a 1-epoch tiny run."""
    config = tiny_config(tmp_path, train={"epochs": 1, "num_threads": 1})
    result = run_cli("train", str(config), "--quiet")
    assert result.exit_code == 0, result.output
    return config, Path(result.stdout.strip())


def test_resume_outside_the_experiment_folder_is_refused(trained, tmp_path):
    config, run_dir = trained
    elsewhere = tmp_path / "p" / "tiny" / run_dir.name
    shutil.copytree(run_dir, elsewhere)
    other_tools_folders(tmp_path / "p")
    result = run_cli("train", str(config), "--resume", str(elsewhere), "--set", "train.epochs=2")
    assert result.exit_code == 4, result.output
    assert result.stderr.splitlines()[-1] == (
        f"error: --resume {elsewhere}: refused, the run is not in this config's experiment folder "
        f"{tmp_path / 'runs' / 'tiny'} (output.runs_dir/experiment), where textclf keeps its latest/best links and "
        f"output.keep_runs; move the run there, or set output.runs_dir and experiment to match")
    assert sorted(path.name for path in (tmp_path / "p" / "tiny").iterdir()) == [run_dir.name]  # no latest, no .lock
    assert read_status(elsewhere)["epochs_completed"] == 1


def test_a_prune_while_a_resume_prepares_cannot_delete_the_run(trained, tmp_path, monkeypatch):
    config, run_dir = trained
    experiment = run_dir.parent
    newer = fake_run(experiment, "29990101-000000", "completed")
    symlink_atomic(experiment / "latest", newer.name)  # the resumed run is neither newest nor latest: prunable
    import textclf_cli.train as train_stage

    prepare = train_stage.prepare_once
    pruned = []

    def prepare_while_cron_prunes(*args):  # `textclf runs prune --keep 1` from cron, while the data is prepared
        pruned.extend(prune_runs(experiment, keep=1))
        return prepare(*args)

    monkeypatch.setattr(train_stage, "prepare_once", prepare_while_cron_prunes)
    result = run_cli("train", str(config), "--resume", str(run_dir), "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert pruned == [] and read_status(run_dir)["epochs_completed"] == 2


def test_export_and_predict_refuse_to_write_over_the_checkpoint(trained):
    _, run_dir = trained
    best = run_dir / "checkpoints" / "best.pt"
    before = best.read_bytes()
    exported = run_cli("export", str(run_dir), "--format", "torchscript", "--output", str(best))
    assert exported.exit_code == 2, exported.output
    assert exported.stderr.splitlines()[-1] == (f"error: export: --output {best} is the model being read ({best}); "
                                                f"writing there would destroy it: name another file")
    into = run_dir / "checkpoints" / "predictions.jsonl"
    predicted = run_cli("predict", str(run_dir), "great film", "--format", "jsonl", "--output", str(into))
    assert predicted.exit_code == 2, predicted.output
    assert predicted.stderr.splitlines()[-1] == (f"error: predict: --output {into} is inside the run's "
                                                 f"{run_dir / 'checkpoints'}, which holds its checkpoints; name a "
                                                 f"file elsewhere")
    assert best.read_bytes() == before and not into.exists()


def test_a_new_run_removes_what_killed_runs_left(trained, tmp_path):
    config, run_dir = trained
    orphan = run_dir / "checkpoints" / ".last.pt.k2j4h6g8.tmp"  # a SIGKILL mid-save
    orphan.write_bytes(b"half")
    staging = tmp_path / "prepared" / ".0123abcd.x1y2z3w4"
    staging.mkdir()
    old = time.time() - 7200
    os.utime(staging, (old, old))
    result = run_cli("train", str(config))
    assert result.exit_code == 0, result.output
    assert not orphan.exists() and not staging.exists()
    assert f"removed {orphan} (left behind by a killed textclf process)" in result.stderr
