"""Prediction speed and bf16-vs-fp32 accuracy of a trained IMDb model, side by side in one run.

usage: PYTHONPATH=. python bench/bench_predict.py CHECKPOINT [--archive data/aclImdb_v1.tar.gz] [--sample N]
Measures, on the 25k IMDb test reviews: tokenizing (nltk's RegexpTokenizer vs textclf's splitter), the model
in fp32 and bf16 (accuracy, agreement, speed), `textclf predict --input` end to end with --precision fp32 and
auto, and a cold single predict; then writes its section of bench/RESULTS.md.

On a shared machine wall-clock speeds swing with the load, so every row also gives CPU seconds (process and
children), and comparisons are ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- predict-speed:begin -->", "<!-- predict-speed:end -->"


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(function):
    wall, cpu = time.perf_counter(), cpu_seconds()
    value = function()
    return value, time.perf_counter() - wall, cpu_seconds() - cpu


def tokenizer_rows(texts: list[str]) -> list[str]:
    from nltk.tokenize import RegexpTokenizer

    from textclf_cli.data.text import WORD_OR_PUNCT, Tokenizer, TokenizerSettings

    ours = Tokenizer(TokenizerSettings(kind="regexp", lowercase=True, strip_html=True))
    nltk_based = Tokenizer(ours.settings)
    nltk_based._split = RegexpTokenizer(WORD_OR_PUNCT).tokenize
    rows, results = [], {}
    for name, tokenizer in (("nltk RegexpTokenizer", nltk_based), ("textclf regexp (regex engine)", ours)):
        results[name], wall, cpu = timed(lambda t=tokenizer: [t(text) for text in texts])
        rows.append(f"| tokenize (1 process), {name} | {len(texts) / cpu:,.0f} texts per CPU-second | "
                    f"{len(texts) / wall:,.0f} texts/s wall |")
    same = results["nltk RegexpTokenizer"] == results["textclf regexp (regex engine)"]
    rows.append(f"| identical tokens on these {len(texts):,} reviews | {same} | |")
    return rows


def model_rows(checkpoint: Path, texts: list[str], labels: np.ndarray) -> list[str]:
    from textclf_cli.data.encoding import encode_texts
    from textclf_cli.runs.checkpoint import load_model
    from textclf_cli.serving.inference import log_probabilities

    loaded = load_model(checkpoint, torch.device("cpu"))
    split = encode_texts(texts, loaded.tokenizer, loaded.vocab)
    rows, predicted = [], {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        log_probs, wall, cpu = timed(lambda d=dtype: log_probabilities(
            loaded.model, split, loaded.max_length, loaded.truncate, 128, torch.device("cpu"), d))
        predicted[name] = log_probs.argmax(1)
        accuracy = float((predicted[name] == labels).mean())
        rows.append(f"| model {name} ({torch.get_num_threads()} threads), batch 128 | accuracy {accuracy:.2%} | "
                    f"{len(texts) / cpu:,.0f} reviews per CPU-second, {len(texts) / wall:,.0f} reviews/s wall |")
    agreement = float((predicted["fp32"] == predicted["bf16"]).mean())
    rows.append(f"| bf16 vs fp32 predictions agree | {agreement:.2%} | |")
    return rows


def cli_rows(checkpoint: Path, texts: list[str]) -> list[str]:
    rows = []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        input_file = Path(folder) / "reviews.csv"
        with input_file.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text"])
            writer.writerows([text] for text in texts)
        for precision in ("fp32", "auto"):
            command = [sys.executable, "-m", "textclf_cli", "predict", str(checkpoint), "--input", str(input_file),
                       "--format", "jsonl", "--output", str(Path(folder) / "out.jsonl"), "--precision", precision,
                       "--quiet"]
            _, wall, cpu = timed(lambda c=command: subprocess.run(c, env=env, check=True, capture_output=True))
            rows.append(f"| `textclf predict --input` {len(texts):,} reviews, --precision {precision} | "
                        f"{len(texts) / wall:,.0f} reviews/s wall | {cpu:.1f} CPU-s |")
        rows.extend(cold_rows(checkpoint, Path(folder), env))
        rows.extend(onnx_rows(checkpoint, input_file, Path(folder), env, len(texts)))
    return rows


def cold_rows(checkpoint: Path, folder: Path, env: dict) -> list[str]:
    """A cold single predict of the run (its own ONNX export, written by train, when the export extra is installed)
    and of the checkpoint alone, copied out of its run (torch), median of 3 each."""
    run_dir = checkpoint.parent.parent
    alone = folder / "alone" / checkpoint.name
    alone.parent.mkdir()
    shutil.copy(checkpoint, alone)
    has_export = (run_dir / "export" / "model.onnx").is_file()
    cases = [(f"`textclf predict RUN` ({'its ONNX export, written by train' if has_export else 'no export: torch'})",
              run_dir, "auto")]
    cases += [(f"the checkpoint alone (torch), --precision {precision}", alone, precision) for precision in ("fp32", "auto")]
    rows = []
    for name, target, precision in cases:
        command = [sys.executable, "-m", "textclf_cli", "predict", str(target), "A wonderful film.", "--format", "jsonl",
                   "--precision", precision]
        walls = [timed(lambda c=command: subprocess.run(c, env=env, check=True, capture_output=True))[1]
                 for _ in range(3)]
        rows.append(f"| cold single predict, {name} (median of 3) | {np.median(walls):.2f} s wall | "
                    f"runs {', '.join(f'{w:.2f}' for w in walls)} s |")
    return rows


def onnx_rows(checkpoint: Path, input_file: Path, folder: Path, env: dict, count: int) -> list[str]:
    """The same model exported to ONNX and predicted from there (onnxruntime, no torch import), fp32."""
    model = folder / "model.onnx"
    subprocess.run([sys.executable, "-m", "textclf_cli", "export", str(checkpoint), "--format", "onnx", "--output",
                    str(model), "--quiet"], env=env, check=True, capture_output=True)
    command = [sys.executable, "-m", "textclf_cli", "predict", str(model), "--input", str(input_file), "--format",
               "jsonl", "--output", str(folder / "onnx.jsonl"), "--quiet"]
    _, wall, cpu = timed(lambda: subprocess.run(command, env=env, check=True, capture_output=True))
    rows = [f"| `textclf predict --input` {count:,} reviews from the ONNX export (fp32) | {count / wall:,.0f} "
            f"reviews/s wall | {cpu:.1f} CPU-s |"]
    walls = []
    for _ in range(3):
        command = [sys.executable, "-m", "textclf_cli", "predict", str(model), "A wonderful film.", "--format", "jsonl"]
        _, wall, cpu = timed(lambda c=command: subprocess.run(c, env=env, check=True, capture_output=True))
        walls.append(wall)
    rows.append(f"| cold single `textclf predict` from the ONNX export (median of 3) | {np.median(walls):.2f} s wall | "
                f"runs {', '.join(f'{w:.2f}' for w in walls)} s |")
    return rows


def write_section(lines: list[str]) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    section = "\n".join([BEGIN, *lines, END])
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--archive", type=Path, default=ROOT / "data" / "aclImdb_v1.tar.gz")
    parser.add_argument("--sample", type=int, default=25000, help="test reviews for the model and CLI rows")
    parser.add_argument("--tokenize-sample", type=int, default=5000)
    args = parser.parse_args()
    from textclf_cli.data.sources import read_imdb
    from textclf_cli.runs.checkpoint import load_model

    test = read_imdb(args.archive)["test"]
    label_ids = {label: i for i, label in enumerate(load_model(args.checkpoint, torch.device("cpu")).labels)}
    texts, labels = test.texts[: args.sample], np.array([label_ids[label] for label in test.labels[: args.sample]])
    if args.sample < len(test.texts):  # the archive lists neg before pos: take a balanced spread instead
        picks = np.random.default_rng(0).choice(len(test.texts), args.sample, replace=False)
        texts, labels = [test.texts[i] for i in picks], np.array([label_ids[test.labels[i]] for i in picks])
    load = os.getloadavg()[0]
    lines = [
        "## Prediction speed and bf16 (`bench/bench_predict.py`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}; avx512_bf16 {torch.cpu._is_avx512_bf16_supported()}, "
        f"AMX {torch.cpu._is_amx_tile_supported()}), torch {torch.__version__}, load average {load:.1f} at the "
        f"start: the machine is shared, so wall-clock rates are lower bounds and CPU-second rates are the "
        f"comparable figures.",
        f"Command: `PYTHONPATH=. python bench/bench_predict.py {args.checkpoint} --sample {args.sample}`",
        "",
        "| what | result | speed |",
        "|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for rows in (lambda: tokenizer_rows(test.texts[: args.tokenize_sample]),
                 lambda: model_rows(args.checkpoint, texts, labels), lambda: cli_rows(args.checkpoint, texts)):
        lines.extend(rows())
        print("\n".join(lines[-4:]), flush=True)
    write_section(lines)


if __name__ == "__main__":
    main()
