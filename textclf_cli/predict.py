"""The predict stage: a checkpoint alone (or an exported ONNX model, see onnx_predict.py) + texts -> labels with
probabilities as a table, JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from textclf_cli import files
from textclf_cli.atomic import write_atomic
from textclf_cli.data.sources import iter_texts_file
from textclf_cli.errors import ConfigError, DataError
from textclf_cli.runs.folders import refuse_model_as_output
from textclf_cli.serving import onnx as onnx_predict
from textclf_cli.serving.scoring import Predictions, Scorer, check_min_confidence, predict_stream, rows
from textclf_cli.serving.sidecar import sidecar_path
from textclf_cli.serving.targets import checkpoint_scorer

TargetResolver = Callable[[str, list[str]], tuple[Path, Path | None]]  # TARGET, --set -> (checkpoint, run folder)


@dataclass(frozen=True)
class PredictOptions:
    """What one `textclf predict` asks for: the model, the texts, how to score them and where the results go."""

    target: str  # config, run folder, checkpoint, or an ONNX export (.onnx or its sidecar .json)
    texts: list[str] = field(default_factory=list)  # ["-"]: read stdin
    input_file: Path | None = None
    text_column: str = "text"
    output_format: str = "table"  # table, jsonl or csv
    output: Path | None = None
    top_k: int | None = None
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 128
    min_confidence: float | None = None  # below it a text is abstained: no label, its probabilities still given


def predict(options: PredictOptions, resolve_target: TargetResolver) -> int | None:
    """Label the texts and print or write them; how many went to --output (None: printed as they came).

    Contradictory options fail first, then an empty input, before any model is loaded."""
    check_predict_options(options)
    onnx = onnx_predict.is_onnx_target(options.target)
    if onnx:  # fp32 on the CPU, settings from the sidecar: refuse what does not apply before reading any input
        onnx_predict.check_onnx_options(options.device, options.precision, options.overrides)
    stream = iter_texts(options.texts, options.input_file, options.text_column)
    scorer = onnx_target_scorer(options) if onnx else checkpoint_target_scorer(options, resolve_target)
    check_min_confidence(options.min_confidence, scorer)
    chunks = predict_stream(scorer, stream, batch_size=options.batch_size)
    shown = (options.top_k, options.min_confidence)
    if options.output_format == "table":
        for chunk in chunks:
            show_table(rows(chunk, *shown))
        return None
    if options.output is None:
        write_stream(chunks, options.output_format, sys.stdout, *shown)
        return None
    return write_file(chunks, options.output_format, options.output, *shown)


def check_predict_options(options: PredictOptions) -> None:
    """Refuse contradictory options before loading a model or reading any input."""
    output = options.output
    if options.output_format == "table" and output is not None:
        raise ConfigError("predict: --output needs --format jsonl or csv (the table is for the terminal)")
    if output is not None and output.is_dir():
        raise ConfigError(f"predict: --output {output} is a folder; name a file, e.g. {output / 'predictions.jsonl'}")
    if options.input_file is not None and options.texts:
        raise ConfigError("predict: give texts as arguments or --input FILE, not both")


def onnx_target_scorer(options: PredictOptions) -> Scorer:
    model = Path(options.target)
    refuse_model_as_output("predict", options.output, onnx_files(model), None)
    return onnx_predict.onnx_scorer(model)


def checkpoint_target_scorer(options: PredictOptions, resolve_target: TargetResolver) -> Scorer:
    checkpoint, run_dir = resolve_target(options.target, options.overrides)
    exported = [] if run_dir is None else onnx_files(run_dir / files.EXPORT_DIR / files.EXPORT_ONNX)
    refuse_model_as_output("predict", options.output, [checkpoint, *exported], run_dir)
    return checkpoint_scorer(checkpoint, run_dir, options.device, options.precision).scorer


def onnx_files(model: Path) -> list[Path]:
    """An ONNX model and its sidecar, from either of the two."""
    onnx = model.with_suffix("") if model.suffix.lower() == ".json" else model
    return [onnx, sidecar_path(onnx)]


def iter_texts(texts: list[str], input_file: Path | None, text_column: str) -> Iterator[str]:
    """Texts from the arguments, from --input FILE, or from stdin when the only argument is '-', read lazily.

    The first text is read at once, so that a usage mistake or an empty input fails before a model is loaded.
    """
    if input_file is not None and texts:
        raise ConfigError("predict: give texts as arguments or --input FILE, not both")
    if input_file is not None and str(input_file) != "-":
        return _not_empty(iter_texts_file(input_file, text_column),
                          DataError(f"{input_file}: no texts in the file (blank lines and empty texts are skipped)"))
    if input_file is not None or texts == ["-"]:
        lines = (line.rstrip("\r\n") for line in sys.stdin if line.strip())
        return _not_empty(lines, ConfigError("predict: stdin was empty; pipe one text per line"))
    if not texts:
        raise ConfigError('predict: no text given; pass texts as arguments, --input FILE, or "-" to read stdin')
    return iter(texts)


def _not_empty(texts: Iterator[str], error: Exception) -> Iterator[str]:
    first = next(texts, None)
    if first is None:
        raise error
    return itertools.chain([first], texts)


def write_stream(predictions: Iterable[Predictions], output_format: str, handle: IO[str], top_k: int | None,
                 min_confidence: float | None = None) -> int:
    """Write jsonl or csv predictions as they come (one CSV header); returns how many texts were written."""
    count = 0
    for chunk in predictions:
        records = rows(chunk, top_k, min_confidence)
        if output_format == "csv":
            separator = chunk.label_separator if chunk.multilabel else None
            handle.write(format_csv(records, chunk.labels, separator, header=count == 0))
        else:
            handle.write(format_jsonl(records))
        handle.flush()
        count += len(records)
    return count


def write_file(predictions: Iterable[Predictions], output_format: str, output: Path, top_k: int | None,
               min_confidence: float | None = None) -> int:
    """write_stream into `output`, which appears (atomically) only once every text is predicted."""
    written = []

    def write(handle: IO[bytes]) -> None:
        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        written.append(write_stream(predictions, output_format, text, top_k, min_confidence))
        text.flush()
        text.detach()  # write_atomic closes the file itself

    write_atomic(output, write)
    return written[0]


def format_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def format_csv(records: list[dict], labels: list[str], label_separator: str | None = None, header: bool = True) -> str:
    """text, label (or with a label_separator, multilabel: labels joined by it), then p_<label> per label. An
    abstained text (--min-confidence) has an empty label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["text", "label" if label_separator is None else "labels", *(f"p_{label}" for label in labels)])
    for record in records:
        chosen = (record["label"] or "") if label_separator is None else label_separator.join(record["labels"])
        writer.writerow([record["text"], chosen, *(record["probabilities"].get(label, "") for label in labels)])
    return buffer.getvalue()


ABSTAINED_CELL = "(abstained)"  # the label cell of a text below --min-confidence, in a dim row


def show_table(records: list[dict]) -> None:
    from rich.table import Table

    from textclf_cli.console import stdout, table_cell

    table = Table()
    multilabel = bool(records) and "labels" in records[0]
    table.add_column("text", overflow="fold", max_width=60)
    table.add_column("labels" if multilabel else "label")
    table.add_column("probabilities")
    for record in records:
        probs = ", ".join(f"{label}: {p:.3f}" for label, p in record["probabilities"].items())
        text = record["text"] if len(record["text"]) <= 200 else record["text"][:197] + "..."
        abstained = record.get("abstained", False)
        chosen = ", ".join(record["labels"]) if multilabel else ABSTAINED_CELL if abstained else record["label"]
        table.add_row(table_cell(text), table_cell(chosen), table_cell(probs), style="dim" if abstained else None)
    stdout.print(table)
