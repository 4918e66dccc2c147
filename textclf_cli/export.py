"""`textclf export`: a checkpoint -> ONNX or TorchScript model plus a sidecar JSON, for serving without textclf.

The exported graph takes what every textclf model takes, `forward(token_ids, lengths)`, and returns
probabilities; the sidecar says how to turn a text into those ids (tokenizer, vocabulary, truncation) and the
outputs into labels. Nothing here knows a model family, so a new family or branch exports as long as its
forward is traceable.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import textclf_cli
from textclf_cli import files
from textclf_cli.atomic import write_atomic, write_json_atomic
from textclf_cli.console import log
from textclf_cli.data.text import WORD_OR_PUNCT
from textclf_cli.data.vocab import PAD_ID, UNK_ID
from textclf_cli.errors import ConfigError, RunError
from textclf_cli.models.build import min_width
from textclf_cli.runs.checkpoint import LoadedModel, load_model
from textclf_cli.runs.status import now_iso
from textclf_cli.serving.sidecar import (
    EXTRAS_HINT,
    SIDECAR_FORMAT,
    SIDECAR_VERSION,
    checkpoint_stat,
    missing_onnx_packages,
    sidecar_path,
)

ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-4
# Zeros the exported graph appends to every batch. Models ignore positions >= lengths, so extra padding never
# changes a result; it makes any text, even one token, at least as wide as the widest CNN filter or n-gram, so
# shape-dependent branches in forward take the same path for every input and the traced graph holds for all.
EXTRA_PADDING = 8
PARITY_LENGTHS = (1, 2, 3, 7, 31, 64)  # the self-check after export: shorter and longer than every filter


@dataclass
class ExportResult:
    model_file: Path
    sidecar: Path
    max_difference: float | None  # largest |p_exported - p_textclf| of the self-check; None when not run


class ProbabilityModel(nn.Module):
    """(token_ids (B, T) int64, lengths (B,) int64) -> probabilities (B, C) float32, as textclf predicts them."""

    def __init__(self, model: nn.Module, padding: int, multilabel: bool) -> None:
        super().__init__()
        self.model = model
        self.padding = padding
        self.multilabel = multilabel

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        token_ids = nn.functional.pad(token_ids, (0, self.padding), value=PAD_ID)  # (B, T) -> (B, T + padding)
        logits = self.model(token_ids, lengths).float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)


class DenseEmbeddingBag(nn.Module):
    """nn.EmbeddingBag over a (B, L) input, written with ops every ONNX runtime has (the ONNX exporter
    refuses EmbeddingBag with padding_idx). Same weights, same sums; padding_idx entries are left out."""

    def __init__(self, bag: nn.EmbeddingBag) -> None:
        super().__init__()
        if bag.mode not in ("mean", "sum", "max"):
            raise RunError(f"export: EmbeddingBag mode {bag.mode!r} cannot be exported")
        self.weight = bag.weight
        self.mode = bag.mode
        self.padding_idx = bag.padding_idx

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor | None = None,
                per_sample_weights: torch.Tensor | None = None) -> torch.Tensor:
        vectors = nn.functional.embedding(ids, self.weight)  # (B, L) -> (B, L, E)
        keep = ids != self.padding_idx if self.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool)
        if self.mode == "max":
            maxed = vectors.masked_fill(~keep[:, :, None], float("-inf")).amax(dim=1)
            return torch.where(keep.any(dim=1, keepdim=True), maxed, torch.zeros_like(maxed))  # empty bag -> 0
        total = (vectors * keep[:, :, None].to(vectors.dtype)).sum(dim=1)  # (B, E)
        if self.mode == "sum":
            return total
        return total / keep.sum(dim=1, keepdim=True).clamp(min=1).to(vectors.dtype)


def check_export_dependencies(export_format: str, wanted_by: str = "export --format onnx") -> None:
    """ONNX export needs the optional `onnx` package (and `onnxruntime` for the parity check): a clear error."""
    missing = missing_onnx_packages() if export_format == "onnx" else []
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(f"{wanted_by} needs {' and '.join(missing)}, which {verb} not installed: {EXTRAS_HINT}")


def export_for_predict(run_dir: Path, setting: bool | str) -> None:
    """output.export_onnx after a train: <run>/export/model.onnx from best.pt, which `predict RUN` uses for a few
    texts (no torch import). The run is trained either way, so a failed export is logged, not raised."""
    if not setting:  # resolved before training (training/auto.py): true, or false when the packages are missing
        return
    checkpoint = run_dir / files.CHECKPOINTS_DIR / files.BEST_CHECKPOINT
    try:
        result = export_model(checkpoint, "onnx", default_output(checkpoint, run_dir, "onnx"))
    except Exception as exc:  # any exporter failure: the checkpoint still predicts
        log.warning(f"output.export_onnx: no ONNX export ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}); "
                    f"predict uses the checkpoint")
        return
    log.info(f"exported {result.model_file} (output.export_onnx): `textclf predict {run_dir}` answers a few texts "
             f"without importing torch")


def default_output(checkpoint: Path, run_dir: Path | None, export_format: str, quantize: str | None = None) -> Path:
    """<run>/export/model.onnx (or model.torchscript.pt); beside a bare checkpoint, in its export/ folder."""
    base = run_dir if run_dir is not None else checkpoint.parent
    name = files.EXPORT_TORCHSCRIPT if export_format != "onnx" else \
        files.EXPORT_ONNX_INT8 if quantize == "int8" else files.EXPORT_ONNX
    return base / files.EXPORT_DIR / name


def export_model(checkpoint: Path, export_format: str, output: Path, quantize: str | None = None) -> ExportResult:
    loaded = load_model(checkpoint, torch.device("cpu"))
    wrapper = ProbabilityModel(loaded.model, max(EXTRA_PADDING, min_width(loaded.model)),
                               multilabel=task_of(loaded) == "multilabel").eval()
    example = example_inputs(len(loaded.vocab))
    if export_format == "onnx":
        payload = onnx_bytes(wrapper, example)
        if quantize == "int8":
            payload = int8_bytes(payload)
            check_int8_agreement(wrapper, onnx_runner(payload), len(loaded.vocab))
        run = onnx_runner(payload)
    else:
        scripted = traced_module(wrapper, example)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
        payload = buffer.getvalue()
        run = torchscript_runner(scripted)
    difference = parity_difference(wrapper, run, len(loaded.vocab))
    if quantize is None and difference > PARITY_TOLERANCE:
        raise RunError(f"export: the {export_format} model differs from textclf's by {difference:.2e} "
                       f"(more than {PARITY_TOLERANCE}); nothing was written. Please report it.")
    log.info(f"parity check passed: largest |difference| from textclf's probabilities {difference:.1e} "
             f"(texts of {', '.join(map(str, PARITY_LENGTHS))} tokens, alone and as one batch)")
    write_atomic(output, lambda handle: handle.write(payload))
    sidecar = sidecar_path(output)
    write_json_atomic(sidecar, {**sidecar_content(loaded, export_format, output), "quantization": quantize})
    return ExportResult(output, sidecar, difference)


INT8_TEXTS = 256  # random texts on which the int8 model's top label must match the fp32 model's
INT8_AGREEMENT = 0.99
INT8_DECISIVE = 0.75  # fp32's top probability at which a text counts as decided


def int8_bytes(payload: bytes) -> bytes:
    """ONNX Runtime's dynamic quantization: int8 weights for the embeddings and the n-gram table (Gather) and the
    linear layers (MatMul, Gemm); activations quantized on the fly. Convolutions stay fp32: ONNX Runtime's
    ConvInteger made the IMDb CNN several times slower (bench/RESULTS.md)."""
    import logging
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its "consider pre-processing" hint
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        fp32.write_bytes(payload)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm", "Gather"])
        return int8.read_bytes()


def check_int8_agreement(wrapper: ProbabilityModel, run, vocab_size: int) -> None:
    """int8 rounds every weight, so its probabilities move a little: what must hold is the decision. Random token
    sequences sit near the decision boundary far more often than texts do, so the check counts the decisive ones
    (fp32's top probability >= INT8_DECISIVE), where a flip would be a real error."""
    generator = torch.Generator().manual_seed(0)
    decisive = agree = agree_all = 0
    for _ in range(INT8_TEXTS):
        length = int(torch.randint(1, 200, (1,), generator=generator))
        token_ids = torch.randint(min(UNK_ID, vocab_size - 1), vocab_size, (1, length), generator=generator)
        lengths = torch.tensor([length])
        with torch.inference_mode():
            expected = wrapper(token_ids, lengths).numpy()
        same = int(expected.argmax() == run(token_ids, lengths).argmax())
        agree_all += same
        if expected.max() >= INT8_DECISIVE:
            decisive, agree = decisive + 1, agree + same
    share = agree / decisive if decisive else 1.0
    if share < INT8_AGREEMENT:
        raise RunError(f"export --quantize int8: the int8 model agrees with fp32 on {share:.1%} of {decisive} random "
                       f"texts fp32 is sure of (at least {INT8_AGREEMENT:.0%} needed); nothing was written. Export "
                       f"in fp32")
    log.info(f"int8 check passed: the same top label as fp32 on {share:.1%} of the {decisive} random texts fp32 is "
             f"sure of (p >= {INT8_DECISIVE}), {agree_all / INT8_TEXTS:.1%} of all {INT8_TEXTS}")


OUTPUT_MEANING = {
    "multiclass": "softmax probability of each label, columns in `labels` order; the label is the most likely one",
    "multilabel": "sigmoid probability of each label, columns in `labels` order; a text has every label whose "
                  "probability is >= its entry in `thresholds`",
}


def task_of(loaded: LoadedModel) -> str:
    return str(loaded.checkpoint.get("task", "multiclass"))


def example_inputs(vocab_size: int, lengths: tuple[int, ...] = (12, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of texts with the given lengths, padded with PAD_ID after each one."""
    generator = torch.Generator().manual_seed(0)
    low = min(UNK_ID, vocab_size - 1)
    token_ids = torch.full((len(lengths), max(lengths)), PAD_ID, dtype=torch.int64)
    for row, length in enumerate(lengths):
        token_ids[row, :length] = torch.randint(low, vocab_size, (length,), generator=generator)
    return token_ids, torch.tensor(lengths, dtype=torch.int64)


def onnx_bytes(wrapper: ProbabilityModel, example: tuple[torch.Tensor, torch.Tensor]) -> bytes:
    exportable = exportable_copy(wrapper)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter warns about itself and about traced sizes
        warnings.simplefilter("ignore")
        # dynamo=False: the TorchScript-based exporter, which needs no onnxscript and handles the dynamic axes
        torch.onnx.export(
            exportable, example, buffer, dynamo=False, opset_version=ONNX_OPSET,
            input_names=["token_ids", "lengths"], output_names=["probabilities"],
            dynamic_axes={"token_ids": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"},
                          "probabilities": {0: "batch"}},
        )
    return buffer.getvalue()


def exportable_copy(wrapper: ProbabilityModel) -> ProbabilityModel:
    """The wrapper with ops every runtime has (EmbeddingBag written out) and the n-gram tables folded into one."""
    exportable = copy.deepcopy(wrapper)
    replace_embedding_bags(exportable)
    for module in exportable.modules():
        if hasattr(module, "fold_ratios"):
            module.fold_ratios()
    return exportable


def replace_embedding_bags(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.EmbeddingBag):
            setattr(module, name, DenseEmbeddingBag(child))
        else:
            replace_embedding_bags(child)


def traced_module(wrapper: ProbabilityModel, example: tuple[torch.Tensor, torch.Tensor]) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # TracerWarnings about sizes: the parity check below is the real test
        warnings.simplefilter("ignore")
        return torch.jit.trace(wrapper, example, check_trace=False)


def onnx_runner(payload: bytes):
    import onnxruntime

    session = onnxruntime.InferenceSession(payload, providers=["CPUExecutionProvider"])
    return lambda token_ids, lengths: session.run(None, {"token_ids": token_ids.numpy(), "lengths": lengths.numpy()})[0]


def torchscript_runner(scripted: torch.jit.ScriptModule):
    def run(token_ids: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return scripted(token_ids, lengths).numpy()

    return run


@torch.inference_mode()
def parity_difference(wrapper: ProbabilityModel, run, vocab_size: int) -> float:
    """Largest difference between the exported model and the eager one, one text at a time and as a batch."""
    worst = 0.0
    cases = [example_inputs(vocab_size, (length,)) for length in PARITY_LENGTHS]
    cases.append(example_inputs(vocab_size, PARITY_LENGTHS))
    for token_ids, lengths in cases:
        expected = wrapper(token_ids, lengths).numpy()
        worst = max(worst, float(np.abs(run(token_ids, lengths) - expected).max()))
    return worst


def sidecar_content(loaded: LoadedModel, export_format: str, model_file: Path) -> dict[str, Any]:
    """Everything another program needs to turn texts into the model's inputs and read its outputs."""
    checkpoint, task = loaded.checkpoint, task_of(loaded)
    content: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "model_file": model_file.name,
        "model_format": export_format,
        "model_type": checkpoint.get("model_type"),
        "task": task,
        "labels": loaded.labels,
        "thresholds": checkpoint.get("thresholds"),
        # model.calibration: the exported graph already divides the logits by it; recorded for people
        "temperature": loaded.temperature,
        "label_separator": loaded.label_separator,
        "inputs": copy.deepcopy(MODEL_INPUTS),
        "outputs": {
            "probabilities": {"dtype": "float32", "shape": ["batch", "labels"], "meaning": OUTPUT_MEANING.get(task, "")},
        },
        **text_to_ids(loaded),
        **provenance(loaded),
    }
    if content["tokenizer"].get("remove_stopwords"):
        from textclf_cli.data.text import _load_stopwords

        content["stopword_list"] = sorted(_load_stopwords(content["tokenizer"]["stopwords"]))
    return content


MODEL_INPUTS = {
    "token_ids": {"dtype": "int64", "shape": ["batch", "sequence"],
                  "meaning": f"vocabulary ids of the tokens, padded with {PAD_ID} after each text"},
    "lengths": {"dtype": "int64", "shape": ["batch"], "meaning": "tokens of each text before padding, >= 1"},
}
TRUNCATION = {"head": "keep the first max_length tokens", "tail": "keep the last max_length tokens",
              "head_tail": "keep the first max_length // 4 tokens and the last max_length - max_length // 4"}


def text_to_ids(loaded: LoadedModel) -> dict[str, Any]:
    """The sidecar's keys that say how a text becomes token ids: tokenizer, steps, vocabulary, truncation."""
    tokenizer = loaded.tokenizer.to_dict()
    return {
        "tokenizer": tokenizer,
        "preprocessing": preprocessing_steps(tokenizer),
        "vocab": loaded.vocab,
        "pad_id": PAD_ID,
        "unk_id": UNK_ID,
        "max_length": loaded.max_length,
        "truncate": loaded.truncate,
        "truncation": TRUNCATION[loaded.truncate],
        "empty_text": f"a text with no tokens is one token {PAD_ID} with length 1",
    }


def provenance(loaded: LoadedModel) -> dict[str, Any]:
    """The sidecar's keys that say where the model came from and when it was exported."""
    return {
        "source_checkpoint": str(loaded.path.resolve()),
        # predict takes a run's own export instead of its checkpoint only while the checkpoint is this very file
        "source_checkpoint_stat": checkpoint_stat(loaded.path),
        "epoch": loaded.checkpoint.get("epoch"),
        "exported_at": now_iso(),
        "versions": {"textclf": textclf_cli.__version__, "torch": str(torch.__version__)},
    }


TOKENIZE_STEP = {
    "toktok": "replace tabs by spaces; tokenize with nltk's ToktokTokenizer; HTML-unescape tokens containing '&'",
    "regexp": f"tokenize with nltk's RegexpTokenizer({WORD_OR_PUNCT!r})",
    "treebank": "tokenize with nltk's word_tokenize(text, preserve_line=True)",
    "punkt": "tokenize with nltk's word_tokenize(text) (Punkt sentence splitting, needs punkt_tab)",
}


def preprocessing_steps(tokenizer: dict[str, Any]) -> list[str]:
    """What textclf does to a text, in order, so another program can do the same."""
    steps = []
    if tokenizer.get("strip_html"):
        steps.append("replace HTML tags (<...>, at most 200 characters) by a space, then unescape HTML entities")
    if tokenizer.get("lowercase"):
        steps.append("lowercase")
    steps.append(TOKENIZE_STEP.get(str(tokenizer.get("kind")), f"tokenize with {tokenizer.get('kind')}"))
    if tokenizer.get("strip_punctuation"):
        steps.append("drop tokens without a letter or digit")
    if tokenizer.get("remove_stopwords"):
        steps.append("drop tokens whose lowercase form is in stopword_list")
    steps.append("map each token to its index in vocab (unknown tokens to unk_id)")
    steps.append("truncate to max_length tokens as `truncate` says")
    return steps
