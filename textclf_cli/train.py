"""The train stage: prepared data -> model -> fit -> run folder with checkpoints, history, log and status."""

from __future__ import annotations

import platform
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

import textclf_cli
from textclf_cli import files
from textclf_cli.atomic import write_text_atomic
from textclf_cli.config import (
    Config,
    check_resumable,
    config_to_dict,
    load_config,
    with_absolute_paths,
    with_stored_auto,
)
from textclf_cli.console import add_log_file, log, remove_handler
from textclf_cli.data.checks import log_data_summary
from textclf_cli.data.prepared import PreparedData
from textclf_cli.device import describe_device
from textclf_cli.errors import ConfigError, Interrupted, RunError, TextclfError
from textclf_cli.export import check_export_dependencies, export_for_predict
from textclf_cli.precision import resolve_precision
from textclf_cli.prepare import prepare
from textclf_cli.runs.checkpoint import (
    CheckpointMeta,
    new_checkpoint,
    save_checkpoint,
)
from textclf_cli.runs.folders import create_run_dir, lock_run, update_latest
from textclf_cli.runs.folders import promote_if_better as promote
from textclf_cli.runs.leftovers import remove_data_leftovers, tidy_experiment
from textclf_cli.runs.status import COMPLETED, FAILED, INTERRUPTED, RUNNING, now_iso, update_status
from textclf_cli.training.auto import resolve_auto
from textclf_cli.training.build import build_trainer
from textclf_cli.training.calibrate import calibrate_best
from textclf_cli.training.distributed import Processes
from textclf_cli.training.interrupts import SignalInterrupt, interrupt_on_signals
from textclf_cli.training.loop import fit
from textclf_cli.training.refit import refit, restore_selected
from textclf_cli.training.resume import last_checkpoint
from textclf_cli.training.state import NonFiniteLoss, StopRequested, Trainer, TrainState
from textclf_cli.training.tensorboard_log import TensorBoardLog, require_tensorboard

PREPARED_FINGERPRINT_COMMENT = "prepared data fingerprint:"
EpochHook = Callable[[Path, TrainState], None]


@dataclass
class TrainResult:
    run_dir: Path
    state: TrainState
    refitted: dict[str, Any] | None = None  # train.refit: what status.json records of the refit


def train(config: Config, processes: Processes, resume: Path | None = None, promote_if_better: bool = False,
          on_epoch: EpochHook | None = None) -> TrainResult:
    """Train one model as configured on `processes` (distributed.distributed_context makes them); the stage
    function the `train` command calls. on_epoch(run_dir, state) runs after each epoch's files are saved (the
    tuner reports to its pruner there)."""
    with interrupt_on_signals():  # until the epoch loop takes over: a signal while preparing also exits 130
        return _train(config, processes, resume, promote_if_better, on_epoch)


def _train(config: Config, processes: Processes, resume: Path | None, promote_if_better: bool,
           on_epoch: EpochHook | None) -> TrainResult:
    if config.output.tensorboard:
        require_tensorboard()
    if config.output.export_onnx is True:  # asked for by name: refuse now, not after training
        check_export_dependencies("onnx", wanted_by="output.export_onnx: true")
    device = processes.device
    amp = resolve_precision(config.train.precision, device)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    with ExitStack() as held:  # the run's lock, held while training: a second --resume or a prune is refused
        resumed = None
        if resume:  # refuse a bad --resume before preparing data; keep the sizes the run resolved from `auto`
            resumed, stored = resume_run_dir(config, resume)
            if processes.is_main:  # locked before any work: a prune or output.keep_runs cannot delete it meanwhile
                held.callback(lock_run(resumed).release)
            config = with_stored_auto(config, stored)
        if processes.is_main:
            remove_leftovers(config)
        data = prepare_once(config, processes)
        config = resolve_auto(config, data, device)
        if "valid" not in data.splits:
            raise ConfigError("data: no validation split; set data.valid or data.valid_fraction")
        run_dir = resumed or new_run_dir(config, processes)
        if processes.is_main and resumed is None:
            held.callback(lock_run(run_dir).release)
        log_handler = add_log_file(run_dir / files.TRAIN_LOG) if processes.is_main else None
        curves = TensorBoardLog(run_dir / files.TENSORBOARD_DIR if processes.is_main and config.output.tensorboard
                                else None)
        try:
            if processes.is_main and config.check.on_train:
                log_data_summary(config)  # textclf check's cheap findings, one line (into train.log)
            return _train_in(run_dir, config, data, amp, resume is not None, promote_if_better, processes, curves,
                             on_epoch)
        finally:
            curves.close()
            if log_handler is not None:
                remove_handler(log_handler)


