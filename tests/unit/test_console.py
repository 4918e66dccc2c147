"""console.py and every rich table: texts, labels and folder names are shown as themselves, never as markup or
terminal control sequences."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from textclf_cli import console
from textclf_cli.predict import show_table
from textclf_cli.report import show_metrics
from textclf_cli.tuning.report import show_top_trials

HOSTILE = "a forum post [/quote] [bold]x[/bold] \x1b[31mred\x1b]0;title\x07 \u202eevil\tend\r\n"
SHOWN = "a forum post [/quote] [bold]x[/bold] [31mred]0;title evil end"


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(console, "stdout", Console(file=out, width=400, color_system=None))
    return out


def test_table_cell_escapes_markup_and_drops_control_characters() -> None:
    buffer = io.StringIO()
    Console(file=buffer, width=400, color_system=None).print(console.table_cell(HOSTILE))
    assert buffer.getvalue().rstrip() == SHOWN


def test_predict_table_shows_a_text_with_markup_and_escapes_as_it_is(printed: io.StringIO) -> None:
    # before: `[/quote]` raised rich's MarkupError, and ESC reached the terminal
    show_table([{"text": HOSTILE, "label": "[red]pos", "probabilities": {"[red]pos": 0.9, "neg": 0.1}}])
    output = printed.getvalue()
    assert "[/quote] [bold]x[/bold] [31mred]0;title" in output  # the text column folds after 60 characters
    assert "[red]pos: 0.900" in output and "\x1b" not in output and "\u202e" not in output and "\x07" not in output


def test_evaluation_tables_show_labels_as_they_are(printed: io.StringIO) -> None:
    labels = ["[/b]odd", "\x1b[2Jwipe"]
    metrics = {"accuracy": 1.0, "precision_macro": 1.0, "recall_macro": 1.0, "f1_macro": 1.0, "f1_weighted": 1.0,
               "num_examples": 2,
               "per_class": {label: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for label in labels},
               "confusion_matrix": {"labels": labels, "matrix": [[1, 0], [0, 1]]}}
    show_metrics(metrics, "test [/i]")
    output = printed.getvalue()
    assert "[/b]odd" in output and "[2Jwipe" in output and "test [/i]" in output and "\x1b" not in output


def test_tune_table_shows_folder_names_as_they_are(printed: io.StringIO) -> None:
    rows = [{"number": 0, "state": "complete", "value": 0.5, "seconds": 1.0, "run_dir": "/runs/[bold]\x1b[1mrun",
             "message": "", "train.lr": 0.01}]
    show_top_trials(rows, "valid_f1_macro", maximize=True)
    output = printed.getvalue()
    assert "[bold][1mrun" in output and "\x1b" not in output
