"""Thin Typer commands: load the config, call one stage, print the result, map errors to exit codes."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.core

from textclf_cli import console
from textclf_cli.errors import ConfigError, Interrupted, TextclfError

app = typer.Typer(
    help="Train TextCNN / (Bi)LSTM / bag-of-ngrams text classifiers from a YAML config, evaluate them, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set train.lr=3e-4 (repeatable; wins over the file)."),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the final result line.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# 128: larger CPU inference batches were slower for the shipped CNN (bench/RESULTS.md); GPUs like more.
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass.")]
PrecisionOption = Annotated[
    Precision, typer.Option("--precision", help="auto (bf16 where the GPU/CPU computes it natively, else fp32), fp32, bf16.")
]

MinConfidenceOption = Annotated[float | None, typer.Option(
    "--min-confidence", min=0.0, max=1.0, help="Abstain below this top probability: no label (JSONL: label null, "
    "abstained true; CSV: empty label; a dim table row), the probabilities still given. Single-label models.")]


class Split(str, Enum):
    test = "test"
    valid = "valid"


class OutputFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


class CheckFormat(str, Enum):
    table = "table"
    json = "json"


class RunsFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ExportFormat(str, Enum):
    onnx = "onnx"
    torchscript = "torchscript"


class Quantize(str, Enum):
    int8 = "int8"


class ListByDefault(typer.core.TyperGroup):
    """`textclf runs [DIR]` lists; `textclf runs prune ...` prunes: anything that is not a subcommand goes to list."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


runs_app = typer.Typer(cls=ListByDefault, help="List runs (honest status, metrics, best/latest) and prune old ones.",
                       add_completion=False, pretty_exceptions_enable=False)
app.add_typer(runs_app, name="runs")


