"""The tune stage: an Optuna study (TPE sampler, median pruner, SQLite storage in the study folder) whose trials
are ordinary runs inside runs/<experiment>/tune-<study-id>/."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from textclf_cli import files
from textclf_cli import search_space as spaces
from textclf_cli.atomic import write_text_atomic
from textclf_cli.config import Config, TuneRange, config_to_dict, flat_differences, load_config, validate_config
from textclf_cli.console import add_log_file, log, remove_handler
from textclf_cli.errors import ConfigError, Interrupted, RunError
from textclf_cli.runs import COMPLETED, RUNNING, experiment_lock, point_link, read_status, run_order

STUDY_NAME = "textclf"
DEFAULT_TRIALS = 20
STARTUP_TRIALS = 5  # random trials (after the config as written) before TPE models the space
PRUNE_FROM_EPOCH = 2  # no trial is judged on its first epoch alone
PRUNER_STARTUP_TRIALS = 3  # nor before three trials have finished to compare with
HOST = socket.gethostname()


@dataclass
class TuneOptions:
    trials: int | None = None  # the study's total of finished (completed or pruned) trials, resumes included
    timeout: float | None = None  # seconds after which this command starts no new trial
    jobs: int = 1
    keep: int = 3
    resume: Path | None = None
    worker: int = 0  # > 0: a process started by --jobs; it runs trials and writes no final outputs
    config_path: Path | None = None  # what --jobs passes on to its worker processes
    overrides: list[str] = field(default_factory=list)


@dataclass
class TuneResult:
    study_dir: Path
    monitor: str
    best_number: int
    best_value: float
    best_config: Path
    rows: list[dict[str, Any]]  # one per trial, as in trials.csv
    maximize: bool


class TrialFailed(Exception):
    """A trial that cannot train (impossible combination of values, diverged, out of memory): the study goes on."""


def parse_duration(text: str | None) -> float | None:
    """'90s', '30m', '2h', '1h30m' or plain seconds -> seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise ConfigError(f"--timeout {text!r}: expected a duration such as 90s, 30m, 2h or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--timeout {text!r}: must be longer than zero")
    return total


def tune(config: Config, options: TuneOptions) -> TuneResult | None:
    """Run or continue a study; the best trial, or None in a --jobs worker process."""
    from textclf_cli.device import resolve_device

    resolve_device(config.device)  # an unavailable device is one config error, not a failed trial each
    study_dir = open_study_dir(config, options.resume)
    log_handler = add_log_file(study_dir / files.TUNE_LOG)
    try:
        with TuneSignals():
            return _tune_in(study_dir, config, options)
    finally:
        remove_handler(log_handler)


def _tune_in(study_dir: Path, config: Config, options: TuneOptions) -> TuneResult | None:
    study = open_study(study_dir, config, options.worker)
    space = study_space(study, config)
    runner = TrialRunner(config, study_dir, space, spaces.value_kinds(config, space), options.keep)
    if options.resume is None:
        log.info(f"study {study_dir}: searching {', '.join(space)}; {config.train.monitor} "
                 f"({study.direction.name.lower()})")
    else:
        fail_orphaned_trials(study)
        log.info(f"continuing study {study_dir} ({len(study.trials)} trial(s) so far)")
    if not options.worker:
        enqueue_as_written(study, spaces.params_as_written(config, space))
    workers = start_workers(config, options, study_dir) if options.jobs > 1 else []
    try:
        run_trials(study, runner, options)
        wait_for_workers(workers)
    except (KeyboardInterrupt, Interrupted):
        stop_workers(workers)
        raise interrupted(study, runner, study_dir, options) from None
    except BaseException:
        stop_workers(workers)
        raise
    return None if options.worker else finish_study(study, runner)


def import_optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # textclf logs each trial itself, without tracebacks
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


# ---------------------------------------------------------------------------------------------------------
# the study folder and its storage


