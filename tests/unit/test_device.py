"""device.py: auto/cpu/cuda/cuda:N resolution, clear errors, and the log description of the chosen device."""

from __future__ import annotations

import pytest
import torch

from textclf_cli.device import describe_device, resolve_device
from textclf_cli.errors import ConfigError


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend two CUDA devices are visible (after CUDA_VISIBLE_DEVICES), current device 0."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_is_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_without_gpu_is_cpu_or_mps(no_gpu):
    assert resolve_device("auto").type in ("cpu", "mps")


def test_auto_prefers_cuda(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("spec, index", [("cuda", 0), ("cuda:0", 0), ("cuda:1", 1)])
def test_cuda_index_is_respected(two_gpus, spec, index):
    assert resolve_device(spec) == torch.device("cuda", index)


def test_missing_cuda_index_names_the_visible_ones(two_gpus):
    with pytest.raises(ConfigError) as error:
        resolve_device("cuda:2")
    assert "device: 'cuda:2' does not exist; 2 CUDA device(s) are visible (cuda:0..cuda:1" in str(error.value)
    assert "CUDA_VISIBLE_DEVICES" in str(error.value)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_without_gpu_is_a_config_error(no_gpu, spec):
    with pytest.raises(ConfigError) as error:
        resolve_device(spec)
    assert str(error.value).startswith(f"device: {spec!r} was asked for but there is ")
    assert str(error.value).endswith("; use device: auto or cpu")


def test_describe_cpu_counts_threads():
    assert describe_device(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"


def test_describe_cuda_names_the_gpu_and_visible_devices(two_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert describe_device(torch.device("cuda", 1)) == "cuda:1 (Fake GPU 1, CUDA_VISIBLE_DEVICES=2,3)"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert describe_device(torch.device("cuda", 0)) == "cuda:0 (Fake GPU 0)"
