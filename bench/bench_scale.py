"""The scale benchmark: prepare, one training epoch and predict on millions of IMDb-like reviews.

usage: python bench/bench_scale.py [--sizes 200000 2000000] [--predict-texts 200000]
                                              [--archive PATH] [--work bench/work] [--skip-train]

Builds CSVs of N reviews by resampling the 50,000 labelled IMDb reviews (with replacement, seeded) into
bench/work/ (git-ignored), then measures, each as its own `textclf` process:
  - `prepare` of each size: wall time, texts/s, CPU cores busy, peak RSS of the main process and of the
    whole process tree (main + tokenizer workers, summed, sampled every 0.2 s);
  - one epoch of a small CNN on the largest prepared size: wall time and peak RSS (anonymous vs. file-backed,
    the memory-mapped prepared arrays);
  - `predict --input` of the first --predict-texts reviews to a JSONL file: texts/s and peak RSS.
Writes its figures into its own section of bench/RESULTS.md (the other sections are left as they are).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "datasets" / "imdb" / "aclImdb_v1.tar.gz"
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Scale: millions of texts (bench/bench_scale.py)"
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Measured:
    wall: float
    cpu: float  # user + sys seconds of the process and its children
    main_peak_mb: float  # the textclf process alone
    tree_peak_mb: float  # textclf and its worker processes, summed, at the worst sample
    anon_at_peak_mb: float  # of the main process at its peak: heap, not the mapped files
    file_at_peak_mb: float  # of the main process at its peak: file-backed pages (memory-mapped arrays)
    output: str

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile of one process in kB (empty when it has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {key: int(value.split()[0]) for key, value in re.findall(r"^(VmRSS|RssAnon|RssFile):\s+(.+)$", text, re.M)}


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def measure(command: list[str], log_path: Path) -> Measured:
    """Run a command with its output in log_path; wall time, CPU time and sampled peak memory."""
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        peaks = {"main": 0, "tree": 0, "anon": 0, "file": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                main = _proc_status(process.pid)
                if main.get("VmRSS", 0) > peaks["main"]:
                    peaks.update(main=main["VmRSS"], anon=main.get("RssAnon", 0), file=main.get("RssFile", 0))
                tree = sum(_proc_status(pid).get("VmRSS", 0) for pid in _descendants(process.pid))
                peaks["tree"] = max(peaks["tree"], tree)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        stop.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    output = log_path.read_text()
    if process.returncode != 0:
        raise SystemExit(f"failed ({process.returncode}): {' '.join(command)}\n{output[-3000:]}")
    main_peak = max(peaks["main"], usage.ru_maxrss)  # ru_maxrss is exact; the samples can miss a short peak
    return Measured(wall, usage.ru_utime + usage.ru_stime, main_peak / 1024, max(peaks["tree"], main_peak) / 1024,
                    peaks["anon"] / 1024, peaks["file"] / 1024, output)


def textclf(*args: str) -> list[str]:
    return [sys.executable, "-m", "textclf_cli", *args]


# ---------------------------------------------------------------------------------------------------------
# data


def build_csv(archive: Path, size: int, path: Path, seed: int = 0) -> float:
    """`size` reviews resampled from IMDb's labelled 50k into a text,label CSV; returns its size in GB."""
    if path.exists():
        return path.stat().st_size / 1e9
    from textclf_cli.data.sources import read_imdb

    splits = read_imdb(archive)
    pool = [(text, label) for split in splits.values() for text, label in zip(split.texts, split.labels)]
    rng = random.Random(seed)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(size):
            writer.writerow(pool[rng.randrange(len(pool))])
    tmp.replace(path)
    return path.stat().st_size / 1e9


def write_config(work: Path, name: str, train_csv: Path, **sections: dict) -> Path:
    import yaml

    raw = {"experiment": name, "seed": 42,
           "data": {"format": "csv", "train": str(train_csv), "prepared_dir": str(work / "prepared")},
           "output": {"runs_dir": str(work / "runs")}}
    for key, value in sections.items():
        raw[key] = value
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# Small enough that one epoch over 1.8M texts fits in a benchmark run on 2 busy cores; the memory measured is
# that of the data path (memory-mapped arrays, batching), which does not depend on the model's size.
SMALL_CNN = {"model": {"type": "cnn", "embedding_dim": 16, "num_filters": 16, "filter_sizes": [3, 4, 5],
                       "dropout": 0.3, "pooling": "max"},
             "vocab": {"max_size": 30000, "min_freq": 2, "max_length": 64},
             "train": {"epochs": 1, "batch_size": 512, "lr": 0.002, "eval_batch_size": 1024, "precision": "auto",
                       "early_stopping_patience": None}}


