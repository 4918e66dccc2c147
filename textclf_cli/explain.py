"""The explain stage: a checkpoint + texts -> each token's share of a label's logit (serving/attributions.py), as a
coloured terminal view, a self-contained HTML page or JSON."""

from __future__ import annotations

import html
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from textclf_cli import console
from textclf_cli.atomic import write_text_atomic
from textclf_cli.data.text import Tokenizer
from textclf_cli.device import resolve_device
from textclf_cli.errors import ConfigError
from textclf_cli.runs.checkpoint import LoadedModel, load_model
from textclf_cli.serving import onnx as onnx_predict
from textclf_cli.serving.attributions import IG_STEPS, Explanation, ensemble_mix, explain_text, require_captum

FORMATS = ("table", "html", "json")
SUFFIX_FORMATS = {".html": "html", ".htm": "html", ".json": "json"}
TOP_TOKENS = 10  # rows of the table under each text
FOR, AGAINST = (22, 140, 62), (200, 40, 40)  # green for the label, red against it


@dataclass(frozen=True)
class ExplainOptions:
    """What one `textclf explain` asks for: the model, the texts, the label, and where the result goes."""

    target: str  # config, run or experiment folder, or checkpoint (never an ONNX export: no gradients there)
    texts: list[str] = field(default_factory=list)
    label: str | None = None  # None: each text's predicted label
    output_format: str | None = None  # table, html or json; None: from --output's suffix, else table
    output: Path | None = None
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    steps: int = IG_STEPS


def explain(options: ExplainOptions, resolve_target: Any) -> Path | None:
    """Explain the texts and show or write the result; the file written (None: printed)."""
    output_format = chosen_format(options)
    if onnx_predict.is_onnx_target(options.target):
        raise ConfigError(f"explain: {options.target} is an ONNX export, which has no gradients or member weights; "
                          f"give the run folder or checkpoint .pt it was exported from")
    if not options.texts:
        raise ConfigError('explain: give one or more texts, e.g. textclf explain RUN "A wonderful film."')
    checkpoint, _ = resolve_target(options.target, options.overrides)
    loaded = load_model(checkpoint, resolve_device(options.device))
    require_captum(loaded.model)
    tokenize = Tokenizer(loaded.tokenizer)
    explanations = [explain_text(loaded, tokenize, text, options.label, options.steps) for text in options.texts]
    document = {"model": model_info(loaded, options.steps), "explanations": [to_dict(e) for e in explanations]}
    if output_format == "table":
        show_table(explanations, document["model"])
        return None
    content = render_html(explanations, document["model"]) if output_format == "html" else \
        json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if options.output is None:
        sys.stdout.write(content)
        return None
    write_text_atomic(options.output, content)
    return options.output


def chosen_format(options: ExplainOptions) -> str:
    """--format, else the one --output's suffix names, else the table; the table is for the terminal only."""
    output = options.output
    if output is not None and output.is_dir():
        raise ConfigError(f"explain: --output {output} is a folder; name a file, e.g. {output / 'explain.html'}")
    if options.output_format is not None:
        if options.output_format == "table" and output is not None:
            raise ConfigError("explain: --output needs --format html or json (the table is for the terminal)")
        return options.output_format
    if output is None:
        return "table"
    if output.suffix.lower() not in SUFFIX_FORMATS:
        raise ConfigError(f"explain: --output {output}: name an .html or .json file, or give --format html|json")
    return SUFFIX_FORMATS[output.suffix.lower()]


def model_info(loaded: LoadedModel, steps: int) -> dict[str, Any]:
    """What every explanation shares: the checkpoint, what the attributions are of, how the members combine."""
    mix = ensemble_mix(loaded.model)
    calibrated = loaded.temperature != 1.0
    return {"checkpoint": str(loaded.path), "labels": loaded.labels, "task": loaded.task,
            "attributions_of": "the calibrated logit (logit / temperature)" if calibrated else "the logit",
            "temperature": round(loaded.temperature, 6), "mix": None if mix is None else round(mix, 6),
            "max_length": loaded.max_length,
            "truncate": loaded.truncate, "ig_steps": steps}


