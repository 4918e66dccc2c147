"""The IMDb benchmark: textclf beside the plain reference baselines, in one run on one machine.

usage: python bench/run_bench.py [--archive PATH] [--configs configs/cnn.yaml configs/lstm.yaml ...]
                                 [--reference-dir ../shared/reference] [--skip-reference]
Measures prepare, training throughput and accuracy, batch and cold single predictions and peak memory for
each config, runs the reference scripts for the speed ratios, and writes bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "datasets" / "imdb" / "aclImdb_v1.tar.gz"
DEFAULT_REFERENCE = ROOT.parent / "shared" / "reference"
SAMPLE_TEXT = "A wonderful film: sharp writing, great acting, and an ending that stays with you."


@dataclass
class Measured:
    wall: float
    cpu: float  # user + sys seconds of the process and its children
    max_rss_mb: float
    output: str

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


@dataclass
class ConfigResult:
    config: str
    train_wall: float = 0.0
    train_rss_mb: float = 0.0
    epochs: int = 0
    train_reviews_per_s: float = 0.0
    test_accuracy: float = 0.0
    predict_reviews_per_s: float = 0.0
    cold_predict_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def measure(command: list[str], env: dict | None = None, stdin_path: Path | None = None) -> Measured:
    """Run a command; wall time, CPU time and peak RSS (of it and its waited-for children)."""
    start = time.perf_counter()
    stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=stdin,
                               env={**os.environ, **(env or {})}, cwd=ROOT)
    output = process.stdout.read().decode("utf-8", errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"failed ({code}): {' '.join(command)}\n{output[-3000:]}")
    return Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output)


def textclf(*args: str) -> list[str]:
    return [sys.executable, "-m", "textclf_cli", *args]


def bench_overrides(archive: Path) -> list[str]:
    sets = [f"data.train={archive}", f"data.prepared_dir={WORK / 'prepared'}", f"output.runs_dir={WORK / 'runs'}"]
    return [part for value in sets for part in ("--set", value)]


def run_prepare(config: str, archive: Path) -> Measured:
    prepared = WORK / "prepared"
    if prepared.exists():
        subprocess.run(["rm", "-rf", str(prepared)], check=True)
    return measure(textclf("prepare", config, *bench_overrides(archive)))


def run_config(config: str, archive: Path, texts_file: Path) -> ConfigResult:
    result = ConfigResult(config)
    trained = measure(textclf("train", config, "--quiet", *bench_overrides(archive)))
    run_dir = Path(trained.output.strip().splitlines()[-1])
    result.train_wall, result.train_rss_mb = trained.wall, trained.max_rss_mb
    with (run_dir / "history.csv").open() as handle:
        result.history = list(csv.DictReader(handle))
    result.epochs = len(result.history)
    status = json.loads((run_dir / "status.json").read_text())
    n_train = status.get("train_examples") or 22500
    seconds = [float(row["seconds"]) for row in result.history]
    result.train_reviews_per_s = n_train / statistics.median(seconds)
    measure(textclf("evaluate", str(run_dir), "--quiet"))
    metrics = json.loads((run_dir / "evaluation" / "test" / "metrics.json").read_text())
    result.test_accuracy = metrics["accuracy"]
    out = WORK / "predictions.jsonl"
    predicted = measure(textclf("predict", str(run_dir), "--input", str(texts_file), "--format", "jsonl",
                                "--output", str(out), "--quiet"))
    n_texts = sum(1 for _ in texts_file.open(encoding="utf-8"))
    result.predict_reviews_per_s = n_texts / predicted.wall
    cold = [measure(textclf("predict", str(run_dir), SAMPLE_TEXT, "--format", "jsonl")).wall for _ in range(3)]
    result.cold_predict_s = statistics.median(cold)
    return result


def write_test_texts(archive: Path) -> Path:
    """The 25k test reviews, one per line (the input of the batch-prediction measurement)."""
    sys.path.insert(0, str(ROOT))
    from textclf_cli.data.sources import read_imdb

    path = WORK / "test_texts.txt"
    if not path.exists():
        texts = read_imdb(archive)["test"].texts
        path.write_text("".join(" ".join(text.split()) + "\n" for text in texts), encoding="utf-8")
    return path


def extract_for_reference(archive: Path) -> Path:
    target = WORK / "aclImdb"
    if not (target / "test").is_dir():
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("aclImdb/")
                       and ".." not in m.name]
            tar.extractall(WORK, members=members, filter="data")
    return target


def run_reference(reference_dir: Path, imdb_root: Path) -> dict[str, float]:
    env = {"IMDB_ROOT": str(imdb_root), "PYTHONPATH": str(reference_dir)}
    found: dict[str, float] = {}
    sk = measure([sys.executable, str(reference_dir / "sklearn_baselines.py")], env=env).output
    for name, pattern in (("tfidf", r"TFIDF.*?test_acc=([\d.]+) total=([\d.]+)s"),
                          ("nbsvm", r"NBSVM.*?test_acc=([\d.]+) total=([\d.]+)s")):
        match = re.search(pattern, sk)
        if match:
            found[f"{name}_acc"], found[f"{name}_s"] = float(match.group(1)), float(match.group(2))
    cnn = measure([sys.executable, str(reference_dir / "torch_baselines.py"), "cnn", "--epochs", "1",
                   "--threads", "2"], env=env).output
    match = re.search(r"cnn epoch 1: train [\d.]+s \(\d+ reviews, (\d+) reviews/s.*?inference bs256: test (\d+)", cnn,
                      re.S)
    if match:
        found["ref_cnn_train_rps"], found["ref_cnn_predict_rps"] = float(match.group(1)), float(match.group(2))
    lstm = measure([sys.executable, str(reference_dir / "torch_baselines.py"), "lstm", "--epochs", "1",
                    "--threads", "2", "--max-epoch-min", "1.5", "--limit", "3000"], env=env).output
    match = re.search(r"lstm epoch 1: train [\d.]+s \(\d+ reviews, (\d+) reviews/s", lstm)
    if match:
        found["ref_lstm_train_rps"] = float(match.group(1))
    return found


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return (f"{os.cpu_count()} cores ({cpu}), python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def check(ok: bool) -> str:
    return "met" if ok else "**not met**"


def render(prepare: Measured, results: list[ConfigResult], reference: dict[str, float]) -> str:
    lines = ["# Benchmark results (IMDb, full 25k train / 25k test)", "",
             f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {machine_line()}.",
             "Reference scripts ran in the same session on the same machine (`bench/run_bench.py`).", "",
             "## textclf", "",
             "| config | epochs | test accuracy | train reviews/s (median epoch, incl. validation) | train wall | "
             "peak RSS | predict --input 25k | cold single predict |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| `{r.config}` | {r.epochs} | {r.test_accuracy:.2%} | {r.train_reviews_per_s:.0f} | "
                     f"{r.train_wall:.0f} s | {r.train_rss_mb:.0f} MB | {r.predict_reviews_per_s:.0f} reviews/s | "
                     f"{r.cold_predict_s:.2f} s |")
    lines += ["", f"`prepare` of the whole archive: {prepare.wall:.1f} s wall, {prepare.cores:.2f} cores busy on "
              f"average, peak RSS {prepare.max_rss_mb:.0f} MB.", "", "## Reference baselines (same run)", ""]
    for key, label in (("tfidf", "TF-IDF(1-2)+LR"), ("nbsvm", "NBSVM")):
        if f"{key}_acc" in reference:
            lines.append(f"- {label}: {reference[f'{key}_acc']:.2%} test accuracy in {reference[f'{key}_s']:.0f} s")
    for key, label in (("ref_cnn_train_rps", "plain TextCNN training"), ("ref_cnn_predict_rps",
                       "plain TextCNN inference"), ("ref_lstm_train_rps", "plain BiLSTM training")):
        if key in reference:
            lines.append(f"- {label}: {reference[key]:.0f} reviews/s")
    lines.append("  (plain TextCNN: one full epoch; plain BiLSTM: the first 1.5 minutes of an epoch over a random "
                 "3,000-review sample, since a full epoch takes about 15 minutes)")
    lines += ["", "## Targets", "", "| target | measured | |", "|---|---|---|"]
    lines += target_rows(prepare, results, reference)
    return "\n".join(lines) + "\n"


def target_rows(prepare: Measured, results: list[ConfigResult], reference: dict[str, float]) -> list[str]:
    by_model = {Path(r.config).stem: r for r in results}
    rows = []
    if "cnn" in by_model:
        cnn = by_model["cnn"]
        rows.append(f"| cnn.yaml test accuracy >= 90.0% | {cnn.test_accuracy:.2%} | {check(cnn.test_accuracy >= 0.90)} |")
        if "ref_cnn_train_rps" in reference:
            ratio = cnn.train_reviews_per_s / reference["ref_cnn_train_rps"]
            rows.append(f"| CNN training throughput >= 1.5x reference | {ratio:.2f}x | {check(ratio >= 1.5)} |")
        rows.append(f"| train cnn.yaml (cached data) <= 5 min | {cnn.train_wall / 60:.1f} min | "
                    f"{check(cnn.train_wall <= 300)} |")
        rows.append(f"| predict --input 25k (CNN) >= 3,000 reviews/s | {cnn.predict_reviews_per_s:.0f} | "
                    f"{check(cnn.predict_reviews_per_s >= 3000)} |")
    if "lstm" in by_model:
        lstm = by_model["lstm"]
        rows.append(f"| lstm.yaml test accuracy >= 90.0% | {lstm.test_accuracy:.2%} | "
                    f"{check(lstm.test_accuracy >= 0.90)} |")
        if "ref_lstm_train_rps" in reference:
            ratio = lstm.train_reviews_per_s / reference["ref_lstm_train_rps"]
            rows.append(f"| LSTM training throughput >= 4x reference | {ratio:.1f}x | {check(ratio >= 4)} |")
        rows.append(f"| train lstm.yaml <= 15 min | {lstm.train_wall / 60:.1f} min | {check(lstm.train_wall <= 900)} |")
    best = max(results, key=lambda r: r.test_accuracy)
    rows.append(f"| some shipped config >= 91.2% | {best.test_accuracy:.2%} (`{best.config}`) | "
                f"{check(best.test_accuracy >= 0.912)} |")
    rows.append(f"| prepare <= 30 s, both cores | {prepare.wall:.1f} s, {prepare.cores:.2f} cores | "
                f"{check(prepare.wall <= 30)} |")
    cold = max(r.cold_predict_s for r in results)
    rows.append(f"| cold single predict <= 2.0 s | {cold:.2f} s (slowest config) | {check(cold <= 2.0)} |")
    rss = max(r.train_rss_mb for r in results)
    rows.append(f"| peak training RSS <= 3 GB | {rss:.0f} MB | {check(rss <= 3072)} |")
    return rows


def kept_suite_section(path: Path) -> str:
    """The section bench/run_suite.py owns in RESULTS.md, so that rewriting this benchmark's part keeps it."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = old.find("<!-- suite:begin -->"), old.find("<!-- suite:end -->")
    return "\n" + old[start:end + len("<!-- suite:end -->")] + "\n" if 0 <= start < end else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--configs", nargs="+", default=["configs/cnn.yaml", "configs/lstm.yaml"])
    parser.add_argument("--reference-dir", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    archive = args.archive.resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    texts_file = write_test_texts(archive)
    reference = {} if args.skip_reference else run_reference(args.reference_dir, extract_for_reference(archive))
    print(f"reference: {reference}", flush=True)
    prepare = run_prepare(args.configs[0], archive)
    print(f"prepare: {prepare.wall:.1f}s {prepare.cores:.2f} cores", flush=True)
    for config in args.configs[1:]:  # cached before timing training, like configs[0] above
        measure(textclf("prepare", config, *bench_overrides(archive)))
    results = []
    for config in args.configs:
        results.append(run_config(config, archive, texts_file))
        print(results[-1], flush=True)
    args.output.write_text(render(prepare, results, reference) + kept_suite_section(args.output), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