def open_study_dir(config: Config, resume: Path | None) -> Path:
    """A new runs/<experiment>/tune-<stamp> with the config in study.yaml, or the --resume folder checked."""
    if resume is not None:
        check_study_dir(config, resume)
        return resume
    experiment_dir = config.output.runs_dir / config.experiment
    experiment_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in range(1000):
        study_dir = experiment_dir / f"{files.STUDY_PREFIX}{stamp}{'' if suffix == 0 else f'-{suffix}'}"
        try:
            study_dir.mkdir()  # atomic: two tune commands never share a fresh study
        except FileExistsError:
            continue
        write_text_atomic(study_dir / files.STUDY_CONFIG, yaml.safe_dump(config_to_dict(config), sort_keys=False))
        return study_dir
    raise RunError(f"{experiment_dir}: could not find a free study folder name for {stamp}")


def check_study_dir(config: Config, study_dir: Path) -> None:
    if not (study_dir / files.STUDY_DB).is_file() or not (study_dir / files.STUDY_CONFIG).is_file():
        raise RunError(f"{study_dir}: not a textclf study folder (no {files.STUDY_DB} or {files.STUDY_CONFIG}); "
                       f"pass a folder made by textclf tune, such as runs/<experiment>/tune-<id>")
    stored = load_config(study_dir / files.STUDY_CONFIG)
    differences = flat_differences(config_to_dict(stored), config_to_dict(config))
    if differences:
        raise ConfigError(f"--resume {study_dir}: the config differs from the study's in {', '.join(differences)}; "
                          f"a study continues with the config it began with (start a new study to change it)")


def open_study(study_dir: Path, config: Config, worker: int) -> Any:
    optuna = import_optuna()
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{(study_dir / files.STUDY_DB).resolve()}",
        engine_kwargs={"connect_args": {"timeout": 60}},  # wait for another process's write instead of failing
        heartbeat_interval=60, grace_period=180,  # a trial whose process died elsewhere is marked failed later
    )
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, load_if_exists=True,
        direction="minimize" if config.train.monitor == "valid_loss" else "maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNE_FROM_EPOCH),
    )
    # seeded for repeatable studies, but never replaying the draws of an earlier process of the same study
    study.sampler = optuna.samplers.TPESampler(seed=config.seed + 1000 * worker + len(study.trials),
                                               n_startup_trials=STARTUP_TRIALS, multivariate=True,
                                               constant_liar=True)
    return study


