"""Writing and showing results: evaluation files, confusion-matrix heatmap, training curves, rich tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from textclf_cli import files
from textclf_cli.atomic import write_atomic, write_json_atomic, write_text_atomic


def write_evaluation(out_dir: Path, metrics: dict[str, Any], report_text: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = metrics["confusion_matrix"]["labels"]
    matrix = pd.DataFrame(metrics["confusion_matrix"]["matrix"], index=labels, columns=labels)
    matrix.index.name = "true \\ predicted"
    write_text_atomic(out_dir / files.CONFUSION_CSV, matrix.to_csv())
    write_text_atomic(out_dir / files.REPORT_FILE, report_text)
    plot_confusion_matrix(matrix, out_dir / files.CONFUSION_PNG)
    write_calibration_files(out_dir, metrics)
    write_json_atomic(out_dir / files.METRICS_FILE, metrics)  # last: its presence means the rest is there


def write_multilabel_evaluation(out_dir: Path, metrics: dict[str, Any], report_text: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    table = per_label_table(metrics)
    write_text_atomic(out_dir / files.PER_LABEL_CSV, table.to_csv(index=False))
    write_text_atomic(out_dir / files.REPORT_FILE, report_text)
    plot_per_label_f1(table, out_dir / files.PER_LABEL_F1_PNG)
    write_calibration_files(out_dir, metrics)
    write_json_atomic(out_dir / files.METRICS_FILE, metrics)  # last: its presence means the rest is there


def per_label_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per label: threshold, precision, recall, f1, support and its 2x2 confusion counts."""
    rows = []
    for label, values in metrics["per_label"].items():
        (tn, fp), (fn, tp) = values["confusion_matrix"]
        rows.append({"label": label, "threshold": metrics["thresholds"][label], "precision": values["precision"],
                     "recall": values["recall"], "f1": values["f1"], "support": values["support"],
                     "tn": tn, "fp": fp, "fn": fn, "tp": tp})
    return pd.DataFrame(rows)


def plot_per_label_f1(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, max(2.5, 0.35 * len(table) + 1.2)))
    positions = range(len(table))
    axes.barh(positions, table["f1"], color="tab:blue")
    axes.set_yticks(positions, labels=[f"{label} ({support})" for label, support in zip(table["label"], table["support"])])
    axes.invert_yaxis()  # the first label on top
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1 (support in parentheses)")
    for position, f1 in zip(positions, table["f1"]):
        axes.text(min(f1 + 0.01, 0.9), position, f"{f1:.3f}", va="center")
    axes.set_title("per-label F1")
    axes.grid(axis="x", alpha=0.3)
    _save_figure(figure, path)


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda handle: figure.savefig(handle, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)


def plot_confusion_matrix(matrix: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.6 * len(matrix) + 2.5)
    figure, axes = plt.subplots(figsize=(size, size))
    image = axes.imshow(matrix.values, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_xticks(range(len(matrix.columns)), labels=matrix.columns, rotation=45, ha="right")
    axes.set_yticks(range(len(matrix.index)), labels=matrix.index)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.values.max() / 2 if matrix.values.size else 0
    for (row, column), count in pd.DataFrame(matrix.values).stack().items():
        axes.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > threshold else "black")
    axes.set_title("confusion matrix")
    _save_figure(figure, path)


def write_calibration_files(out_dir: Path, metrics: dict[str, Any]) -> None:
    """reliability.png from metrics["calibration"], and risk_coverage.csv/.png from metrics["risk_coverage"]."""
    calibration = metrics.get("calibration")
    if calibration:
        plot_reliability(calibration, out_dir / files.RELIABILITY_PNG)
    if metrics.get("risk_coverage"):
        table = pd.DataFrame(metrics["risk_coverage"])
        write_text_atomic(out_dir / files.RISK_COVERAGE_CSV, table.to_csv(index=False))
        plot_risk_coverage(table, out_dir / files.RISK_COVERAGE_PNG)


