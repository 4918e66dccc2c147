"""The check stage: the configured splits, read and tokenized as prepare would -> findings with a severity.

Nothing is written: `textclf check` prints a table (or JSON), and `--strict` turns an error-level finding into
exit code 5 so that a cron script stops before training on a broken export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from textclf_cli.config import AUTO, Config
from textclf_cli.console import Stopwatch
from textclf_cli.data.checks import (
    ERROR,
    LENGTH_QUANTILES,
    Finding,
    Scan,
    cheap_findings,
    length_findings,
    oov_findings,
    oov_rates,
    scan_splits,
    summary_line,
)
from textclf_cli.errors import CheckFailed
from textclf_cli.training.auto import auto_max_length, auto_min_freq

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


@dataclass
class CheckReport:
    splits: dict[str, dict[str, Any]]  # per split: rows, dropped, labels, token lengths, OOV rate
    findings: list[Finding]
    max_length: int
    min_freq: int
    seconds: float
    summary: str

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == ERROR]

    def to_dict(self) -> dict[str, Any]:
        return {"splits": self.splits, "findings": [finding.to_dict() for finding in self.findings],
                "max_length": self.max_length, "min_freq": self.min_freq, "seconds": round(self.seconds, 2),
                "summary": self.summary}


def check(config: Config) -> CheckReport:
    """Every finding on the configured data; `auto` max_length and min_freq resolved as training resolves them."""
    clock = Stopwatch()
    scan = scan_splits(config, tokenize=True)
    train_lengths = scan.splits["train"].lengths
    max_length = config.vocab.max_length
    if max_length == AUTO:
        max_length = auto_max_length(train_lengths)
    min_freq = config.vocab.min_freq
    if min_freq == AUTO:
        min_freq = auto_min_freq(train_lengths, max_length)
    rates = oov_rates(scan, config.vocab.max_size, min_freq)
    findings = (cheap_findings(scan, config.check) + length_findings(scan, max_length, config.check)
                + oov_findings(rates, min_freq, config.check))
    findings.sort(key=lambda finding: ("error", "warning", "info").index(finding.severity))
    return CheckReport(split_stats(scan, max_length, rates), findings, max_length, min_freq, clock.seconds,
                       summary_line(scan, findings))


def split_stats(scan: Scan, max_length: int, rates: dict[str, float]) -> dict[str, dict[str, Any]]:
    stats = {}
    for split in scan.splits.values():
        lengths = split.lengths
        entry: dict[str, Any] = {"source": split.source, "rows": split.rows, "dropped": split.dropped,
                                 "labels": dict(split.labels.most_common())}
        if len(lengths):
            quantiles = np.quantile(lengths, LENGTH_QUANTILES)
            entry["tokens"] = {f"p{round(q * 100)}": int(value) for q, value in zip(LENGTH_QUANTILES, quantiles)}
            entry["truncated"] = round(float((lengths > max_length).mean()), 4)
        if split.name in rates:
            entry["oov_rate"] = round(rates[split.name], 4)
        if scan.multilabel:
            entry["labels_per_text"] = {str(k): v for k, v in sorted(split.labels_per_text.items())}
            entry["top_pairs"] = [[a, b, n] for (a, b), n in split.pairs.most_common(5)]
        stats[split.name] = entry
    if scan.carved:
        stats["train"]["note"] = "valid is carved from these rows by data.valid_fraction"
    return stats


def require_no_errors(report: CheckReport) -> None:
    """--strict: CheckFailed (exit 5) naming every error-level finding."""
    if report.errors:
        raise CheckFailed("\n".join(f"check: {finding.message}" for finding in report.errors))


def render(report: CheckReport) -> list[Any]:
    """Two rich tables: the splits, then the findings with their examples."""
    from rich.table import Table

    splits = Table(title="splits", title_justify="left")
    for column in ("split", "rows", "dropped", "labels", "tokens p50/p90/p99/max", "cut", "oov"):
        splits.add_column(column, justify="left" if column in ("split", "labels") else "right")
    for name, entry in report.splits.items():
        tokens = entry.get("tokens")
        labels = ", ".join(f"{label} {count}" for label, count in list(entry["labels"].items())[:4])
        labels += ", ..." if len(entry["labels"]) > 4 else ""
        splits.add_row(name, str(entry["rows"]), str(entry["dropped"]), labels,
                       "/".join(str(tokens[key]) for key in ("p50", "p90", "p99", "p100")) if tokens else "-",
                       f"{entry['truncated']:.1%}" if "truncated" in entry else "-",
                       f"{entry['oov_rate']:.1%}" if "oov_rate" in entry else "-")
    findings = Table(title=f"findings (max_length {report.max_length}, min_freq {report.min_freq})",
                     title_justify="left")
    findings.add_column("severity")
    findings.add_column("finding")
    for finding in report.findings:
        text = "\n".join([finding.message, *(f"  {example}" for example in finding.examples)])
        findings.add_row(f"[{SEVERITY_STYLE[finding.severity]}]{finding.severity}[/]", text)
    if not report.findings:
        findings.add_row("", "nothing found")
    return [splits, findings]