def remove_leftovers(config: Config) -> None:
    """What killed processes left of this experiment and its data (temp files, staging folders, downloads)."""
    download_dir = config.data.train.parent if config.data.url else None
    removed = tidy_experiment(config.output.runs_dir / config.experiment)
    removed += remove_data_leftovers(config.data.prepared_dir, download_dir)
    for path in removed:
        log.info(f"removed {path} (left behind by a killed textclf process)")


def prepare_once(config: Config, processes: Processes) -> PreparedData:
    """Rank 0 prepares (or finds) the data; the other ranks wait, then read the same files (or fail with it)."""
    data = processes.main_first(lambda: prepare(config))
    return data if processes.is_main else prepare(config)


def new_run_dir(config: Config, processes: Processes) -> Path:
    """A fresh run folder, made by rank 0 alone under torchrun and shared with the other ranks."""
    return processes.main_first(lambda: create_run_dir(config.output.runs_dir, config.experiment),
                                share_result=True)


def _train_in(run_dir: Path, config: Config, data: PreparedData, amp: Any, resuming: bool, promote_if_better: bool,
              processes: Processes, curves: TensorBoardLog, on_epoch: EpochHook | None = None) -> TrainResult:
    trainer, state, meta = _set_up_recorded(run_dir, config, data, amp, resuming, processes)

    def on_epoch_end(state: TrainState, improved: bool) -> None:
        save_epoch(run_dir, trainer, state, meta, improved)
        curves.epoch(state.history[-1])
        if on_epoch is not None:
            on_epoch(run_dir, state)

    refitted, refitting = None, False
    try:
        with trainer.stop:
            fit(trainer, state, on_epoch_end)
            if config.train.refit:
                refitting = True
                refitted = refit(run_dir, config, data, amp, processes, state, trainer.stop)
    except StopRequested as stop:
        raise _interrupted(run_dir, state, processes, str(stop), refitting) from None
    except (TextclfError, Exception) as exc:
        if processes.is_main:
            update_status(run_dir, FAILED, finished_at=now_iso(), message=first_line(exc))
        if isinstance(exc, NonFiniteLoss):  # raised by every rank at the same batch, so all can meet here
            processes.barrier()
        raise
    if not processes.is_main:
        return TrainResult(run_dir, state)
    with trainer.stop:  # the run is trained: a signal now waits until it is recorded as completed
        curves.hparams(config_to_dict(config), state.history, state.best_epoch)
        return finish_run(run_dir, config, data, state, promote_if_better, refitted)


def _set_up_recorded(run_dir: Path, config: Config, data: PreparedData, amp: Any, resuming: bool,
                     processes: Processes) -> tuple[Trainer, TrainState, CheckpointMeta]:
    """_set_up, with a failure or a signal before the first epoch recorded in status.json (a new run only: a
    resume that fails leaves the run's folder as it was)."""
    record = processes.is_main and not resuming
    try:
        return _set_up(run_dir, config, data, amp, resuming, processes)
    except SignalInterrupt as stop:  # before the first epoch: nothing to keep, the folder only says what happened
        if resuming:
            raise Interrupted(f"interrupted by {stop.signal_name} before training resumed; {run_dir} is unchanged") from None
        if record:
            update_status(run_dir, INTERRUPTED, finished_at=now_iso(),
                          message=f"stopped by {stop.signal_name} before training began")
        raise Interrupted(f"interrupted by {stop.signal_name} before training began; {run_dir} is marked "
                          f"interrupted; start a new run") from None
    except Exception as exc:  # e.g. an unreadable embeddings file: the run must not look alive or complete
        if record:
            update_status(run_dir, FAILED, finished_at=now_iso(), message=first_line(exc))
        raise