def plot_reliability(calibration: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    for key, name, style in (("reliability_uncalibrated", "uncalibrated", "s--"), ("reliability", "calibrated", "o-")):
        rows = [row for row in calibration.get(key, []) if row["count"]]
        ece = calibration["ece_uncalibrated" if key.endswith("uncalibrated") else "ece"]
        axes.plot([row["confidence"] for row in rows], [row["accuracy"] for row in rows], style,
                  label=f"{name} (ECE {ece:.3f})")
    axes.set_xlabel("confidence of the predicted label")
    axes.set_ylabel("accuracy")
    axes.set_title(f"reliability (temperature {calibration['temperature']:.2f})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    _save_figure(figure, path)


def plot_risk_coverage(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 4))
    axes.plot(table["coverage"], table["accuracy"], "o-")
    for _, row in table.iterrows():
        axes.annotate(f"p >= {row['min_confidence']:.2f}", (row["coverage"], row["accuracy"]), fontsize=7,
                      textcoords="offset points", xytext=(3, 3))
    axes.set_xlabel("coverage (share of texts answered)")
    axes.set_ylabel("accuracy on the answered texts")
    axes.set_title("accuracy at a coverage (predict --min-confidence)")
    axes.grid(alpha=0.3)
    _save_figure(figure, path)


def plot_training_curves(history: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for column, style in (("train_loss", "o-"), ("valid_loss", "s-")):
        loss_axes.plot(history["epoch"], history[column], style, label=column)
    for column, style in (("train_accuracy", "o-"), ("valid_accuracy", "s-"), ("valid_f1_macro", "^-"),
                          ("valid_f1_micro", "v-")):
        if column in history:  # valid_f1_micro: multilabel runs only
            accuracy_axes.plot(history["epoch"], history[column], style, label=column)
    for axes, title in ((loss_axes, "loss"), (accuracy_axes, "accuracy / F1")):
        axes.set_xlabel("epoch")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
    _save_figure(figure, path)


def show_metrics(metrics: dict[str, Any], title: str) -> None:
    from rich.table import Table

    from textclf_cli.console import stdout, table_cell

    summary = Table(title=table_cell(title))
    for column in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "examples"):
        summary.add_column(column, justify="right")
    summary.add_row(*(f"{metrics[key]:.4f}" for key in ("accuracy", "precision_macro", "recall_macro",
                                                        "f1_macro", "f1_weighted")), str(metrics["num_examples"]))
    per_class = Table(title="per class")
    for column in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(column, justify="left" if column == "label" else "right")
    for label, values in metrics["per_class"].items():
        per_class.add_row(table_cell(label), f"{values['precision']:.4f}", f"{values['recall']:.4f}", f"{values['f1']:.4f}",
                          str(values["support"]))
    confusion = Table(title="confusion matrix (rows: true, columns: predicted)")
    labels = metrics["confusion_matrix"]["labels"]
    confusion.add_column("")
    for label in labels:
        confusion.add_column(table_cell(label), justify="right")
    for label, row in zip(labels, metrics["confusion_matrix"]["matrix"]):
        confusion.add_row(table_cell(label), *map(str, row))
    for table in (summary, per_class, confusion):
        stdout.print(table)


def show_multilabel_metrics(metrics: dict[str, Any], title: str) -> None:
    from rich.table import Table

    from textclf_cli.console import stdout, table_cell

    summary = Table(title=table_cell(title))
    columns = ("f1_micro", "f1_macro", "f1_weighted", "f1_samples", "subset_accuracy", "hamming_loss")
    for column in (*columns, "examples"):
        summary.add_column(column, justify="right")
    summary.add_row(*(f"{metrics[key]:.4f}" for key in columns), str(metrics["num_examples"]))
    per_label = Table(title="per label (confusion counts tn fp fn tp)")
    table = per_label_table(metrics)
    for column in table.columns:
        per_label.add_column(column, justify="left" if column == "label" else "right")
    for row in table.itertuples(index=False):
        per_label.add_row(*(f"{value:.4f}" if isinstance(value, float) else table_cell(value) for value in row))
    for shown in (summary, per_label):
        stdout.print(shown)


def write_error_analysis(out_dir: Path, errors: pd.DataFrame, confusions: pd.DataFrame, onehot_targets: Any,
                         probabilities: Any, labels: list[str]) -> None:
    """errors.csv, top_confusions.csv, roc.png and pr.png (before metrics.json, which is written last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / files.ERRORS_CSV, errors.to_csv(index=False))
    write_text_atomic(out_dir / files.TOP_CONFUSIONS_CSV, confusions.to_csv(index=False))
    plot_roc_pr(onehot_targets, probabilities, labels, out_dir)


MAX_CURVES = 10  # beyond this many labels one micro-averaged curve reads better than a tangle


def plot_roc_pr(onehot_targets: Any, probabilities: Any, labels: list[str], out_dir: Path) -> None:
    """roc.png and pr.png with scikit-learn's displays: the positive class for two labels, else one curve per label
    (one-vs-rest) that has positives and negatives here, or a micro-average beyond MAX_CURVES labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    curves = curve_columns(onehot_targets, labels)
    for display, path, title in ((RocCurveDisplay, files.ROC_PNG, "ROC"), (PrecisionRecallDisplay, files.PR_PNG,
                                                                          "precision-recall")):
        figure, axes = plt.subplots(figsize=(5.5, 5))
        for name, column in curves:
            gold = onehot_targets.ravel() if column is None else onehot_targets[:, column]
            score = probabilities.ravel() if column is None else probabilities[:, column]
            display.from_predictions(gold, score, name=name, ax=axes)
        axes.set_title(title + (" (one-vs-rest)" if len(labels) > 2 else ""))
        axes.grid(alpha=0.3)
        _save_figure(figure, out_dir / path)


def curve_columns(onehot_targets: Any, labels: list[str]) -> list[tuple[str, int | None]]:
    """(curve name, label column, or None for the micro-average) of each curve drawn."""
    positives = onehot_targets.sum(0)
    if onehot_targets.shape[1] == 2 and positives.min() > 0 and positives.max() < len(onehot_targets):
        single = bool((onehot_targets.sum(1) == 1).all())
        if single:
            return [(labels[1], 1)]
    scored = [i for i in range(len(labels)) if 0 < positives[i] < len(onehot_targets)]
    if len(scored) > MAX_CURVES:
        return [("all labels, micro-average", None)]
    return [(labels[i], i) for i in scored]


def show_comparison(metrics: dict[str, Any]) -> None:
    """evaluate --compare: each metric, the other run's, and the difference; then how many predictions changed."""
    from textclf_cli.console import stdout

    compare = metrics["compare"]
    for key, delta in compare["deltas"].items():
        stdout.print(f"{key} {metrics[key]:.4f} vs {compare['other'][key]:.4f} ({delta:+.4f})", highlight=False)
    stdout.print(f"{compare['changed']} prediction(s) changed against {compare['checkpoint']} "
                 f"({files.CHANGED_CSV})", highlight=False)
