"""What one `textclf serve` asks of its service, without importing FastAPI (the stage checks the extra first)."""

from __future__ import annotations

from dataclasses import dataclass

SETTINGS_ENV = "TEXTCLF_SERVE_SETTINGS"  # --workers N: how each worker process learns the target and settings


@dataclass(frozen=True)
class ServeSettings:
    """What one `textclf serve` asks of the service (the host, port and workers are uvicorn's)."""

    target: str  # run folder, experiment folder (follows best, else latest), checkpoint, or an ONNX export
    max_batch: int = 256  # texts in one model call
    max_wait_ms: float = 5.0  # how long the oldest request waits for others to join its model call
    reload_every_s: float = 30.0  # 0: only POST /v1/reload checks the target
    min_confidence: float | None = None
    max_texts: int = 1000  # per request
    max_chars: int = 100_000  # per text
    batch_size: int = 128  # texts per forward pass inside one model call
    api_key: str | None = None
