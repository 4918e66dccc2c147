"""The predict stage: a checkpoint alone (or an exported ONNX model, see onnx_predict.py) + texts -> labels with
probabilities as a table, JSON lines or CSV."""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from textclf_cli.data.sources import iter_texts_file
from textclf_cli.errors import ConfigError, DataError
from textclf_cli.serving.scoring import Predictions, rows


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


def write_stream(predictions: Iterable[Predictions], output_format: str, handle: IO[str], top_k: int | None) -> int:
    """Write jsonl or csv predictions as they come (one CSV header); returns how many texts were written."""
    count = 0
    for chunk in predictions:
        records = rows(chunk, top_k)
        if output_format == "csv":
            separator = chunk.label_separator if chunk.multilabel else None
            handle.write(format_csv(records, chunk.labels, separator, header=count == 0))
        else:
            handle.write(format_jsonl(records))
        handle.flush()
        count += len(records)
    return count


def format_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def format_csv(records: list[dict], labels: list[str], label_separator: str | None = None, header: bool = True) -> str:
    """text, label (or with a label_separator, multilabel: labels joined by it), then p_<label> per label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(["text", "label" if label_separator is None else "labels", *(f"p_{label}" for label in labels)])
    for record in records:
        chosen = record["label"] if label_separator is None else label_separator.join(record["labels"])
        writer.writerow([record["text"], chosen, *(record["probabilities"].get(label, "") for label in labels)])
    return buffer.getvalue()


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
        chosen = ", ".join(record["labels"]) if multilabel else record["label"]
        table.add_row(table_cell(text), table_cell(chosen), table_cell(probs))
    stdout.print(table)
