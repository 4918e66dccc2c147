"""The evaluate stage: a checkpoint + a labelled split or file -> metrics, report and plots in the run folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from textclf_cli import files
from textclf_cli.atomic import write_text_atomic
from textclf_cli.calibration import calibration_report, risk_coverage
from textclf_cli.config import Config, validate_config
from textclf_cli.console import log
from textclf_cli.data.encoding import encode_stream, encode_texts
from textclf_cli.data.prepared import EncodedSplit, is_prepared, load_prepared
from textclf_cli.data.sources import LabelledTexts, TableLayout, TableSource, TextChunk, format_of, read_all
from textclf_cli.data.splits import fingerprint, read_splits, table_source
from textclf_cli.data.tables import DEFAULT_MAX_ROW_CHARS, Where, describe
from textclf_cli.device import resolve_device
from textclf_cli.errors import ConfigError, DataError
from textclf_cli.metrics import (
    classification_metrics,
    classification_report_text,
    multilabel_metrics,
    multilabel_report_text,
    one_vs_rest,
    ranking_metrics,
    scalar_deltas,
    top_confusions,
)
from textclf_cli.precision import inference_dtype
from textclf_cli.report import write_error_analysis, write_evaluation, write_multilabel_evaluation
from textclf_cli.runs.checkpoint import LoadedModel, load_model
from textclf_cli.serving.inference import model_logits

EVALUATE_CHUNK = 8192  # texts tokenized and scored at a time


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    out_dir: Path
    name: str


def evaluate(checkpoint_path: Path, run_dir: Path | None, split: str = "test", data_file: Path | None = None,
             device_spec: str = "auto", batch_size: int = 128, precision: str = "auto",
             compare: tuple[Path, Path | None] | None = None) -> EvaluationResult:
    """Score a checkpoint on a split or file and write evaluation/<name>/; `compare`: (checkpoint, run folder)
    of another run, scored on the same texts, whose metric deltas and changed predictions are written too."""
    device = resolve_device(device_spec)
    loaded = load_model(checkpoint_path, device)
    dtype = inference_dtype(precision, device)
    if data_file is not None:
        name = f"data-{data_file.stem.removesuffix('.csv').removesuffix('.tsv').removesuffix('.jsonl')}"
    else:
        name = split
        if split == "valid" and loaded.checkpoint.get("refit"):
            log.warning(f"{checkpoint_path} was refitted on train + valid (train.refit): its validation figures are "
                        f"not held out; evaluate {files.CHECKPOINTS_DIR}/{files.SELECTED_CHECKPOINT} for the model "
                        f"chosen on validation")
    targets, logits, texts = model_outputs(loaded, split, data_file, run_dir, batch_size, dtype)
    metrics, report_text = score(loaded, targets, logits)
    metrics.update(calibration_metrics(loaded, targets, logits))
    metrics.update(checkpoint=str(checkpoint_path), data=str(data_file) if data_file else split,
                   checkpoint_epoch=loaded.checkpoint.get("epoch"))
    base = run_dir if run_dir is not None else checkpoint_path.parent
    if run_dir is not None and checkpoint_path.name != files.BEST_CHECKPOINT:  # e.g. selected.pt: beside best's
        name = f"{name}-{checkpoint_path.stem}"
    out_dir = base / files.EVALUATION_DIR / name
    predicted = Predicted.of(loaded, targets, logits, texts)
    metrics.update(ranking_metrics(targets, predicted.probabilities, loaded.labels))
    write_error_analysis(out_dir, predicted.errors(), predicted.confusions(), predicted.onehot_targets,
                         predicted.probabilities, loaded.labels)
    if compare is not None:
        metrics["compare"] = compare_runs(out_dir, metrics, predicted, compare, split, data_file, batch_size,
                                          device, dtype)
    write = write_multilabel_evaluation if loaded.task == "multilabel" else write_evaluation
    write(out_dir, metrics, report_text)
    return EvaluationResult(metrics, out_dir, name)


def model_outputs(loaded: LoadedModel, split: str, data_file: Path | None, run_dir: Path | None, batch_size: int,
                  dtype: torch.dtype | None) -> tuple[np.ndarray, np.ndarray, TextsOf]:
    """(targets, logits, the texts by row, read only when asked for) of a labelled file or a split."""
    if data_file is not None:
        return labelled_file_outputs(data_file, loaded, batch_size, dtype)
    encoded = prepared_split(loaded, split, run_dir)
    device = next(loaded.model.parameters()).device
    logits = model_logits(loaded.model, encoded, loaded.max_length, loaded.truncate, batch_size, device, dtype)
    return np.asarray(encoded.targets), logits, lambda: split_texts(loaded, split, encoded)


def score(loaded: LoadedModel, targets: np.ndarray, logits: np.ndarray) -> tuple[dict[str, Any], str]:
    """Metrics and report of what predict would output: the top label, or (multilabel) the label sets the
    checkpoint's thresholds pick."""
    if loaded.task != "multilabel":
        predictions = torch.log_softmax(torch.from_numpy(logits), dim=1).numpy().argmax(1)  # as predict ranks them
        return (classification_metrics(targets, predictions, loaded.labels),
                classification_report_text(targets, predictions, loaded.labels))
    from textclf_cli.serving.multilabel import decide, sigmoid

    predictions = decide(sigmoid(logits), np.array(loaded.thresholds))
    metrics = multilabel_metrics(targets, predictions, loaded.labels)
    metrics["thresholds"] = dict(zip(loaded.labels, loaded.thresholds))
    return metrics, multilabel_report_text(targets, predictions, loaded.labels)