def to_dict(explained: Explanation) -> dict[str, Any]:
    """JSON of one text: its label, probabilities, the logit = baseline + token values + delta, and each token."""
    members = {name: {"method": part.method, "baseline": round(part.baseline, 6), "delta": round(part.delta, 6)}
               for name, part in explained.members.items()}
    per_member = {name: explained.member_values(name) for name in explained.members}
    tokens = [{"token": token, "seen": seen, "unknown": unknown, "attribution": rounded(value),
               "members": {name: rounded(values[i]) for name, values in per_member.items()}}
              for i, (token, seen, unknown, value) in enumerate(zip(explained.tokens, explained.seen,
                                                                    explained.unknown, explained.attributions()))]
    return {"text": explained.text, "label": explained.label, "predicted": explained.predicted,
            "probability": round(explained.probabilities[explained.label], 6),
            "probabilities": {label: round(p, 6) for label, p in explained.probabilities.items()},
            "logit": round(explained.logit, 6), "baseline": round(explained.baseline, 6),
            "delta": round(explained.delta, 6), "members": members, "tokens": tokens}


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summary_line(explained: Explanation, info: dict[str, Any]) -> str:
    """'pos 0.931 (predicted); logit 2.31 = baseline 0.12 + tokens 2.18 + delta 0.01 (calibrated: logit / 1.37)'"""
    seen = [value for value in explained.attributions() if value is not None]
    predicted = "predicted" if explained.label == explained.predicted else f"predicted {explained.predicted}"
    line = (f"{explained.label} {explained.probabilities[explained.label]:.3f} ({predicted}); logit "
            f"{explained.logit:.3f} = baseline {explained.baseline:.3f} + tokens {sum(seen):.3f}")
    if abs(explained.delta) >= 5e-4:
        line += f" + IG delta {explained.delta:.3f}"
    if explained.temperature != 1.0:
        line += f" (calibrated: logit / temperature {explained.temperature:.3g})"
    if info["mix"] is not None:
        line += f"; ensemble mix {info['mix']:.2f}"
    return line


def colour(value: float, largest: float) -> tuple[tuple[int, int, int], float]:
    """A token's colour (green for the label, red against it) and its strength in [0, 1] (|value| / largest)."""
    return (FOR if value >= 0 else AGAINST), (min(1.0, abs(value) / largest) if largest > 0 else 0.0)


def largest_value(explained: Explanation) -> float:
    return max((abs(value) for value in explained.attributions() if value is not None), default=0.0)


def token_text(explained: Explanation) -> Text:
    """The tokens in a row, each on a background of its colour as strong as its share; cut ones struck out."""
    text, largest = Text(), largest_value(explained)
    for token, value in zip(explained.tokens, explained.attributions()):
        if value is None:
            text.append(token, style="dim strike")
        else:
            (red, green, blue), strength = colour(value, largest)
            blend = [round(255 - (255 - channel) * strength) for channel in (red, green, blue)]
            text.append(token, style=f"black on rgb({blend[0]},{blend[1]},{blend[2]})" if strength >= 0.05 else "")
        text.append(" ")
    return text


def top_table(explained: Explanation) -> Table:
    table = Table("token", "attribution", *explained.members, box=None, pad_edge=False)
    per_member = [explained.member_values(name) for name in explained.members]
    values = explained.attributions()
    for i in top_positions(explained):
        table.add_row(explained.tokens[i], f"{values[i]:+.3f}",
                      *(f"{values[i]:+.3f}" for values in per_member))
    return table


def top_positions(explained: Explanation) -> list[int]:
    """Positions of the seen tokens with the largest |attribution|, largest first."""
    values = explained.attributions()
    seen = [i for i, value in enumerate(values) if value is not None]
    return sorted(seen, key=lambda i: -abs(values[i]))[:TOP_TOKENS]