def fail_orphaned_trials(study: Any, own: bool = False) -> None:
    """Mark failed the trials left running by a process of this machine that is gone (killed), or with
    own=True by this process (stopped outside its objective, e.g. while Optuna was recording it)."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != HOST or pid is None:
            continue
        if (own and pid == os.getpid()) or (not own and not pid_alive(pid)):
            study.tell(trial.number, state=TrialState.FAIL)
            if not own:
                log.warning(f"trial {trial.number} was left running by process {pid}, which is gone: marked failed")


def study_space(study: Any, config: Config) -> dict[str, TuneRange]:
    """The search space, stored in the study when it begins: a resumed study keeps it even if the defaults of
    a later textclf version differ (Optuna refuses a changed space)."""
    stored = study.user_attrs.get("space")
    if stored is not None:
        return {key: TuneRange(**spec) for key, spec in stored.items()}
    space = spaces.search_space(config)
    study.set_user_attr("space", {key: spec.model_dump() for key, spec in space.items()})
    return space


def enqueue_as_written(study: Any, params: dict[str, Any]) -> None:
    """The first trial runs the config's own values, so the study never ends below the untuned config; again
    after a resume if that trial was interrupted or killed (a real failure is not retried)."""
    from optuna.trial import TrialState

    def ran(trial: Any) -> bool:
        return trial.state != TrialState.FAIL or trial.user_attrs.get("message", "interrupted") != "interrupted"

    if not any(ran(trial) for trial in study.get_trials(deepcopy=False)
               if trial.system_attrs.get("fixed_params") == params):
        study.enqueue_trial(params)


def pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True  # someone else's process, or a pid we cannot judge: leave it alone
    return True


# ---------------------------------------------------------------------------------------------------------
# trials


@dataclass
class TrialRunner:
    """Turns an Optuna trial into a run: sample values, build its config, train with per-epoch pruning."""

    config: Config
    study_dir: Path
    space: dict[str, Any]
    kinds: dict[str, str]
    keep: int
    current: int | None = None  # number of the trial this process is running

    @property
    def base(self) -> dict[str, Any]:
        raw = config_to_dict(self.config)
        raw.pop("tune", None)
        return raw

    @property
    def monitor(self) -> str:
        return self.config.train.monitor

    def objective(self, trial: Any) -> float:
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        self.current = trial.number
        params = spaces.suggest(trial, self.space, self.kinds)
        log.info(f"trial {trial.number}: {format_params(params)}")
        trial_config = self.trial_config(trial, params)
        try:
            result = train_trial(trial_config, EpochReporter(trial, self.monitor))
        except Interrupted:
            trial.set_user_attr("message", "interrupted")
            raise
        except RunError as exc:  # diverged or out of memory: these values fail, others may not
            fail(trial, str(exc))
        trial.set_user_attr("run_dir", str(result.run_dir))
        return result.state.best_metric

    def trial_config(self, trial: Any, params: dict[str, Any]) -> Config:
        """The study's config with this trial's values; its run goes into the study folder."""
        raw = spaces.apply_params(self.base, params)
        raw["experiment"] = self.study_dir.name
        raw["output"] = {**raw.get("output", {}), "runs_dir": str(self.study_dir.parent)}
        try:
            return validate_config(raw, source=f"trial {trial.number}")
        except ConfigError as exc:  # e.g. a sampled combination that the config refuses
            fail(trial, str(exc).splitlines()[0])

    def best_config(self, params: dict[str, Any]) -> Config:
        return validate_config(spaces.apply_params(self.base, params), source="best.yaml")

    def after_trial(self, study: Any, trial: Any) -> None:
        """After each trial of this process: log it, drop folders no longer useful, refresh trials.csv."""
        from textclf_cli import tune_report

        self.current = None
        log_trial(study, trial, self.monitor)
        keep_useful_trial_folders(study, self.study_dir, self.keep)
        tune_report.write_trials_csv(self.study_dir / files.TRIALS_CSV, tune_report.trial_rows(study, self.space))


def fail(trial: Any, message: str) -> NoReturn:
    trial.set_user_attr("message", message)
    raise TrialFailed(message)


class EpochReporter:
    """The per-epoch hook of train(): report the monitored metric, let the pruner stop a trial that lags."""

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial, self.monitor, self.recorded = trial, monitor, False

    def __call__(self, run_dir: Path, state: Any) -> None:
        import optuna

        if not self.recorded:  # known from the first epoch on, so other processes keep the folder
            self.trial.set_user_attr("run_dir", str(run_dir))
            self.recorded = True
        value = state.history[-1][self.monitor]
        self.trial.report(value, state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {state.epoch}: {self.monitor} {value:.4f} is behind "
                                     f"the earlier trials at that epoch")


def train_trial(config: Config, on_epoch: EpochReporter) -> Any:
    from textclf_cli.device import resolve_device
    from textclf_cli.distributed import SingleProcess
    from textclf_cli.train import train

    return train(config, SingleProcess(resolve_device(config.device)), on_epoch=on_epoch)


def run_trials(study: Any, runner: TrialRunner, options: TuneOptions) -> None:
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if options.trials is not None and finished >= options.trials:
        log.info(f"the study already has {finished} finished trial(s) of --trials {options.trials}; nothing to run")
        return
    callbacks = [runner.after_trial]
    if options.trials is not None:  # counts every process's trials, so --jobs and shared studies stop together
        callbacks.append(MaxTrialsCallback(options.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    study.optimize(runner.objective, n_trials=None if options.trials is None else options.trials - finished,
                   timeout=options.timeout, catch=(TrialFailed,), callbacks=callbacks)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in params.items())


def log_trial(study: Any, trial: Any, monitor: str) -> None:
    from optuna.trial import TrialState

    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    if trial.state == TrialState.COMPLETE:
        best = study.best_trial
        log.info(f"trial {trial.number} completed: {monitor} {trial.value:.4f} in {seconds:.1f}s "
                 f"(best {best.value:.4f}, trial {best.number})")
    elif trial.state == TrialState.PRUNED:
        epochs = max(trial.intermediate_values, default=0)
        log.info(f"trial {trial.number} pruned after epoch {epochs} ({seconds:.1f}s)")
    else:
        log.warning(f"trial {trial.number} failed: {trial.user_attrs.get('message', 'see its train.log')}")


# ---------------------------------------------------------------------------------------------------------
# trial folders: keep the best few and the running ones


def ranked_trials(study: Any) -> list[Any]:
    """Completed trials, best first (ties: the earlier trial)."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(completed, key=lambda trial: (sign * trial.value, trial.number))


