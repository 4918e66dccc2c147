"""Turn the config's device string into a torch.device, with a clear error when it is not there."""

from __future__ import annotations

import os

import torch

from textclf_cli.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not _mps_available():
            raise ConfigError("device: 'mps' was asked for but this machine/torch build has no MPS; use device: auto or cpu")
        return torch.device("mps")
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA GPU"
        raise ConfigError(f"device: {spec!r} was asked for but there is {build}; use device: auto or cpu")
    index = int(spec.split(":", 1)[1]) if ":" in spec else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"device: {spec!r} does not exist; {count} CUDA device(s) are visible (cuda:0..cuda:{count - 1}, "
            f"after CUDA_VISIBLE_DEVICES)"
        )
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """What a log line should say about the chosen device, e.g. `cuda:0 (NVIDIA H100, CUDA_VISIBLE_DEVICES=2,3)`."""
    if device.type != "cuda":
        return f"{device} ({torch.get_num_threads()} threads)" if device.type == "cpu" else str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    suffix = f", CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
    return f"cuda:{index} ({torch.cuda.get_device_name(index)}{suffix})"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())
