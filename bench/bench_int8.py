"""int8 against fp32 ONNX exports of one run: file size, `predict --input` throughput, cold start, test accuracy.

usage: python bench/bench_int8.py RUN_DIR --test TEST.csv [--rounds 2] [--section NAME]

RUN_DIR is a trained run; its fp32 and int8 exports are (re)written by `textclf export`. TEST.csv has `text` and
`label` columns (for IMDb, write one from the archive with --imdb ARCHIVE). Throughput rounds alternate fp32 and
int8 so that both see the same machine load; the figures are medians. Prints a Markdown section for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def textclf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "textclf_cli", *args], capture_output=True, text=True, check=True)


def imdb_test_csv(archive: Path, out: Path) -> Path:
    """The 25k labelled test reviews as text,label rows."""
    rows = []
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 4 and parts[1] == "test" and parts[2] in ("pos", "neg"):
                rows.append((tar.extractfile(member).read().decode("utf-8"), parts[2]))
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return out


def predict_file(model: Path, test: Path, output: Path) -> float:
    started = time.perf_counter()
    textclf("predict", str(model), "--input", str(test), "--format", "jsonl", "--output", str(output), "--quiet")
    return time.perf_counter() - started


def accuracy(predictions: Path, test: Path) -> float:
    with test.open(encoding="utf-8", newline="") as handle:
        gold = [row["label"] for row in csv.DictReader(handle) if row["text"].strip()]
    # split on "\n" alone: a review may hold U+2028, which str.splitlines() would also split on
    got = [json.loads(line)["label"] for line in predictions.read_text(encoding="utf-8").split("\n") if line]
    assert len(got) == len(gold), (len(got), len(gold))
    return sum(a == b for a, b in zip(got, gold)) / len(gold)


def cold_start(model: Path, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        textclf("predict", str(model), "A wonderful, moving film.", "--format", "jsonl")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--test", type=Path, help="text,label CSV of the test split")
    parser.add_argument("--imdb", type=Path, help="write --test from this aclImdb archive first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--name", default=None, help="what to call the model in the table")
    args = parser.parse_args()
    work = args.run_dir / "bench-int8"
    work.mkdir(exist_ok=True)
    test = args.test or (work / "test.csv" if (work / "test.csv").is_file() else imdb_test_csv(args.imdb, work / "test.csv"))
    models = {}
    for level, options in (("fp32", []), ("int8", ["--quantize", "int8"])):
        models[level] = Path(textclf("export", str(args.run_dir), "--format", "onnx", *options).stdout.strip())
    seconds = {level: [] for level in models}
    for _ in range(args.rounds):  # alternating: both see the same load
        for level, model in models.items():
            seconds[level].append(predict_file(model, test, work / f"{level}.jsonl"))
    texts = (work / "fp32.jsonl").read_text(encoding="utf-8").count("\n")
    rows = {level: {"size": model.stat().st_size, "per_s": texts / statistics.median(seconds[level]),
                    "cold": cold_start(model), "accuracy": accuracy(work / f"{level}.jsonl", test)}
            for level, model in models.items()}
    name = args.name or args.run_dir.parent.name
    print(f"| model | export | file | predict --input ({texts:,} texts) | cold single predict | test accuracy |")
    print("|---|---|---:|---:|---:|---:|")
    for level, row in rows.items():
        print(f"| {name} | {level} | {row['size'] / 2**20:.1f} MB | {row['per_s']:,.0f}/s | {row['cold']:.2f} s | "
              f"{row['accuracy']:.2%} |")
    fp32, int8 = rows["fp32"], rows["int8"]
    print(f"\nint8 / fp32: {fp32['size'] / int8['size']:.2f}x smaller, {int8['per_s'] / fp32['per_s']:.2f}x the "
          f"throughput, accuracy {100 * (int8['accuracy'] - fp32['accuracy']):+.2f} points "
          f"(rounds: fp32 {[round(s, 1) for s in seconds['fp32']]} s, int8 {[round(s, 1) for s in seconds['int8']]} s)")


if __name__ == "__main__":
    main()