def handled(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's errors into one line on stderr and their exit code; never a bare traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TextclfError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:  # SIGTERM too, while the train stage sets up (interrupts.py)
            print(f"error: interrupted by {getattr(exc, 'signal_name', 'SIGINT')}", file=sys.stderr)
            raise typer.Exit(Interrupted.exit_code) from None
        except typer.Exit:
            raise
        except Exception as exc:  # a bug, not a user mistake: still one line unless debugging
            if os.environ.get("TEXTCLF_DEBUG"):
                raise
            print(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                  f"(set TEXTCLF_DEBUG=1 to see the traceback, and please report it)", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def _load(config_path: Path, overrides: list[str] | None):
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.config import load_config

    return load_config(config_path, overrides or [])


def _resolve_target(target: str, overrides: list[str] | None) -> tuple[Path, Path | None]:
    """(checkpoint, run folder) for a config (its latest completed run), a run folder or a .pt file."""
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.api import resolve_target

    return resolve_target(target, overrides)


def _experiment_dir(target: Path, overrides: list[str] | None) -> Path:
    """A config's runs/<experiment> folder, or the folder as given."""
    if target.suffix.lower() in (".yaml", ".yml"):
        config = _load(target, overrides)
        return config.output.runs_dir / config.experiment
    if overrides:
        raise ConfigError("--set applies to a config; the folder given here is not one")
    return target


@app.command()
@handled
def prepare(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config.")],
    overrides: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Prepare again even when cached.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Read, clean, tokenize and encode the data once; later commands reuse it."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.prepare import prepare as prepare_data
    from textclf_cli.training.interrupts import interrupt_on_signals

    with interrupt_on_signals():  # SIGTERM unwinds like Ctrl-C: the staging folder is removed, exit 130
        data = prepare_data(_load(config_path, overrides), force=force)
    console.result(str(data.root))


@app.command()
@handled
def check(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config.")],
    overrides: SetOption = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 5 when an error-level finding exists.")] = False,
    min_per_class: Annotated[int | None, typer.Option(
        "--min-per-class", min=1, help="Warn about classes with fewer training rows (default: check.min_per_class).")
    ] = None,
    output_format: Annotated[CheckFormat, typer.Option("--format", "-f")] = CheckFormat.table,
    quiet: QuietOption = False,
) -> None:
    """Check the data before training: drops, labels, lengths, vocabulary coverage, duplicates and leakage."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    import json

    from textclf_cli.check import check as check_data
    from textclf_cli.check import render, require_no_errors

    config = _load(config_path, overrides)
    if min_per_class is not None:
        config.check.min_per_class = min_per_class
    report = check_data(config)
    if output_format is CheckFormat.json:
        console.result(json.dumps(report.to_dict(), indent=2))
    else:
        for table in [] if quiet else render(report):
            console.stdout.print(table)
        console.result(f"{report.summary} ({report.seconds:.1f}s)")
    if strict:
        require_no_errors(report)


@app.command()
@handled
def train(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config.")],
    overrides: SetOption = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue this run folder from last.pt.")] = None,
    promote_if_better: Annotated[
        bool, typer.Option("--promote-if-better", help="Point runs/<experiment>/best here only if it beats it.")
    ] = False,
    quiet: QuietOption = False,
) -> None:
    """Train a model; prints the run folder."""
    console.setup_logging(quiet)
    config = _load(config_path, overrides)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli import api

    outcome = api.train(config, resume=resume, promote_if_better=promote_if_better)
    if not outcome.main:  # rank 0 alone reports the run
        return
    metrics = outcome.metrics
    refitted = " (selected.pt); best.pt refitted on train + valid" if metrics.get("refit") else ""
    console.log.info(f"completed {metrics['epochs']} epoch(s); best {metrics['monitor']} "
                     f"{metrics['best_metric']:.4f} at epoch {metrics['best_epoch']}{refitted}")
    console.result(str(outcome.run_dir))


@app.command()
@handled
def tune(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML config (its tune: section, if any, "
                                                "is the search space).")],
    trials: Annotated[int | None, typer.Option(
        "--trials", min=1, help="Stop when the study has N finished trials, resumed ones and other workers' included "
                                "(default 20; no limit with --timeout).")] = None,
    timeout: Annotated[str | None, typer.Option(
        "--timeout", help="Start no new trial after this long: 90s, 30m, 2h, 1h30m.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", min=1, help="Trials at once, one process each.")] = 1,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="Continue this study folder (runs/<experiment>/tune-<id>).")] = None,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Keep the run folders of the best N trials.")] = 3,
    storage: Annotated[str | None, typer.Option(
        "--storage", envvar="TEXTCLF_TUNE_STORAGE", show_envvar=True,  # how --jobs passes it on (workers.py)
        help="A database URL (postgresql://user:password@host/db) shared by workers on several machines; "
             "default: study.db in the study folder.")] = None,
    study: Annotated[str | None, typer.Option(
        "--study", help="The study's name in --storage: every worker that names it joins it.")] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
    worker: Annotated[int, typer.Option("--worker", hidden=True)] = 0,
) -> None:
    """Search hyperparameters with Optuna; writes best.yaml and prints the best trial."""
    console.setup_logging(quiet)
    config = _load(config_path, overrides)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.tune import DEFAULT_TRIALS, TuneOptions, parse_duration
    from textclf_cli.tune import tune as tune_study

    seconds = parse_duration(timeout)
    options = TuneOptions(trials=DEFAULT_TRIALS if trials is None and seconds is None else trials, timeout=seconds,
                          jobs=jobs, keep=keep, resume=resume, worker=worker, config_path=config_path,
                          overrides=list(overrides or []), storage=storage, study_name=study)
    result = tune_study(config, options)
    if result is None:  # a --jobs worker: the first process reports
        return
    if not quiet:
        from textclf_cli.tuning.report import show_top_trials

        show_top_trials(result.rows, result.monitor, result.maximize, limit=keep)
    console.result(f"best {result.monitor} {result.best_value:.4f} (trial {result.best_number}); "
                   f"config written to {result.best_config}")


@app.command()
@handled
def evaluate(
    target: Annotated[str, typer.Argument(help="Config (.yaml: its latest run), run folder or checkpoint .pt.")],
    overrides: SetOption = None,
    split: Annotated[Split, typer.Option("--split", help="Prepared split to evaluate.")] = Split.test,
    data: Annotated[Path | None, typer.Option("--data", help="A labelled CSV/TSV/JSONL file instead.")] = None,
    compare: Annotated[str | None, typer.Option(
        "--compare", help="Another run (folder, checkpoint or config) scored on the same texts: metric deltas, and "
                          "the texts whose prediction changed (changed.csv).")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    batch_size: BatchSizeOption = 128,
    quiet: QuietOption = False,
) -> None:
    """Accuracy, precision, recall, F1, confusion matrix; written to the run folder."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.evaluate import evaluate as evaluate_model
    from textclf_cli.report import show_comparison, show_metrics, show_multilabel_metrics

    checkpoint, run_dir = _resolve_target(target, overrides)
    other = _resolve_target(compare, None) if compare else None
    result = evaluate_model(checkpoint, run_dir, split=split.value, data_file=data, device_spec=device,
                            precision=precision.value, batch_size=batch_size, compare=other)
    metrics, multilabel = result.metrics, "per_label" in result.metrics
    if not quiet:
        (show_multilabel_metrics if multilabel else show_metrics)(metrics, f"{result.name}: {checkpoint}")
    if "compare" in metrics:
        show_comparison(metrics)
    headline = (f"f1_micro {metrics['f1_micro']:.4f} f1_macro {metrics['f1_macro']:.4f} subset_accuracy "
                f"{metrics['subset_accuracy']:.4f}" if multilabel
                else f"accuracy {metrics['accuracy']:.4f} f1_macro {metrics['f1_macro']:.4f}")
    console.result(f"{headline} on {metrics['num_examples']} examples; written to {result.out_dir}")


@app.command()
@handled
def predict(
    target: Annotated[str, typer.Argument(help="Config (.yaml: its latest run), run folder, checkpoint .pt, or a "
                                          "model from `textclf export --format onnx` (.onnx or its sidecar .json).")],
    texts: Annotated[list[str] | None, typer.Argument(help='Texts to classify ("-" reads stdin).')] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", "-i", help="txt (one text per line), CSV/TSV/JSONL, or - for stdin.")
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Show the k most likely labels.")] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="Text column of a CSV/TSV/JSONL input.")] = "text",
    overrides: SetOption = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = Precision.auto,
    batch_size: BatchSizeOption = 128,
    min_confidence: MinConfidenceOption = None,
    quiet: QuietOption = False,
) -> None:
    """Label texts with a trained model; the checkpoint alone, or its ONNX export (no torch import), is enough."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.predict import PredictOptions
    from textclf_cli.predict import predict as predict_texts

    options = PredictOptions(target=target, texts=texts or [], input_file=input_file, text_column=text_column,
                             output_format=output_format.value, output=output, top_k=top_k,
                             overrides=list(overrides or []), device=device, precision=precision.value,
                             batch_size=batch_size, min_confidence=min_confidence)
    written = predict_texts(options, _resolve_target)
    if written is not None:
        console.result(f"{written} prediction(s) written to {output}")


class ExplainFormat(str, Enum):
    table = "table"
    html = "html"
    json = "json"


@app.command()
@handled
def explain(
    target: Annotated[str, typer.Argument(help="Config (.yaml: its latest run), run folder or checkpoint .pt (not an "
                                          "ONNX export).")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to explain.")] = None,
    label: Annotated[str | None, typer.Option("--label", "-l", help="Explain this label (default: each text's "
                                              "predicted one).")] = None,
    output_format: Annotated[ExplainFormat | None, typer.Option(
        "--format", "-f", help="table (the terminal), html or json (default: from --output's suffix, else table).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (.html: a self-contained page; "
                                                ".json) instead of stdout.")] = None,
    steps: Annotated[int, typer.Option("--steps", min=2, help="Integrated Gradients steps for a CNN/LSTM network "
                                       "(more: a smaller completeness error, the delta).")] = 50,
    overrides: SetOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Each token's share of a label's logit: Integrated Gradients for the network, exact for the n-gram and bag
    models, mixed as the ensemble mixes them."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.explain import ExplainOptions
    from textclf_cli.explain import explain as explain_texts

    options = ExplainOptions(target=target, texts=texts or [], label=label,
                             output_format=output_format.value if output_format else None, output=output,
                             overrides=list(overrides or []), device=device, steps=steps)
    written = explain_texts(options, _resolve_target)
    if written is not None:
        console.result(f"{len(options.texts)} explanation(s) written to {written}")


@app.command()
@handled
def serve(
    target: Annotated[str, typer.Argument(help="Experiment folder (follows best, else latest), config (.yaml: its "
                                          "experiment), run folder, checkpoint .pt, or an ONNX export.")],
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0: all, with a warning).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes, each with its own model.")] = 1,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Most texts in one model call.")] = 256,
    max_wait_ms: Annotated[float, typer.Option(
        "--max-wait-ms", min=0.0, help="How long a request waits for others to share its model call.")] = 5.0,
    reload_every: Annotated[str, typer.Option(
        "--reload-every", help="Check the target for a new model this often (30s, 5m; 0: only POST /v1/reload).")]
    = "30s",
    min_confidence: MinConfidenceOption = None,
    max_texts: Annotated[int, typer.Option("--max-texts", min=1, help="Most texts in one request.")] = 1000,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, help="Most characters in one text.")] = 100_000,
    api_key_file: Annotated[Path | None, typer.Option(
        "--api-key-file", help="Require `Authorization: Bearer KEY` (the file's first line) on every route but "
                               "/healthz.")] = None,
    grace: Annotated[str, typer.Option("--grace", help="On SIGTERM/SIGINT, how long requests in flight may take.")]
    = "30s",
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Serve predictions over HTTP (FastAPI), following the target's promotions without dropping a request."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.serve import ServeOptions, check_serve_dependencies, duration_seconds, read_api_key
    from textclf_cli.serve import serve as serve_model
    from textclf_cli.serving.settings import ServeSettings

    check_serve_dependencies()
    settings = ServeSettings(target=str(_experiment_dir(Path(target), overrides)), max_batch=max_batch,
                             max_wait_ms=max_wait_ms, reload_every_s=duration_seconds(reload_every, "--reload-every"),
                             min_confidence=min_confidence, max_texts=max_texts, max_chars=max_chars,
                             api_key=read_api_key(api_key_file))
    serve_model(settings, ServeOptions(host=host, port=port, workers=workers,
                                       grace_s=duration_seconds(grace, "--grace")))


@runs_app.command("list")
@handled
def runs_list(
    path: Annotated[Path, typer.Argument(help="Runs folder (output.runs_dir), experiment folder or config.")] = Path("runs"),
    output_format: Annotated[RunsFormat, typer.Option("--format", "-f")] = RunsFormat.table,
    overrides: SetOption = None,
) -> None:
    """One row per run, newest first: status (stale when its process is gone), epochs, metrics, best/latest."""
    console.setup_logging(False)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.runs import listing as run_listing

    records = run_listing.list_runs(_experiment_dir(path, overrides))
    if not records:
        console.log.info(f"no runs under {path}")
    if output_format is RunsFormat.table:
        run_listing.show_table(records)
    else:
        text = run_listing.format_json(records) if output_format is RunsFormat.json else run_listing.format_csv(records)
        sys.stdout.write(text)


@runs_app.command("prune")
@handled
def runs_prune(
    experiment_dir: Annotated[Path, typer.Argument(metavar="EXPERIMENT_DIR", help="runs/<experiment> or its config.")],
    keep: Annotated[int, typer.Option("--keep", min=1, help="How many of the newest runs to keep.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Delete the oldest completed/failed/interrupted/stale runs beyond the newest N; never best, latest or a live run."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.runs.prune import prune_runs, require_experiment_dir

    folder = _experiment_dir(experiment_dir, overrides)
    require_experiment_dir(folder)
    removed = prune_runs(folder, keep, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for run_dir in removed:
        console.result(f"{verb} {run_dir}")
    console.log.info(f"{verb} {len(removed)} run(s) of {folder}, keeping the newest {keep} and best/latest/live runs")


@app.command()
@handled
def export(
    target: Annotated[str, typer.Argument(help="Config (.yaml: its latest run), run folder or checkpoint .pt.")],
    export_format: Annotated[ExportFormat, typer.Option("--format", "-f", help="onnx or torchscript.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Model file to write (default: in the run's "
                                                "export/ folder).")] = None,
    quantize: Annotated[Quantize | None, typer.Option(
        "--quantize", help="int8: ONNX Runtime's dynamic quantization (int8 weights), a smaller and faster model "
                           "whose top label is checked against fp32's; ONNX only.")] = None,
    overrides: SetOption = None,
    quiet: QuietOption = False,
) -> None:
    """Export a trained model for serving without textclf, with a sidecar JSON (vocabulary, labels, tokenizer)."""
    console.setup_logging(quiet)
    # imported here, not at the top: `textclf --help` and the other commands need none of it (torch)
    from textclf_cli.export import check_export_dependencies, default_output, export_model
    from textclf_cli.runs.folders import refuse_model_as_output

    check_export_dependencies(export_format.value)
    if quantize is not None and export_format.value != "onnx":
        raise ConfigError("export: --quantize int8 needs --format onnx (ONNX Runtime quantizes the model)")
    level = quantize.value if quantize is not None else None
    if output is not None and output.is_dir():
        raise ConfigError(f"export: --output {output} is a folder; name the model file, e.g. {output / 'model.onnx'}")
    checkpoint, run_dir = _resolve_target(target, overrides)
    refuse_model_as_output("export", output, [checkpoint], run_dir)
    result = export_model(checkpoint, export_format.value,
                          output or default_output(checkpoint, run_dir, export_format.value, level), level)
    console.log.info(f"sidecar {result.sidecar}")
    console.result(str(result.model_file))


def main() -> None:
    app()
