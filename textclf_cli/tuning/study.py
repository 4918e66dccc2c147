"""A tune study on disk: its folder (runs/<experiment>/tune-<id>/), the SQLite storage, the search space it
began with, and which trial folders are still worth keeping."""

from __future__ import annotations

import os
import socket
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

from textclf_cli import files
from textclf_cli.atomic import write_text_atomic
from textclf_cli.config import Config, TuneRange, config_to_dict, flat_differences, load_config, with_absolute_paths
from textclf_cli.console import log
from textclf_cli.errors import ConfigError, RunError
from textclf_cli.runs.folders import experiment_lock, honest_status, id_stamp, point_link, run_folders
from textclf_cli.runs.prune import delete_run, remove_leftovers
from textclf_cli.runs.status import COMPLETED, RUNNING, read_status
from textclf_cli.tuning import space as spaces

STUDY_NAME = "textclf"
STARTUP_TRIALS = 5  # random trials (after the config as written) before TPE models the space
PRUNE_FROM_EPOCH = 2  # no trial is judged on its first epoch alone
PRUNER_STARTUP_TRIALS = 3  # nor before three trials have finished to compare with
STORAGE_ATTEMPTS = 5  # tries to open a shared database while other workers create its tables
HOST = socket.gethostname()


def import_optuna() -> Any:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # textclf logs each trial itself, without tracebacks
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def open_study_dir(config: Config, resume: Path | None, shared: bool = False) -> Path:
    """A new runs/<experiment>/tune-<stamp> with the config in study.yaml, or the --resume folder checked (whose
    trials are in a shared database when `shared`, else in its study.db)."""
    if resume is not None:
        check_study_dir(config, resume, shared)
        return resume
    experiment_dir = config.output.runs_dir / config.experiment
    experiment_dir.mkdir(parents=True, exist_ok=True)
    stamp = id_stamp()
    for suffix in range(1000):
        study_dir = experiment_dir / f"{files.STUDY_PREFIX}{stamp}{'' if suffix == 0 else f'-{suffix}'}"
        try:
            study_dir.mkdir()  # atomic: two tune commands never share a fresh study
        except FileExistsError:
            continue
        # paths made absolute, as in a run's config.yaml: the study can be resumed from another folder
        study_config = config_to_dict(with_absolute_paths(config))
        write_text_atomic(study_dir / files.STUDY_CONFIG, yaml.safe_dump(study_config, sort_keys=False))
        return study_dir
    raise RunError(f"{experiment_dir}: could not find a free study folder name for {stamp}")


def check_study_dir(config: Config, study_dir: Path, shared: bool = False) -> None:
    if (not shared and not (study_dir / files.STUDY_DB).is_file()) or not (study_dir / files.STUDY_CONFIG).is_file():
        raise RunError(f"{study_dir}: not a textclf study folder (no {files.STUDY_DB} or {files.STUDY_CONFIG}); "
                       f"pass a folder made by textclf tune, such as runs/<experiment>/tune-<id>")
    stored = load_config(study_dir / files.STUDY_CONFIG)
    differences = flat_differences(config_to_dict(with_absolute_paths(stored)), config_to_dict(with_absolute_paths(config)))
    if differences:
        raise ConfigError(f"--resume {study_dir}: the config differs from the study's in {', '.join(differences)}; "
                          f"a study continues with the config it began with (start a new study to change it)")


