"""The tune stage: an Optuna study (TPE sampler, median pruner, SQLite storage in the study folder) whose trials
are ordinary runs inside runs/<experiment>/tune-<study-id>/."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from textclf_cli import files
from textclf_cli.atomic import write_text_atomic
from textclf_cli.config import Config, config_to_dict, validate_config
from textclf_cli.console import add_log_file, log, remove_handler
from textclf_cli.errors import ConfigError, Interrupted, RunError
from textclf_cli.training.interrupts import interrupt_on_signals
from textclf_cli.tuning import space as spaces
from textclf_cli.tuning.study import (
    HOST,
    enqueue_as_written,
    fail_orphaned_trials,
    keep_useful_trial_folders,
    open_storage,
    open_study,
    open_study_dir,
    ranked_trials,
    shown_url,
    study_space,
)
from textclf_cli.tuning.workers import start_workers, stop_workers, wait_for_workers

DEFAULT_TRIALS = 20


@dataclass
class TuneOptions:
    trials: int | None = None  # the study's total of finished (completed or pruned) trials, resumes included
    timeout: float | None = None  # seconds after which this command starts no new trial
    jobs: int = 1
    keep: int = 3
    resume: Path | None = None
    worker: int = 0  # > 0: a process started by --jobs; it runs trials and writes no final outputs
    config_path: Path | None = None  # what --jobs passes on to its worker processes
    storage: str | None = None  # a shared database's SQLAlchemy URL (--storage); None: study.db in the study folder
    study_name: str | None = None  # the study's name in that database (--study)
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
    check_storage_options(options)
    # a shared database is reached before any folder is made: a wrong URL leaves nothing behind
    storage = open_storage(options.storage, shared=True) if options.storage is not None else None
    study_dir = open_study_dir(config, options.resume, shared=storage is not None)
    log_handler = add_log_file(study_dir / files.TUNE_LOG)
    try:
        with interrupt_on_signals():  # between trials; during one, the epoch loop's guard ends it cleanly
            return _tune_in(study_dir, config, options, storage)
    finally:
        remove_handler(log_handler)


def check_storage_options(options: TuneOptions) -> None:
    if (options.storage is None) != (options.study_name is None):
        raise ConfigError("--storage and --study go together: a shared database (--storage URL) holds the study "
                          "named by --study NAME, which every worker names the same")


def _tune_in(study_dir: Path, config: Config, options: TuneOptions, storage: Any) -> TuneResult | None:
    study, created = open_study(study_dir, config, options.worker, storage, options.study_name)
    space = study_space(study, config)
    runner = TrialRunner(config, study_dir, space, spaces.value_kinds(config, space), options.keep)
    if options.storage is not None and not options.worker:
        log.info(f"{'created' if created else 'joined'} study {options.study_name} in {shown_url(options.storage)} "
                 f"({len(study.trials)} trial(s) so far); this worker's trials and reports go to {study_dir}")
    if options.resume is None:
        log.info(f"study {study_dir}: searching {', '.join(space)}; {config.train.monitor} "
                 f"({study.direction.name.lower()})")
    else:
        fail_orphaned_trials(study)
        log.info(f"continuing study {study_dir} ({len(study.trials)} trial(s) so far)")
    # the config as written runs once: in a shared study, the worker that created it enqueues it
    if not options.worker and (created or options.storage is None or options.resume is not None):
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
        # its run goes into the study folder, which keeps its own top trials (no output.keep_runs there); trials are
        # not exported (output.export_onnx): `textclf export` makes the chosen one servable; trials are compared on
        # validation, so none is refitted on it (train.refit)
        raw["output"] = {**raw.get("output", {}), "runs_dir": str(self.study_dir.parent), "keep_runs": None,
                         "export_onnx": False}
        raw["train"] = {**raw.get("train", {}), "refit": False}
        try:
            return validate_config(raw, source=f"trial {trial.number}")
        except ConfigError as exc:  # e.g. a sampled combination that the config refuses
            fail(trial, str(exc).splitlines()[0])

    def best_config(self, params: dict[str, Any]) -> Config:
        return validate_config(spaces.apply_params(self.base, params), source="best.yaml")

    def after_trial(self, study: Any, trial: Any) -> None:
        """After each trial of this process: log it, drop folders no longer useful, refresh trials.csv."""
        from textclf_cli.tuning import report as tune_report

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
    from textclf_cli.train import train
    from textclf_cli.training.distributed import SingleProcess

    return train(config, SingleProcess(resolve_device(config.device)), on_epoch=on_epoch)


def run_trials(study: Any, runner: TrialRunner, options: TuneOptions) -> None:
    from optuna.trial import TrialState

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if options.trials is not None and claimed_trials(study) >= options.trials:
        log.info(f"the study already has {finished} finished trial(s) of --trials {options.trials} (and any "
                 f"others running); nothing to run")
        return
    callbacks = [runner.after_trial]
    if options.trials is not None:
        callbacks.append(StopAtTrials(options.trials))
    study.optimize(runner.objective, n_trials=None if options.trials is None else options.trials - finished,
                   timeout=options.timeout, catch=(TrialFailed,), callbacks=callbacks)


def claimed_trials(study: Any) -> int:
    """Finished trials and those running in any process: what --trials counts before starting one more."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


@dataclass
class StopAtTrials:
    """After each trial: stop once the study's finished and running trials reach --trials. Counting those other
    processes (--jobs, the workers of a shared study) are still running keeps them from all starting the last
    one; if one of those fails, the processes still going run another."""

    trials: int

    def __call__(self, study: Any, trial: Any) -> None:
        if claimed_trials(study) >= self.trials:
            study.stop()


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
# the end of a study


def finish_study(study: Any, runner: TrialRunner) -> TuneResult:
    """best.yaml, trials.csv, tuning.png and the best trial, once every trial of this command has ended."""
    from textclf_cli.tuning import report as tune_report

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