def keep_useful_trial_folders(study: Any, study_dir: Path, keep: int) -> None:
    """Delete the run folders of pruned, failed and no-longer-top trials; keep the best `keep` and running ones."""
    from optuna.trial import TrialState

    ranked = ranked_trials(study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    useful = {Path(trial.user_attrs["run_dir"]).name for trial in ranked[:keep] + running
              if "run_dir" in trial.user_attrs}
    for folder in sorted(study_dir.iterdir()):
        if folder.name in useful or folder.is_symlink() or not folder.is_dir():
            continue
        status = read_status(folder)
        if status is None:  # not a run folder, or one being created this instant
            continue
        pid = status.get("pid")
        if status.get("status") == RUNNING and pid != os.getpid() and pid_alive(pid):
            continue  # another process's trial before its first epoch
        shutil.rmtree(folder, ignore_errors=True)
    best_dir = Path(ranked[0].user_attrs.get("run_dir", "")) if ranked else None
    relink(study_dir, best_dir if best_dir is not None and best_dir.is_dir() else None)


def relink(study_dir: Path, best_dir: Path | None) -> None:
    """`best` -> the best trial's folder; `latest` -> the newest completed folder still there."""
    with experiment_lock(study_dir):
        completed = [folder for folder in study_dir.iterdir() if folder.is_dir() and not folder.is_symlink()
                     and (read_status(folder) or {}).get("status") == COMPLETED]
        for name, target in ((files.LATEST_LINK, max(completed, key=lambda f: run_order(f.name), default=None)),
                             (files.BEST_LINK, best_dir)):
            link = study_dir / name
            if target is not None:
                point_link(study_dir, name, target)
            elif link.is_symlink() and not link.exists():
                link.unlink()


# ---------------------------------------------------------------------------------------------------------
# the end of a study


def finish_study(study: Any, runner: TrialRunner) -> TuneResult:
    """best.yaml, trials.csv, tuning.png and the best trial, once every trial of this command has ended."""
    from textclf_cli import tune_report

    study_dir = runner.study_dir
    keep_useful_trial_folders(study, study_dir, runner.keep)
    rows = tune_report.trial_rows(study, runner.space)
    tune_report.write_trials_csv(study_dir / files.TRIALS_CSV, rows)
    ranked = ranked_trials(study)
    if not ranked:
        states = ", ".join(f"{row['state']} {row['number']}" for row in rows) or "none"
        raise RunError(f"{study_dir}: no trial completed (trials: {states}); see {files.TRIALS_CSV} and "
                       f"{files.TUNE_LOG} there")
    tune_report.plot_tuning(study_dir / files.TUNING_PNG, rows, runner.monitor, maximize=is_maximized(study))
    best = ranked[0]
    best_path = write_best_config(study_dir, runner, best)
    return TuneResult(study_dir, runner.monitor, best.number, best.value, best_path, rows, is_maximized(study))


def is_maximized(study: Any) -> bool:
    from optuna.study import StudyDirection

    return study.direction == StudyDirection.MAXIMIZE


def write_best_config(study_dir: Path, runner: TrialRunner, best: Any) -> Path:
    params = spaces.decode_params(runner.space, best.params)
    config = runner.best_config(params)
    header = (f"# best config of textclf tune study {study_dir}: trial {best.number}, {runner.monitor} "
              f"{best.value:.4f}\n# tuned: {format_params(params)}\n")
    path = study_dir / files.BEST_CONFIG
    write_text_atomic(path, header + yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return path


def interrupted(study: Any, runner: TrialRunner, study_dir: Path, options: TuneOptions) -> Interrupted:
    """After Ctrl-C/SIGTERM: the running trial is marked failed, outputs so far are written; exit 130."""
    where = f"during trial {runner.current}, which is marked failed" if runner.current is not None else "between trials"
    fail_orphaned_trials(study, own=True)
    if not options.worker:
        try:
            finish_study(study, runner)
        except RunError:
            pass  # nothing completed yet: there is no best.yaml to write
    finished = len(ranked_trials(study))
    return Interrupted(f"tune interrupted {where}; {finished} trial(s) completed; the study is intact: continue "
                       f"with textclf tune CONFIG --resume {study_dir}")


# ---------------------------------------------------------------------------------------------------------
# signals and --jobs worker processes


class TuneSignals:
    """SIGTERM stops tune like Ctrl-C between trials; a second signal exits at once. During training the
    loop's own guard takes both signals and ends the trial after the current batch."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> TuneSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received:
            os._exit(130)
        self.received = signal.Signals(signum).name
        log.warning(f"{self.received} received: stopping (send it again to quit at once)")
        raise KeyboardInterrupt(self.received)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def start_workers(config: Config, options: TuneOptions, study_dir: Path) -> list[subprocess.Popen]:
    """jobs - 1 more `tune --resume` processes on the same study; this process runs trials too."""
    command = [sys.executable, "-m", "textclf_cli", "tune", str(options.config_path), "--resume", str(study_dir),
               "--quiet", "--keep", str(options.keep)]
    for override in options.overrides:
        command += ["--set", override]
    if options.trials is not None:
        command += ["--trials", str(options.trials)]
    if options.timeout is not None:
        command += ["--timeout", f"{max(1.0, options.timeout):.0f}"]
    gpus, threads = share_devices(config, options.jobs)
    if threads:
        import torch

        torch.set_num_threads(threads)
    workers = []
    for index in range(1, options.jobs):
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        # its own session: a terminal's Ctrl-C reaches this process alone, which stops the workers in order
        workers.append(subprocess.Popen(command + ["--worker", str(index)], stdout=subprocess.DEVNULL, env=env,
                                        start_new_session=True))
    log.info(f"started {len(workers)} worker process(es) on the study (pids {', '.join(str(w.pid) for w in workers)})")
    return workers


def share_devices(config: Config, jobs: int) -> tuple[list[str], int | None]:
    """(GPUs to deal round-robin to the workers when several are visible, CPU threads per process)."""
    import torch

    if config.device in ("auto", "cuda") and torch.cuda.device_count() > 1:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        return (visible.split(",") if visible else [str(index) for index in range(torch.cuda.device_count())]), None
    on_cpu = config.device == "cpu" or not torch.cuda.is_available()
    threads = max(1, (os.cpu_count() or 1) // jobs) if on_cpu and not config.train.num_threads else None
    return [], threads


def wait_for_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        code = worker.wait()
        if code != 0:
            log.warning(f"worker process {worker.pid} exited with code {code} (see {files.TUNE_LOG})")


def stop_workers(workers: list[subprocess.Popen]) -> None:
    """SIGTERM: each worker ends its trial after the current batch and marks it failed."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=120)
        except subprocess.TimeoutExpired:
            worker.kill()
