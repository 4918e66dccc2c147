"""--jobs: worker processes that run trials of the same study beside the first one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from textclf_cli import files
from textclf_cli.config import Config
from textclf_cli.console import log

STORAGE_ENV = "TEXTCLF_TUNE_STORAGE"  # what tune's --storage defaults to


def start_workers(config: Config, options: Any, study_dir: Path) -> list[subprocess.Popen]:
    """jobs - 1 more `tune --resume` processes on the same study; this process runs trials too."""
    command = [sys.executable, "-m", "textclf_cli", "tune", str(options.config_path), "--resume", str(study_dir),
               "--quiet", "--keep", str(options.keep)]
    for override in options.overrides:
        command += ["--set", override]
    if options.trials is not None:
        command += ["--trials", str(options.trials)]
    if options.timeout is not None:
        command += ["--timeout", f"{max(1.0, options.timeout):.0f}"]
    if options.study_name is not None:  # the URL goes by environment: a password stays out of `ps`
        command += ["--study", options.study_name]
    gpus, threads = share_devices(config, options.jobs)
    if threads:
        import torch

        torch.set_num_threads(threads)
    workers = []
    for index in range(1, options.jobs):
        env = dict(os.environ)
        if options.storage is not None:
            env[STORAGE_ENV] = options.storage
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