def calibration_metrics(loaded: LoadedModel, targets: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """ECE, Brier score and NLL with and without the run's temperature, the reliability tables, and (single-label)
    the accuracy at each coverage. `logits` are the calibrated ones the model gives (already divided by T)."""
    multilabel = loaded.task == "multilabel"
    raw = logits.astype(np.float64) * loaded.temperature
    report, calibrated = calibration_report(raw, targets, loaded.temperature, multilabel)
    extra: dict[str, Any] = {"calibration": report}
    if not multilabel:
        extra["risk_coverage"] = risk_coverage(calibrated, targets)
    return extra


def labelled_file_outputs(path: Path, loaded: LoadedModel, batch_size: int, dtype: torch.dtype | None
                          ) -> tuple[np.ndarray, np.ndarray, TextsOf]:
    """(targets, raw model outputs, its texts) of a labelled CSV/TSV/JSONL/Parquet file (plain or .gz), streamed
    in chunks; multilabel targets are (n, C) multi-hot rows. The texts are kept for errors.csv."""
    data = loaded.checkpoint["config"]["data"]
    file_format = format_of(path)
    if file_format is None:
        raise ConfigError(f"--data {path}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl or .parquet "
                          f"(optionally .gz)")
    multilabel = loaded.task == "multilabel"
    layout = TableLayout(file_format, data["text_column"], data["label_column"], data.get("encoding", "utf-8"),
                         data.get("bad_rows", "skip"), loaded.label_separator if multilabel else None,
                         data.get("max_row_chars", DEFAULT_MAX_ROW_CHARS))
    source = TableSource(path, layout)
    label_index = {label: i for i, label in enumerate(loaded.labels)}
    device = next(loaded.model.parameters()).device
    targets = [np.zeros((0, len(loaded.labels)), np.uint8) if multilabel else np.zeros(0, np.int64)]
    outputs = [np.zeros((0, len(loaded.labels)), np.float32)]
    texts: list[str] = []
    for chunk, encoded in encode_stream(source.chunks(EVALUATE_CHUNK), loaded.tokenizer, loaded.vocab):
        targets.append(_chunk_targets(chunk, label_index, path, multilabel))
        outputs.append(model_logits(loaded.model, encoded, loaded.max_length, loaded.truncate, batch_size,
                                    device, dtype))
        texts.extend(chunk.texts)
    return np.concatenate(targets), np.concatenate(outputs), lambda: texts


def _chunk_targets(chunk: TextChunk, label_index: dict[str, int], path: Path, multilabel: bool) -> np.ndarray:
    """A chunk's label indices, or (multilabel) its multi-hot rows; refuses labels the model never saw."""
    if not multilabel:
        return np.array([_label_id(label, where, label_index, path)
                         for label, where in zip(chunk.labels, chunk.wheres)], dtype=np.int64)
    targets = np.zeros((len(chunk), len(label_index)), dtype=np.uint8)
    for row, (label_set, where) in enumerate(zip(chunk.labels, chunk.wheres)):
        for label in label_set:
            targets[row, _label_id(label, where, label_index, path)] = 1
    return targets


def _label_id(label: str, where: Where, label_index: dict[str, int], path: Path) -> int:
    if label not in label_index:
        raise DataError(f"{describe(path, where)}: label {label!r} was never seen by this model "
                        f"(it knows: {', '.join(label_index)})")
    return label_index[label]


def prepared_split(loaded: LoadedModel, split: str, run_dir: Path | None = None) -> EncodedSplit:
    """The split as prepared for training, read-only; when that data is gone, the raw split encoded with the
    checkpoint's own tokenizer and vocabulary. Never prepares, downloads or writes anything."""
    config = validate_config(loaded.checkpoint["config"], source=f"{loaded.path} (stored config)")
    if split == "test" and config.data.format != "imdb" and config.data.test is None:
        raise ConfigError("--split test: the run's config has no data.test; pass --data FILE or --split valid")
    root = prepared_root(loaded, config)
    if root is not None and is_prepared(root):
        data = load_prepared(root)
        if data.vocab != loaded.vocab or data.labels != loaded.labels:
            raise DataError(f"{data.root}: prepared data does not match {loaded.path} (the input files changed); "
                            f"evaluate with --data FILE instead")
        if split in data.splits:
            log.info(f"using prepared data {root}")
            return data.splits[split]
    return encode_raw_split(loaded, config, split, root, run_dir)


def prepared_root(loaded: LoadedModel, config: Config) -> Path | None:
    """Where the run's prepared data lives: the fingerprint recorded at training time, or (for older checkpoints)
    the one the current input files give; None when those files cannot be read either."""
    key = loaded.checkpoint.get("prepared_fingerprint")
    if key is None:
        try:
            key = fingerprint(config)  # reads the inputs' digests only
        except DataError:
            return None
    return config.data.prepared_dir / key


def encode_raw_split(loaded: LoadedModel, config: Config, split: str, root: Path | None,
                     run_dir: Path | None) -> EncodedSplit:
    gone = f"the prepared data {root} is gone" if root is not None else "the prepared data cannot be found"
    try:
        texts = raw_split(config, split)
    except DataError as exc:
        hint = (f"run `textclf prepare {run_dir / files.CONFIG_FILE}` once the files exist again, or "
                if run_dir is not None else "")
        raise DataError(f"--split {split}: {gone} and the raw data cannot be read ({exc}); {hint}"
                        f"evaluate a labelled file with --data FILE") from None
    log.warning(f"{gone}: encoding the {split} split of {texts.source} with the checkpoint's tokenizer and vocabulary")
    return encode_labelled(texts, loaded)


def raw_split(config: Config, split: str) -> LabelledTexts:
    """One split read from the run's input files, exactly as prepare reads it (the same seeded validation carve)."""
    if split == "test" and config.data.format != "imdb":
        return read_all(table_source(config, config.data.test))
    return read_splits(config)[split]


def encode_labelled(texts: LabelledTexts, loaded: LoadedModel) -> EncodedSplit:
    """Texts with labels (multilabel: label sets) the model knows -> an EncodedSplit with its targets."""
    from textclf_cli.data.splits import label_targets

    multilabel, known = loaded.task == "multilabel", set(loaded.labels)
    for labels, row in zip(texts.labels, texts.rows or range(1, len(texts) + 1)):
        for label in labels if multilabel else [labels]:
            if label not in known:
                raise DataError(f"{texts.source}:{row}: label {label!r} was never seen by this model "
                                f"(it knows: {', '.join(loaded.labels)})")
    targets = label_targets(texts.labels, loaded.labels, multilabel)
    return encode_texts(texts.texts, loaded.tokenizer, loaded.vocab, targets)


# ---------------------------------------------------------------------------------------------------------
# where the model fails: errors.csv, top_confusions.csv, ROC/PR, and --compare's changed.csv

TextsOf = Callable[[], list[str]]  # the evaluated texts by row, read only when a file needs them


@dataclass
class Predicted:
    """What a model said about each evaluated text: (N, C) probabilities and 0/1 decisions (single-label: the
    top label), beside the (N, C) 0/1 gold labels."""

    labels: list[str]
    onehot_targets: np.ndarray
    probabilities: np.ndarray
    decisions: np.ndarray
    texts: TextsOf
    multilabel: bool

    @classmethod
    def of(cls, loaded: LoadedModel, targets: np.ndarray, logits: np.ndarray, texts: TextsOf) -> Predicted:
        from textclf_cli.serving.multilabel import decide, sigmoid

        multilabel = loaded.task == "multilabel"
        if multilabel:
            probabilities = sigmoid(logits)
            decisions = decide(probabilities, np.array(loaded.thresholds))
        else:
            probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
            decisions = one_vs_rest(probabilities.argmax(1), len(loaded.labels))
        return cls(loaded.labels, one_vs_rest(targets, len(loaded.labels)), probabilities, decisions, texts,
                   multilabel)

    def names(self, rows: np.ndarray) -> list[str]:
        """Each row's labels as one string ("|"-joined for multi-label sets, "" for none)."""
        return ["|".join(self.labels[i] for i in np.flatnonzero(row)) for row in rows]

    def confidence(self) -> np.ndarray:
        """Single-label: the predicted label's probability. Multi-label: how sure the least sure decision is,
        max(p, 1 - p) at its label."""
        if not self.multilabel:
            return self.probabilities.max(1)
        return np.maximum(self.probabilities, 1 - self.probabilities).min(1)

    def wrong(self) -> np.ndarray:
        return np.flatnonzero((self.decisions != self.onehot_targets).any(1))

    def errors(self) -> pd.DataFrame:
        """errors.csv: the misclassified texts, most confident first. Multi-label confidence: the surest wrong
        decision, max(p, 1 - p) over the labels decided wrongly."""
        rows, texts = self.wrong(), self.texts()
        if self.multilabel:
            wrong = self.decisions[rows] != self.onehot_targets[rows]
            sureness = np.maximum(self.probabilities[rows], 1 - self.probabilities[rows])
            confidence = np.where(wrong, sureness, 0).max(1) if len(rows) else np.zeros(0)
        else:
            confidence = self.probabilities[rows].max(1)
        table = pd.DataFrame({"row": rows + 1, "text": [texts[i] for i in rows],
                              "gold": self.names(self.onehot_targets[rows]),
                              "predicted": self.names(self.decisions[rows]), "confidence": confidence})
        if not self.multilabel:
            table["gold_probability"] = self.probabilities[rows, self.onehot_targets[rows].argmax(1)]
        return table.sort_values(["confidence", "row"], ascending=[False, True], kind="stable")

    def confusions(self) -> pd.DataFrame:
        rows = self.wrong()
        pairs = top_confusions(self.names(self.onehot_targets[rows]), self.names(self.decisions[rows]))
        return pd.DataFrame(pairs, columns=["gold", "predicted", "count"])

    def changed(self, other: Predicted) -> pd.DataFrame:
        """changed.csv: the texts whose prediction differs from `other`'s, in row order."""
        rows = np.flatnonzero((self.decisions != other.decisions).any(1))
        texts = self.texts()
        return pd.DataFrame({"row": rows + 1, "text": [texts[i] for i in rows],
                             "gold": self.names(self.onehot_targets[rows]),
                             "predicted": self.names(self.decisions[rows]), "confidence": self.confidence()[rows],
                             "other_predicted": other.names(other.decisions[rows]),
                             "other_confidence": other.confidence()[rows]})


def split_texts(loaded: LoadedModel, split: str, encoded: EncodedSplit) -> list[str]:
    """The split's texts from the run's input files; when those are gone (or changed), its tokens."""
    config = validate_config(loaded.checkpoint["config"], source=f"{loaded.path} (stored config)")
    try:
        texts = raw_split(config, split).texts
    except DataError as exc:
        texts, reason = [], str(exc).splitlines()[0]
    else:
        reason = f"{len(texts)} texts in the input files, {len(encoded)} prepared"
    if len(texts) == len(encoded):
        return texts
    log.warning(f"{files.ERRORS_CSV} shows the {split} texts as their tokens ({reason})")
    vocab = loaded.vocab
    return [" ".join(vocab[i] for i in encoded.ids[start:stop])
            for start, stop in zip(encoded.offsets[:-1], encoded.offsets[1:])]


def compare_runs(out_dir: Path, metrics: dict[str, Any], predicted: Predicted, compare: tuple[Path, Path | None],
                 split: str, data_file: Path | None, batch_size: int, device: torch.device,
                 dtype: torch.dtype | None) -> dict[str, Any]:
    """Score the other run on the same texts; changed.csv, and what metrics.json records under "compare"."""
    other_checkpoint, other_run = compare
    other = load_model(other_checkpoint, device)
    if other.labels != predicted.labels or other.task != ("multilabel" if predicted.multilabel else "multiclass"):
        raise DataError(f"--compare {other_checkpoint}: its labels ({', '.join(other.labels)}) or task differ from "
                        f"this run's ({', '.join(predicted.labels)}); only runs of the same labels compare")
    targets, logits, _ = model_outputs(other, split, data_file, other_run, batch_size, dtype)
    if not np.array_equal(one_vs_rest(targets, len(other.labels)), predicted.onehot_targets):
        raise DataError(f"--compare {other_checkpoint}: its {split} split holds other texts than this run's (other "
                        f"input files, or another validation carve); compare both on one file with --data FILE")
    other_metrics, _ = score(other, targets, logits)
    other_predicted = Predicted.of(other, targets, logits, predicted.texts)
    other_metrics.update(ranking_metrics(targets, other_predicted.probabilities, other.labels))
    changed = predicted.changed(other_predicted)
    write_text_atomic(out_dir / files.CHANGED_CSV, changed.to_csv(index=False))
    deltas = scalar_deltas(metrics, other_metrics)
    return {"checkpoint": str(other_checkpoint), "changed": len(changed), "deltas": deltas,
            "other": {key: other_metrics[key] for key in deltas}}
