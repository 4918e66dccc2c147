"""Checkpoints load anywhere: wrapper prefixes (torch.compile, DDP) stripped, tensors saved on the CPU."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from textclf_cli.data.text import TokenizerSettings
from textclf_cli.models.build import build_model
from textclf_cli.runs.checkpoint import (
    CheckpointMeta,
    load_model,
    new_checkpoint,
    save_checkpoint,
    strip_wrapper_prefixes,
    unwrapped_state_dict,
)
from textclf_cli.serving.scoring import predict_with

KWARGS = {"embedding_dim": 8, "num_filters": 4, "filter_sizes": [2, 3], "dropout": 0.5, "pooling": "max"}
VOCAB = ["<pad>", "<unk>", "great", "awful", "film"]


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", len(VOCAB), 2, KWARGS)


def info() -> CheckpointMeta:
    return CheckpointMeta(model_type="cnn", model_kwargs=KWARGS, vocab=VOCAB, labels=["neg", "pos"],
                          tokenizer=TokenizerSettings(), max_length=20, truncate="head", config={},
                          versions={}, prepared_fingerprint=None, task="multiclass", label_separator="|")


@pytest.fixture
def single_process_group():
    """A one-process gloo group, enough to build a real DistributedDataParallel wrapper on the CPU."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["conv.weight", "_orig_mod.conv.weight", "module.conv.weight",
                                  "_orig_mod.module.conv.weight", "module._orig_mod.conv.weight"])
def test_wrapper_prefixes_are_stripped_in_any_order(name):
    assert strip_wrapper_prefixes(name) == "conv.weight"


def test_compiled_model_saves_plain_names():
    model = tiny_model()
    compiled = torch.compile(model)  # wrapping is lazy: nothing is compiled until the first call
    assert all(name.startswith("_orig_mod.") for name in compiled.state_dict())
    state = unwrapped_state_dict(compiled)
    assert list(state) == list(model.state_dict())
    fresh = build_model("cnn", len(VOCAB), 2, KWARGS)
    fresh.load_state_dict(state)  # strict: every key matches


def test_compiled_ddp_model_saves_plain_names(single_process_group):
    from torch.nn.parallel import DistributedDataParallel

    model = tiny_model()
    wrapped = torch.compile(DistributedDataParallel(model))  # the order train.py uses
    assert all(name.startswith("_orig_mod.module.") for name in wrapped.state_dict())
    assert list(unwrapped_state_dict(wrapped)) == list(model.state_dict())


def test_checkpoint_tensors_are_on_the_cpu_and_predict(tmp_path):
    path = tmp_path / "moved.pt"
    save_checkpoint(path, new_checkpoint(torch.compile(tiny_model()), info(), epoch=1))
    raw = torch.load(path, weights_only=True)  # no map_location: every tensor was stored as a CPU tensor
    assert {tensor.device.type for tensor in raw["state_dict"].values()} == {"cpu"}
    loaded = load_model(path, torch.device("cpu"))
    predictions = predict_with(loaded, ["great film", "awful", ""])
    assert predictions.probabilities.shape == (3, 2)
    assert predictions.probabilities.sum(axis=1) == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)


@pytest.mark.gpu
def test_checkpoint_of_a_gpu_model_predicts_on_cpu(tmp_path):
    model = tiny_model()
    expected = predict_with_model(model, tmp_path / "cpu.pt")
    model.to("cuda")
    assert predict_with_model(model, tmp_path / "gpu.pt") == pytest.approx(expected, abs=1e-5)


def predict_with_model(model: torch.nn.Module, path) -> list[float]:
    save_checkpoint(path, new_checkpoint(model, info(), epoch=1))
    loaded = load_model(path, torch.device("cpu"))
    return predict_with(loaded, ["great film", "awful"]).probabilities.ravel().tolist()