def _interrupted(run_dir: Path, state: TrainState, processes: Processes, signal_name: str,
                 refitting: bool) -> Interrupted:
    """A signal during the epochs or the refit: status.json says so, and the error says what to resume.

    last.pt already holds the end of the last completed epoch (or epoch 0), written atomically. The partial epoch
    is dropped rather than saved: a resumed run then replays it with the same batch order, RNG state and lr
    schedule as an uninterrupted run, instead of counting its optimizer steps twice. An interrupted refit starts
    again from its first epoch on resume."""
    resume_hint = f"resume with: textclf train CONFIG --resume {run_dir}"
    where = "the refit on train + valid" if refitting else f"epoch {state.epoch + 1}"
    if processes.is_main:
        update_status(run_dir, INTERRUPTED, finished_at=now_iso(), epochs_completed=state.epoch,
                      message=f"stopped by {signal_name} during {where}; {resume_hint}")
    processes.barrier()  # under torchrun the first rank to exit gets the others killed: let rank 0 finish writing
    holds = (f"{files.BEST_CHECKPOINT} holds the model chosen on validation (epoch {state.best_epoch})"
             if refitting else f"{files.LAST_CHECKPOINT} holds epoch {state.epoch}")
    return Interrupted(f"interrupted by {signal_name} during {where}; {run_dir / files.CHECKPOINTS_DIR}/{holds}; "
                       f"{resume_hint}")


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _set_up(run_dir: Path, config: Config, data: PreparedData, amp: Any, resuming: bool,
            processes: Processes) -> tuple[Trainer, TrainState, CheckpointMeta]:
    """status.json and config.yaml, the model and optimizer, and last.pt as epoch 0. A resumed run's folder is
    touched only once its last.pt has loaded: a resume that fails leaves the run as it was."""
    is_main, device = processes.is_main, processes.device
    if resuming:
        trainer, state, meta = build_trainer(config, data, amp, run_dir, processes)
        if is_main:
            restore_selected(run_dir)
    if is_main:
        # a resumed run keeps its started_at and drops what the interruption wrote
        when = {"resumed_at": now_iso(), "finished_at": None, "message": None, "refit": None} if resuming else {"started_at": now_iso()}
        update_status(run_dir, RUNNING, experiment=config.experiment, run_id=run_dir.name, **when, device=str(device),
                     precision=amp.name, world_size=processes.world_size)
        write_text_atomic(run_dir / files.CONFIG_FILE, resolved_config_yaml(config, data.meta.get("fingerprint")))
        compiled = ", torch.compile" if config.train.compile else ""
        ranks = f", {processes.world_size} processes" if processes.world_size > 1 else ""
        log.info(f"run folder {run_dir} (device {describe_device(device)}, precision {amp.name}{compiled}{ranks})")
    if not resuming:
        trainer, state, meta = build_trainer(config, data, amp, None, processes)
    if is_main and not resuming:  # epoch 0: a run killed during its first epoch can be resumed too
        save_checkpoint(run_dir / files.CHECKPOINTS_DIR / files.LAST_CHECKPOINT, last_checkpoint(trainer, state, meta))
    return trainer, state, meta


def resolved_config_yaml(config: Config, prepared_fingerprint: str | None = None) -> str:
    """The config with absolute paths (so evaluate works from any folder), under a header naming the versions
    and the prepared data the run was trained from."""
    versions = (f"# textclf {textclf_cli.__version__}, torch {torch.__version__}, "
                f"python {platform.python_version()}, written {now_iso()}\n")
    absolute = with_absolute_paths(config)
    if prepared_fingerprint:
        versions += (f"# {PREPARED_FINGERPRINT_COMMENT} {prepared_fingerprint} "
                     f"({absolute.data.prepared_dir / prepared_fingerprint})\n")
    return versions + yaml.safe_dump(config_to_dict(absolute), sort_keys=False)