def show_table(explanations: list[Explanation], info: dict[str, Any]) -> None:
    out = console.stdout
    for number, explained in enumerate(explanations, start=1):
        out.print(f"[bold]text {number}[/bold]: {summary_line(explained, info)}", highlight=False)
        out.print(token_text(explained))
        out.print(top_table(explained))
        out.print()
    unseen = any(not seen for explained in explanations for seen in explained.seen)
    out.print(f"green: for the label, red: against it, by {info['attributions_of']}"
              + ("; struck out: cut by max_length, unseen" if unseen else ""), style="dim", highlight=False)


HTML_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; line-height: 1.5; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-bottom: 0.2rem; }
.meta, .sum, .legend { color: #555; font-size: 0.9rem; }
.tokens { font-size: 1.05rem; line-height: 2.1; }
.tokens span { padding: 0.15rem 0.2rem; border-radius: 0.25rem; margin-right: 0.15rem; }
.tokens .unseen { color: #999; text-decoration: line-through; }
table { border-collapse: collapse; font-size: 0.9rem; margin-top: 0.5rem; }
td, th { padding: 0.1rem 0.8rem 0.1rem 0; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
section { border-top: 1px solid #ddd; padding-top: 0.5rem; margin-top: 1rem; }
"""


def render_html(explanations: list[Explanation], info: dict[str, Any]) -> str:
    """One self-contained page (inline CSS, no scripts, nothing fetched); every token, label and path escaped."""
    sections = "\n".join(html_section(number, explained, info)
                         for number, explained in enumerate(explanations, start=1))
    meta = (f"{html.escape(info['checkpoint'])}: attributions of {html.escape(info['attributions_of'])}"
            + (f", temperature {info['temperature']:.3g}" if info["temperature"] != 1.0 else "")
            + (f", ensemble mix {info['mix']:.2f} (network) / {1 - info['mix']:.2f} (n-gram)"
               if info["mix"] is not None else ""))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>textclf explain</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>textclf explain</h1>\n<p class=\"meta\">{meta}</p>\n{sections}\n"
            "<p class=\"legend\">Green tokens speak for the label, red ones against it; the stronger the colour, the "
            "larger the share. Struck-out tokens were cut by max_length: the model never read them. Hover a token "
            "for its value.</p>\n</body>\n</html>\n")


def html_section(number: int, explained: Explanation, info: dict[str, Any]) -> str:
    largest, spans, values = largest_value(explained), [], explained.attributions()
    per_member = {name: explained.member_values(name) for name in explained.members}
    for i, (token, value) in enumerate(zip(explained.tokens, values)):
        if value is None:
            spans.append(f'<span class="unseen" title="cut by max_length">{html.escape(token)}</span>')
            continue
        (red, green, blue), strength = colour(value, largest)
        parts = ", ".join(f"{name} {member[i]:+.3f}" for name, member in per_member.items())
        spans.append(f'<span style="background: rgba({red}, {green}, {blue}, {strength:.2f})" '
                     f'title="{html.escape(f"{value:+.4f} ({parts})")}">{html.escape(token)}</span>')
    rows = "".join(f"<tr><td>{html.escape(explained.tokens[i])}</td><td class=\"num\">{values[i]:+.3f}</td>"
                   + "".join(f"<td class=\"num\">{member[i]:+.3f}</td>" for member in per_member.values()) + "</tr>"
                   for i in top_positions(explained))
    header = "".join(f"<th>{html.escape(name)}</th>" for name in per_member)
    return (f"<section>\n<h2>text {number}: {html.escape(explained.label)} "
            f"{explained.probabilities[explained.label]:.3f}</h2>\n"
            f"<p class=\"sum\">{html.escape(summary_line(explained, info))}</p>\n"
            f"<p class=\"tokens\">{' '.join(spans)}</p>\n"
            f"<table><tr><th>token</th><th>attribution</th>{header}</tr>{rows}</table>\n</section>")
