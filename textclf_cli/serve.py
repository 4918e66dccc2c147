"""The serve stage: TARGET -> a warmed-up model behind an HTTP service (FastAPI on uvicorn) that follows the
target's promotions, until SIGTERM or SIGINT lets the requests in flight finish."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

from textclf_cli.console import log
from textclf_cli.errors import ConfigError
from textclf_cli.serving.live import ServedModel, load_served
from textclf_cli.serving.settings import SETTINGS_ENV, ServeSettings
from textclf_cli.serving.targets import follow

SERVE_PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "prometheus_client": "prometheus-client"}
SERVE_HINT = "pip install 'textclf-cli[serve]' (from a checkout: pip install -e '.[serve]')"
ALL_INTERFACES = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServeOptions:
    """What one `textclf serve` asks for beyond the service's own settings: where it listens, how it stops."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    grace_s: float = 30.0  # SIGTERM: how long requests in flight may take to finish
    api_key_file: Path | None = None


def check_serve_dependencies() -> None:
    missing = [package for module, package in SERVE_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"serve needs {', '.join(missing)}, which is not installed: {SERVE_HINT}")


def duration_seconds(text: str, option: str) -> float:
    """'30s', '5m', '1h', '1h30m', plain seconds or 0 -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or not match or not any(match.groups()):
        raise ConfigError(f"serve: {option} {text!r}: expected a duration such as 30s, 5m or 1h (or 0)")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def read_api_key(path: Path | None) -> str | None:
    """The key in --api-key-file (its first line), or None without the option."""
    if path is None:
        return None
    try:
        key = path.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"serve: --api-key-file {path}: cannot read it ({exc.__class__.__name__})") from None
    if not key or not key[0].strip():
        raise ConfigError(f"serve: --api-key-file {path} is empty; write the key on its first line")
    return key[0].strip()


def serve(settings: ServeSettings, options: ServeOptions) -> None:
    """Load the target's model and check it answers, then serve it until SIGTERM or SIGINT."""
    check_serve_dependencies()
    from textclf_cli.serving.server import create_app  # FastAPI: the serve extra, checked just above

    first = load_first(Path(settings.target), settings.min_confidence)
    if options.host in ALL_INTERFACES:
        log.warning(f"serve: listening on all interfaces ({options.host or '*'}:{options.port}): anyone who reaches "
                    f"this machine can ask it{'' if settings.api_key else '; consider --api-key-file'}")
    if options.workers > 1:  # each worker process loads its own model from the same settings
        os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
        run_uvicorn("textclf_cli.serving.server:app_from_environment", options)
    else:
        run_uvicorn(create_app(settings, first), options)


def load_first(target: Path, min_confidence: float | None) -> ServedModel:
    """The model serve starts with, loaded and warmed up before any port is bound: a bad TARGET is one line."""
    model = load_served(follow(target), min_confidence)
    log.info(f"serving {model.run_id} from {model.model_file.path} with the {model.opened.kind} scorer "
             f"(loaded and warmed up in {model.load_seconds:.2f}s)")
    return model


def run_uvicorn(app: object, options: ServeOptions) -> None:
    import uvicorn

    stopped_by: list[int] = []
    # uvicorn handles SIGTERM/SIGINT itself (stop accepting, finish the requests in flight), then raises the
    # signal again to the handler it found: this one, so that a stop by signal exits 0 rather than by the signal
    previous = {sig: signal.signal(sig, lambda number, frame: stopped_by.append(number))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.run(app, host=options.host, port=options.port, workers=options.workers, factory=isinstance(app, str),
                    timeout_graceful_shutdown=max(1, round(options.grace_s)), access_log=False, log_level="info",
                    server_header=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped_by:
        log.info(f"serve: stopped by {signal.Signals(stopped_by[0]).name}; the requests in flight finished")