# ---------------------------------------------------------------------------------------------------------
# the runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--predict-texts", type=int, default=200_000)
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "work")
    parser.add_argument("--phases", nargs="*", default=["prepare", "train", "predict"],
                        help="Which measurements to (re)run; the others keep their figures from earlier runs.")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    store = work / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results["load_at_start"] = f"{os.getloadavg()[0]:.1f}"
    largest = max(args.sizes)
    largest_config = work / f"scale_{largest}.yaml"
    if "prepare" in args.phases:
        results["prepare"] = []
        for size in args.sizes:
            csv_path = work / f"imdb_like_{size}.csv"
            gigabytes = build_csv(args.archive, size, csv_path)
            config = write_config(work, f"scale_{size}", csv_path, **SMALL_CNN)
            print(f"prepare {size:,} ({gigabytes:.2f} GB) ...", flush=True)
            measured = measure(textclf("prepare", str(config), "--force"), work / f"prepare_{size}.log")
            results["prepare"].append({"size": size, "gigabytes": gigabytes, **_figures(measured)})
            store.write_text(json.dumps(results, indent=2))
            print(f"  {measured.wall:.0f}s, main {measured.main_peak_mb:.0f} MB, tree {measured.tree_peak_mb:.0f} MB, "
                  f"{measured.cores:.2f} cores", flush=True)
    if "train" in args.phases:
        print(f"train one epoch on {largest:,} ...", flush=True)
        train = measure(textclf("train", str(largest_config)), work / f"train_{largest}.log")
        results["train"] = {"size": largest, **_figures(train)}
        store.write_text(json.dumps(results, indent=2))
        print(f"  {train.wall:.0f}s, main {train.main_peak_mb:.0f} MB", flush=True)
    if "predict" in args.phases and args.predict_texts:
        predict = predict_run(work, args.predict_texts, largest_config)
        results["predict"] = {"texts": args.predict_texts, **_figures(predict)}
        store.write_text(json.dumps(results, indent=2))
    write_results(results)


def _figures(measured: Measured) -> dict:
    figures = {key: value for key, value in vars(measured).items() if key != "output"}
    figures["cores"] = measured.cores
    figures["texts_per_s_logged"] = _logged_rate(measured.output)
    return figures


def predict_run(work: Path, count: int, config: Path) -> Measured:
    source = work / f"imdb_like_{count}.csv"
    output = work / "predictions.jsonl"
    print(f"predict --input {count:,} texts ...", flush=True)
    measured = measure(textclf("predict", str(config), "--input", str(source), "--format", "jsonl", "--output",
                               str(output)), work / "predict.log")
    lines = sum(1 for _ in output.open(encoding="utf-8"))
    if lines != count:
        raise SystemExit(f"predict wrote {lines} lines for {count} texts")
    output.unlink()
    print(f"  {measured.wall:.0f}s, main {measured.main_peak_mb:.0f} MB", flush=True)
    return measured


# ---------------------------------------------------------------------------------------------------------
# RESULTS.md


def _logged_rate(output: str) -> str:
    found = re.findall(r"([\d,.]+) (?:texts|reviews|examples)/s", output)
    return found[-1] if found else "?"


def write_results(results: dict) -> None:
    import torch

    lines = [SECTION, "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores "
             f"({platform.machine()}), python {platform.python_version()}, torch {torch.__version__}; load average "
             f"{results.get('load_at_start', '?')} at the start (on a shared machine wall times are upper bounds). "
             f"IMDb-like data: the 50,000 labelled IMDb reviews resampled with replacement into a text,label CSV; "
             f"valid carved from train (10%); default tokenizer (regexp); data.chunk_size 2000.", "",
             "| texts | CSV | prepare wall | per million texts | texts/s | CPU cores busy | peak RSS, main process | "
             "peak RSS, main + workers |", "|---|---|---|---|---|---|---|---|"]
    prepared = results.get("prepare", [])
    for row in prepared:
        size, wall = row["size"], row["wall"]
        lines.append(f"| {size:,} | {row['gigabytes']:.2f} GB | {wall:.0f} s | {wall / size * 1e6:.0f} s "
                     f"| {size / wall:,.0f} | {row['cores']:.2f} | {row['main_peak_mb']:,.0f} MB | "
                     f"{row['tree_peak_mb']:,.0f} MB |")
    if len(prepared) >= 2:
        first, last = prepared[0], prepared[-1]
        ratio = (last["wall"] / last["size"]) / (first["wall"] / first["size"])
        lines += ["", f"Per-text time at {last['size']:,} is {ratio:.2f}x that at {first['size']:,} (target <= 1.25x)."]
    train = results.get("train")
    if train:
        lines += ["", f"One epoch of a small CNN with the default n-gram ensemble member (embedding 16, 3x16 filters, "
                  f"max_length 64, batch 512, "
                      f"bf16 where native) on the {train['size']:,} prepared texts (90% train, then validation on "
                      f"10%): {train['wall']:.0f} s wall; peak RSS {train['main_peak_mb']:,.0f} MB "
                      f"(at the peak {train['anon_at_peak_mb']:,.0f} MB anonymous + {train['file_at_peak_mb']:,.0f} MB "
                      f"file-backed: the memory-mapped arrays and libraries, pages the kernel shares between processes "
                      f"and can drop); target <= 3 GB."]
    predict = results.get("predict")
    if predict:
        lines += ["", f"`predict --input` of {predict['texts']:,} texts (CSV) to JSONL, streamed: {predict['wall']:.0f} s "
                      f"wall ({predict['texts'] / predict['wall']:,.0f} texts/s including start-up), peak RSS "
                      f"{predict['main_peak_mb']:,.0f} MB (main process), {predict['tree_peak_mb']:,.0f} MB with its "
                      f"tokenizer workers."]
    _replace_section("\n".join(lines) + "\n")


def _replace_section(section: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
