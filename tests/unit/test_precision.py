"""precision.py: fp32 | bf16 | fp16 | auto resolved per device, with the gradient scaler only for fp16."""

from __future__ import annotations

import pytest
import torch

from textclf_cli.errors import ConfigError
from textclf_cli.precision import inference_dtype, resolve_precision

CPU = torch.device("cpu")


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device whose bf16 support the test sets with fake_gpu(native=...)."""

    def make(native: bool) -> torch.device:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
        return torch.device("cuda", 0)

    return make


def test_fp32_has_no_autocast_and_no_scaler():
    amp = resolve_precision("fp32", CPU)
    assert (amp.name, amp.dtype, amp.enabled, amp.scaler.is_enabled()) == ("fp32", None, False, False)


def test_bf16_on_cpu_autocasts_without_scaler():
    amp = resolve_precision("bf16", CPU)
    assert (amp.name, amp.dtype, amp.enabled, amp.scaler.is_enabled()) == ("bf16", torch.bfloat16, True, False)


def test_auto_on_cpu_follows_amx(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision("auto", CPU).name == "fp32"
    assert inference_dtype("auto", CPU) is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_precision("auto", CPU).name == "bf16"
    assert inference_dtype("auto", CPU) is torch.bfloat16


def test_auto_on_an_avx512_bf16_cpu_is_bf16_for_inference_only(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert inference_dtype("auto", CPU) is torch.bfloat16
    assert inference_dtype("fp32", CPU) is None  # fp32 stays selectable
    assert resolve_precision("auto", CPU).name == "fp32"  # training: not measured on such CPUs, so fp32


def test_auto_without_torchs_cpu_probes_is_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert inference_dtype("auto", CPU) is None


def test_inference_fp16_on_cpu_names_the_option():
    with pytest.raises(ConfigError, match=r"^--precision: fp16 needs a CUDA device"):
        inference_dtype("fp16", CPU)


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ConfigError, match=r"^train.precision: fp16 needs a CUDA device \(device is cpu\); use fp32 or bf16$"):
        resolve_precision("fp16", CPU)


def test_auto_on_a_bf16_gpu_is_bf16(fake_gpu):
    amp = resolve_precision("auto", fake_gpu(native=True))
    assert (amp.name, amp.dtype) == ("bf16", torch.bfloat16)


def test_auto_on_an_older_gpu_is_fp32(fake_gpu):
    assert resolve_precision("auto", fake_gpu(native=False)).name == "fp32"


def test_bf16_on_a_gpu_without_it_is_refused(fake_gpu):
    with pytest.raises(ConfigError, match=r"^train.precision: this GPU \(Fake GPU\) has no bf16; use fp16 or fp32$"):
        resolve_precision("bf16", fake_gpu(native=False))


@pytest.mark.gpu
def test_fp16_on_gpu_scales_gradients():
    amp = resolve_precision("fp16", torch.device("cuda", 0))
    assert (amp.name, amp.dtype, amp.scaler.is_enabled()) == ("fp16", torch.float16, True)
