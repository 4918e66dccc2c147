"""Single-device GPU features through the CLI: precision, torch.compile, the CUDA OOM hint, GPU-trained checkpoints.

The CUDA-only cases are marked `gpu` (skipped without one); the rest run the same code paths on the CPU.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import run_cli, tiny_config
from textclf_cli.data.loader import collate
from textclf_cli.data.prepared import EncodedSplit


def train(config: Path, *overrides: str) -> Path:
    args = [item for override in overrides for item in ("--set", override)]
    result = run_cli("train", str(config), "--quiet", *args)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def predicted_probabilities(target: Path, device: str = "cpu") -> list[float]:
    result = run_cli("predict", str(target), "great wonderful film", "awful", "--format", "jsonl", "--device", device)
    assert result.exit_code == 0, result.output
    return [sum(json.loads(line)["probabilities"].values()) for line in result.stdout.splitlines()]


def checkpoint_dtypes(run_dir: Path) -> set[torch.dtype]:
    state = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)["state_dict"]
    return {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}  # not counters


def test_bf16_autocast_on_cpu_trains_and_saves_fp32_weights(tmp_path):
    run_dir = train(tiny_config(tmp_path), "train.precision=bf16")
    assert json.loads((run_dir / "status.json").read_text())["precision"] == "bf16"
    assert "precision bf16" in (run_dir / "train.log").read_text()
    assert checkpoint_dtypes(run_dir) == {torch.float32}
    assert predicted_probabilities(run_dir) == pytest.approx([1.0, 1.0], abs=1e-5)


def test_fp16_without_cuda_is_a_config_error(tmp_path):
    result = run_cli("train", str(tiny_config(tmp_path)), "--set", "train.precision=fp16")
    assert result.exit_code == 2
    assert result.stderr == "error: train.precision: fp16 needs a CUDA device (device is cpu); use fp32 or bf16\n"


def test_cuda_out_of_memory_is_one_line_with_a_hint(tmp_path, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.7 GiB total)")

    monkeypatch.setattr("textclf_cli.training.loop.training_step", out_of_memory)
    result = run_cli("train", str(tiny_config(tmp_path)))
    assert result.exit_code == 4
    hint = ("CUDA out of memory on cpu during training epoch 1: lower train.batch_size (now 8) or "
            "vocab.max_length (now 50)")
    assert result.stderr.splitlines()[-1] == f"error: {hint}"
    assert "Traceback" not in result.stderr
    [status_file] = (tmp_path / "runs/tiny").glob("*/status.json")
    status = json.loads(status_file.read_text())
    assert (status["status"], status["message"]) == ("failed", hint)


@pytest.mark.slow
def test_compiled_training_saves_a_checkpoint_that_loads_uncompiled(tmp_path, monkeypatch):
    # The default inductor backend spends over a minute compiling C++ on a 2-core CPU; aot_eager runs the same
    # dynamo capture and the same wrapper (OptimizedModule, `_orig_mod.` names) in seconds.
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    graphs_before = counters["stats"]["unique_graphs"]
    run_dir = train(tiny_config(tmp_path, train={"epochs": 1}), "train.compile=true")
    assert counters["stats"]["unique_graphs"] > graphs_before  # the training forward really was captured
    assert "torch.compile" in (run_dir / "train.log").read_text()
    state = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)["state_dict"]
    assert not [name for name in state if name.startswith(("_orig_mod.", "module."))]
    assert predicted_probabilities(run_dir / "checkpoints/best.pt") == pytest.approx([1.0, 1.0], abs=1e-5)


def test_moving_a_batch_to_the_cpu_never_pins():
    # pin_memory() fails on a CPU-only torch build: the copy must only pin for CUDA targets
    split = EncodedSplit(np.arange(5, dtype=np.int32), np.array([0, 2, 5]), np.array([0, 1]))
    batch = collate(split, np.array([0, 1]), max_length=10).to(torch.device("cpu"), non_blocking=True)
    assert batch.token_ids.device.type == "cpu"


@pytest.mark.gpu
def test_batches_reach_the_gpu_through_pinned_memory():
    split = EncodedSplit(np.arange(5, dtype=np.int32), np.array([0, 2, 5]), np.array([0, 1]))
    host = collate(split, np.array([0, 1]), max_length=10)
    batch = host.to(torch.device("cuda"), non_blocking=True)
    torch.cuda.synchronize()
    assert batch.token_ids.device.type == "cuda"
    assert batch.token_ids.cpu().tolist() == host.token_ids.tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "auto"])
def test_a_gpu_trained_checkpoint_predicts_on_cpu(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    run_dir = train(tiny_config(tmp_path, device="cuda"), f"train.precision={precision}")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["device"].startswith("cuda")
    history = (run_dir / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("gpu_memory_mb")  # each epoch's peak, for sizing batches
    assert all(float(row.split(",")[column]) > 0 for row in history[1:])
    assert " MB GPU" in (run_dir / "train.log").read_text()
    assert checkpoint_dtypes(run_dir) == {torch.float32}
    assert predicted_probabilities(run_dir / "checkpoints/best.pt", device="cpu") == pytest.approx([1.0, 1.0], abs=1e-5)


@pytest.mark.gpu
def test_a_missing_gpu_index_is_a_config_error(tmp_path):
    result = run_cli("train", str(tiny_config(tmp_path)), "--set", f"device=cuda:{torch.cuda.device_count()}")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