def save_epoch(run_dir: Path, trainer: Trainer, state: TrainState, meta: CheckpointMeta, improved: bool) -> None:
    if not trainer.processes.is_main:  # rank 0 writes the run's files
        return
    checkpoints = run_dir / files.CHECKPOINTS_DIR
    if improved:
        save_checkpoint(checkpoints / files.BEST_CHECKPOINT,
                        new_checkpoint(trainer.plain_model, meta, epoch=state.epoch, metrics=state.history[-1],
                                       thresholds=state.thresholds))
    save_checkpoint(checkpoints / files.LAST_CHECKPOINT, last_checkpoint(trainer, state, meta))
    history = pd.DataFrame(state.history)
    write_text_atomic(run_dir / files.HISTORY_FILE, history.to_csv(index=False))
    update_status(run_dir, RUNNING, epochs_completed=state.epoch, best_epoch=state.best_epoch,
                 best_metric=state.best_metric, monitor=trainer.settings.monitor)


def resume_run_dir(config: Config, run_dir: Path) -> tuple[Path, Config]:
    """The run folder to continue and its stored config; refuses when the config differs in anything but
    train.epochs (and the other resumable keys)."""
    if not (run_dir / files.CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a textclf run folder (no {files.CONFIG_FILE}); pass the folder of the run to resume")
    experiment_dir = config.output.runs_dir / config.experiment
    if run_dir.resolve().parent != experiment_dir.resolve():
        raise RunError(f"--resume {run_dir}: refused, the run is not in this config's experiment folder "
                       f"{experiment_dir} (output.runs_dir/experiment), where textclf keeps its latest/best links "
                       f"and output.keep_runs; move the run there, or set output.runs_dir and experiment to match")
    if not (run_dir / files.CHECKPOINTS_DIR / files.LAST_CHECKPOINT).is_file():
        raise RunError(f"{run_dir}: has no {files.CHECKPOINTS_DIR}/{files.LAST_CHECKPOINT} (it stopped before "
                       f"training began); start a new run instead")
    stored = load_config(run_dir / files.CONFIG_FILE)
    check_resumable(stored, config, run_dir)
    return run_dir, stored


def finish_run(run_dir: Path, config: Config, data: PreparedData, state: TrainState, promote_if_better: bool,
               refitted: dict[str, Any] | None = None) -> TrainResult:
    from textclf_cli.report import plot_training_curves

    plot_training_curves(pd.DataFrame(state.history), run_dir / files.CURVES_PNG)
    calibrate_best(run_dir, config, data)  # before the export, whose graph divides by the temperature
    export_for_predict(run_dir, config.output.export_onnx)  # before `completed`: predict may take it from then on
    summary = {"finished_at": now_iso(), "epochs_completed": state.epoch, "best_epoch": state.best_epoch,
               "best_metric": state.best_metric, "monitor": config.train.monitor, "refit": refitted}
    update_status(run_dir, COMPLETED, **summary)
    update_latest(run_dir)
    if promote_if_better:
        promoted, promotion = promote(run_dir, config.train.monitor, state.best_metric)
        update_status(run_dir, COMPLETED, promoted=promoted, promotion=promotion)
        log.info(promotion)  # here, not in cli.py, so that train.log records the decision too
    if config.output.keep_runs:
        keep_newest_runs(run_dir.parent, config.output.keep_runs)
    return TrainResult(run_dir, state, refitted)


def keep_newest_runs(experiment_dir: Path, keep: int) -> None:
    """output.keep_runs: prune after a successful train, so a nightly job keeps a bounded disk."""
    from textclf_cli.runs.prune import prune_runs

    for old_run in prune_runs(experiment_dir, keep):
        log.info(f"output.keep_runs {keep}: removed {old_run}")