def open_study(study_dir: Path, config: Config, worker: int, shared_storage: Any = None,
               study_name: str | None = None) -> tuple[Any, bool]:
    """(the study, whether this process created it): the study in the folder's SQLite database, or `study_name`
    in a shared database (open_storage) that the tune commands of several machines create or join."""
    optuna = import_optuna()
    shared = shared_storage is not None
    storage = shared_storage if shared else open_storage(sqlite_url(study_dir / files.STUDY_DB), shared=False)
    direction = "minimize" if config.train.monitor == "valid_loss" else "maximize"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNE_FROM_EPOCH)
    name = study_name or STUDY_NAME
    try:  # not load_if_exists: that tells the creator apart, and workers that start at once all get the study
        study, created = optuna.create_study(storage=storage, study_name=name, direction=direction, pruner=pruner), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(storage=storage, study_name=name, pruner=pruner), False
    if study.direction.name.lower() != direction:
        raise ConfigError(f"--study {name}: the study was created to {study.direction.name.lower()} its metric, but "
                          f"train.monitor {config.train.monitor} is to {direction}; use another study name")
    # seeded for repeatable studies, but never replaying the draws of an earlier process of the same study; the
    # workers of a shared study start at once with one config, so each machine and process draws its own values
    offset = zlib.crc32(f"{HOST}:{os.getpid()}".encode()) if shared else 0
    study.sampler = optuna.samplers.TPESampler(seed=(config.seed + 1000 * worker + len(study.trials) + offset) % 2**32,
                                               n_startup_trials=STARTUP_TRIALS, multivariate=True,
                                               constant_liar=True)
    return study, created


def open_storage(url: str, shared: bool) -> Any:
    """Optuna's RDBStorage on `url`; a bad URL, a missing driver or an unreachable server is one clear error that
    shows the URL without its password."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f"--storage: not a database URL ({first_line(exc)}); expected e.g. "
                          f"postgresql://user:password@host:5432/database") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        for _ in range(STORAGE_ATTEMPTS - 1):
            try:
                return rdb_storage(url, parsed.get_backend_name())
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # workers that start at once race to create Optuna's tables (a duplicate table or version row)
                if not shared:
                    raise
                time.sleep(0.5)
        return rdb_storage(url, parsed.get_backend_name())
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        raise ConfigError(f"--storage {shown}: no database driver for {parsed.drivername} "
                          f"({first_line(exc.__cause__ or exc)}); for PostgreSQL: pip install 'psycopg[binary]' "
                          f"(textclf's postgres extra)") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise RunError(f"--storage {shown}: cannot use the database: {first_line(getattr(exc, 'orig', None) or exc)}"
                       ) from None


def rdb_storage(url: str, backend: str) -> Any:
    # SQLite: wait for another process's write instead of failing; PostgreSQL: give up on an unreachable server soon
    connect_args = {"sqlite": {"timeout": 60}, "postgresql": {"connect_timeout": 10}}.get(backend, {})
    return import_optuna().storages.RDBStorage(
        url, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True},
        heartbeat_interval=60, grace_period=180,  # a trial whose process died elsewhere is marked failed later
    )


def shown_url(url: str) -> str:
    """The URL as logs may show it: its password, if any, as ***."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def sqlite_url(path: Path) -> str:
    """sqlite:///<absolute path>, quoted by SQLAlchemy: a `?`, `#` or `%` in the runs path stays part of it
    (a raw f-string would start a query string there and put the database elsewhere)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path.resolve())).render_as_string(hide_password=False)


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
    remove_leftovers(study_dir)
    for folder in run_folders(study_dir):
        if folder.name in useful or honest_status(folder, read_status(folder)) == RUNNING:  # incl. being created
            continue
        delete_run(folder)  # refuses a folder a process is training in (another process's new trial)
    best_dir = Path(ranked[0].user_attrs.get("run_dir", "")) if ranked else None
    relink(study_dir, best_dir if best_dir is not None and best_dir.is_dir() else None)


def relink(study_dir: Path, best_dir: Path | None) -> None:
    """`best` -> the best trial's folder; `latest` -> the newest completed folder still there."""
    with experiment_lock(study_dir):
        completed = [folder for folder in run_folders(study_dir) if (read_status(folder) or {}).get("status") == COMPLETED]
        for name, target in ((files.LATEST_LINK, completed[0] if completed else None), (files.BEST_LINK, best_dir)):
            link = study_dir / name
            if target is not None:
                point_link(study_dir, name, target)
            elif link.is_symlink() and not link.exists():
                link.unlink()
