"""Mixed precision: which autocast dtype to use and the gradient scaler fp16 needs."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from textclf_cli.errors import ConfigError


@dataclass
class AmpSettings:
    name: str  # the resolved precision: fp32, bf16 or fp16
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler

    @property
    def enabled(self) -> bool:
        return self.dtype is not None


def resolve_precision(requested: str, device: torch.device, key: str = "train.precision",
                      training: bool = True) -> AmpSettings:
    """auto means bf16 where the hardware computes it natively (recent GPUs, CPUs with AMX; for inference also
    CPUs with AVX512-BF16), else fp32."""
    name = requested
    if requested == "auto":
        name = "bf16" if _native_bf16(device, training) else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}: fp16 needs a CUDA device (device is {device}); use fp32 or bf16")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{key}: this GPU ({torch.cuda.get_device_name(device)}) has no bf16; "
                          f"use fp16 or fp32")
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    return AmpSettings(name, dtype, scaler)


def inference_dtype(requested: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for evaluate/predict (None: plain fp32)."""
    return resolve_precision(requested, device, key="--precision", training=False).dtype


def _native_bf16(device: torch.device, training: bool = True) -> bool:
    # Emulated bf16 (pre-Ampere GPUs, CPUs without AMX or AVX512-BF16) is slower than fp32, so auto only takes
    # bf16 where the hardware has it. On an AMX CPU oneDNN's bf16 convolutions speed up a TextCNN step;
    # AVX512-BF16 alone (AMD Zen 4/5) speeds up TextCNN inference at the same test accuracy (bench/RESULTS.md).
    # Training there is not measured yet, so it keeps fp32.
    if device.type == "cpu":
        return _cpu_has("_is_amx_tile_supported") or (not training and _cpu_has("_is_avx512_bf16_supported"))
    if device.type != "cuda":
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 has no such argument and already answers for the hardware
        return torch.cuda.is_bf16_supported()


def _cpu_has(probe: str) -> bool:
    check = getattr(torch.cpu, probe, None)  # private torch probes: absent in some versions, so default to no
    return bool(check and check())
