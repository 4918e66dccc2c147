"""The benchmark suite: default CNN and LSTM on every shared dataset, the shipped IMDb configs, TF-IDF+LR beside them.

usage: python bench/run_suite.py [--datasets-dir ../shared/datasets] [--only mr,cr ...] [--skip-imdb]
                                 [--precision fp32] [--set train.compile=true ...] [--section suite-gpu]
                                 [--seeds 42,1,2] [--models cnn,configs/cnn.yaml]
       python bench/run_suite.py --from-json bench/work/a.json bench/work/b.json --section suite-gpu
Every textclf command runs as its own subprocess, so one failed run is a row marked failed and the suite goes on.
Writes its table between `<!-- suite:begin -->` and `<!-- suite:end -->` in bench/RESULTS.md (the rest of the
file is kept) and every number to bench/work/suite.json; `--section NAME` writes NAME's markers and NAME.json, so
a GPU run or a compiled run keeps its own table beside the CPU one. `--seeds` trains every model once per seed (the
seed also carves the validation split) and adds a table of each model's mean over its seeds: a test set of
1,000-2,000 texts moves a single run by about a point. `--from-json` runs nothing: it writes the
section from saved JSON files, in order (a suite split into parts on a machine lent for minutes at a time).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "suite"
RESULTS = ROOT / "bench" / "RESULTS.md"
SUITE_JSON = ROOT / "bench" / "work" / "suite.json"
DEFAULT_DATASETS = ROOT.parent / "shared" / "datasets"
CSV_DATASETS = ("mr", "subj", "cr", "mpqa", "agnews", "banking77", "r52")
IMDB = "imdb"
IMDB_ARCHIVE = Path("imdb") / "aclImdb_v1.tar.gz"
SHIPPED_CONFIGS = ("configs/cnn.yaml", "configs/cnn-large.yaml", "configs/lstm.yaml")
SECTION = "suite"
MODELS = ("cnn", "lstm", *SHIPPED_CONFIGS)


def markers(section: str) -> tuple[str, str]:
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"


BEGIN, END = markers(SECTION)


@dataclass
class Floor:
    """TF-IDF(1-2)+LR on one dataset: the floor a neural model has to beat."""
    accuracy: float | None = None
    f1_macro: float | None = None
    seconds: float | None = None
    error: str | None = None
    fasttext_accuracy: float | None = None  # fastText beside it, with its usual settings (when installed)
    fasttext_f1_macro: float | None = None


@dataclass
class RunResult:
    dataset: str
    model: str  # "default cnn", "default lstm" or the shipped config's path
    seed: int | None = None  # None: the config's own
    status: str = "ok"  # ok | failed
    error: str | None = None
    run_dir: str | None = None
    prepare_s: float | None = None
    train_s: float | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    valid_accuracy: float | None = None
    test_accuracy: float | None = None
    f1_macro: float | None = None
    ece: float | None = None  # expected calibration error on test, with the run's temperature
    ece_uncalibrated: float | None = None
    first_epoch_s: float | None = None  # includes torch.compile's compiling and CUDA's warm-up
    epoch_s: float | None = None  # median of the later epochs
    gpu_memory_mb: float | None = None  # the largest epoch's peak, on CUDA
    commands: list[str] = field(default_factory=list)


class StepFailed(Exception):
    """A textclf subprocess exited non-zero; its message is the last line it wrote."""


# ---- the TF-IDF+LR floor (exactly ../shared/datasets/README.md) ----

def tfidf_floor(train_texts: list[str], train_labels: list[str], test_texts: list[str],
                test_labels: list[str]) -> Floor:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    model = LogisticRegression(C=10, max_iter=2000)
    model.fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = model.predict(vectorizer.transform(test_texts))
    return Floor(accuracy=float(accuracy_score(test_labels, predicted)),
                 f1_macro=float(f1_score(test_labels, predicted, average="macro")),
                 seconds=time.perf_counter() - start)


FASTTEXT_SETTINGS = {"wordNgrams": 2, "epoch": 25, "lr": 0.5}  # the settings fastText users start from


def fasttext_scores(train_texts: list[str], train_labels: list[str], test_texts: list[str],
                    test_labels: list[str]) -> tuple[float | None, float | None]:
    """fastText supervised with FASTTEXT_SETTINGS on lowercased one-line texts; (None, None) when not installed
    (pip install fasttext-wheel)."""
    try:
        import fasttext
    except ImportError:
        return None, None
    import tempfile

    from sklearn.metrics import accuracy_score, f1_score

    def line(text: str) -> str:
        return " ".join(text.lower().split())

    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as handle:
        for text, label in zip(train_texts, train_labels):
            handle.write(f"__label__{label.replace(' ', '_')} {line(text)}\n")
    model = fasttext.train_supervised(handle.name, verbose=0, seed=0, thread=2, **FASTTEXT_SETTINGS)
    Path(handle.name).unlink()
    # the binding's own predict: fasttext's Python wrapper calls np.array(copy=False), which numpy 2 refuses
    predicted = [model.f.predict(line(text), 1, 0.0, "strict")[0][1].removeprefix("__label__") for text in test_texts]
    gold = [label.replace(" ", "_") for label in test_labels]
    return float(accuracy_score(gold, predicted)), float(f1_score(gold, predicted, average="macro"))


def read_csv_split(path: Path) -> tuple[list[str], list[str]]:
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    return frame["text"].tolist(), frame["label"].tolist()


def read_imdb_archive(archive: Path) -> dict[str, tuple[list[str], list[str]]]:
    """aclImdb/{train,test}/{pos,neg}/*.txt as raw text, in name order (the reference scripts' reading)."""
    found: dict[str, list[tuple[str, str, str]]] = {"train": [], "test": []}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if (member.isfile() and len(parts) == 4 and parts[0] == "aclImdb" and parts[1] in found
                    and parts[2] in ("pos", "neg") and parts[3].endswith(".txt")):
                text = tar.extractfile(member).read().decode("utf-8")
                found[parts[1]].append((parts[2], parts[3], text))
    splits = {}
    for split, items in found.items():
        items.sort()
        splits[split] = ([text for _, _, text in items], [label for label, _, _ in items])
    return splits


def floor_for(dataset: str, datasets_dir: Path) -> Floor:
    try:
        if dataset == IMDB:
            splits = read_imdb_archive(datasets_dir / IMDB_ARCHIVE)
            train, test = splits["train"], splits["test"]
        else:
            train = read_csv_split(datasets_dir / dataset / "train.csv")
            test = read_csv_split(datasets_dir / dataset / "test.csv")
        floor = tfidf_floor(*train, *test)
        floor.fasttext_accuracy, floor.fasttext_f1_macro = fasttext_scores(*train, *test)
        return floor
    except Exception as exc:  # a broken dataset is a row in the table, not the end of the suite
        return Floor(error=f"{type(exc).__name__}: {exc}")


# ---- textclf runs, each a subprocess ----

def textclf(*args: str) -> list[str]:
    return [sys.executable, "-m", "textclf_cli", *args]


def run_step(command: list[str], result: RunResult) -> tuple[str, float]:
    """Run one textclf command; (stdout, wall seconds), or StepFailed with the error line it printed."""
    result.commands.append(shlex.join(command[1:]).replace("-m textclf_cli", "textclf", 1))
    print(f"$ {result.commands[-1]}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        message = (errors or lines or ["no output"])[-1].strip()
        raise StepFailed(f"exit {done.returncode}: {message}")
    return done.stdout, seconds


def default_config(dataset: str, model: str, datasets_dir: Path) -> dict:
    """Only `experiment`, `data` (format, train, test) and `model.type`, plus where the suite keeps its files."""
    if dataset == IMDB:
        data = {"format": "imdb", "train": str(datasets_dir / IMDB_ARCHIVE)}
    else:
        data = {"format": "csv", "train": str(datasets_dir / dataset / "train.csv"),
                "test": str(datasets_dir / dataset / "test.csv")}
    data["prepared_dir"] = str(WORK / "prepared")
    return {"experiment": f"suite-{dataset}-{model}", "data": data, "model": {"type": model},
            "output": {"runs_dir": str(WORK / "runs")}}


def write_config(config: dict, path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def train_and_evaluate(result: RunResult, config: Path, overrides: list[str], precision: str | None,
                       train_overrides: Sequence[str] = ()) -> RunResult:
    sets = [part for value in overrides for part in ("--set", value)]
    train_sets = sets + (["--set", f"train.precision={precision}"] if precision else [])
    train_sets += [part for value in train_overrides for part in ("--set", value)]
    try:
        _, result.prepare_s = run_step(textclf("prepare", str(config), *sets), result)
        out, result.train_s = run_step(textclf("train", str(config), "--quiet", *train_sets), result)
        run_dir = Path(out.strip().splitlines()[-1])
        result.run_dir = str(run_dir)
        read_training(run_dir, result)
        evaluate_args = ["--precision", precision] if precision else []
        run_step(textclf("evaluate", str(run_dir), "--split", "test", "--quiet", *evaluate_args), result)
        metrics = json.loads((run_dir / "evaluation" / "test" / "metrics.json").read_text(encoding="utf-8"))
        result.test_accuracy, result.f1_macro = metrics["accuracy"], metrics["f1_macro"]
        calibration = metrics.get("calibration") or {}
        result.ece, result.ece_uncalibrated = calibration.get("ece"), calibration.get("ece_uncalibrated")
    except Exception as exc:  # StepFailed, or a run folder without the files a completed run has
        result.status, result.error = "failed", str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}"
        print(f"  failed: {result.error}", flush=True)
    return result


def read_training(run_dir: Path, result: RunResult) -> None:
    """Epochs and best epoch from status.json; the best epoch's validation accuracy, epoch times and peak GPU
    memory from history.csv."""
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    result.epochs, result.best_epoch = status.get("epochs_completed"), status.get("best_epoch")
    with (run_dir / "history.csv").open(encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    best = [row for row in history if str(row.get("epoch")) == str(result.best_epoch)]
    if best and best[0].get("valid_accuracy") not in (None, ""):
        result.valid_accuracy = float(best[0]["valid_accuracy"])
    epoch_times = [float(row["seconds"]) for row in history if row.get("seconds") not in (None, "")]
    if epoch_times:
        result.first_epoch_s = epoch_times[0]
        result.epoch_s = statistics.median(epoch_times[1:] or epoch_times)
    memory = [float(row["gpu_memory_mb"]) for row in history if row.get("gpu_memory_mb") not in (None, "")]
    result.gpu_memory_mb = max(memory) if memory else None


def run_dataset(dataset: str, datasets_dir: Path, precision: str | None,
                train_overrides: Sequence[str] = (), seeds: Sequence[int | None] = (None,),
                models: Sequence[str] = MODELS) -> Iterator[RunResult]:
    """Each chosen model (`cnn`, `lstm`: the default configs; a shipped config's path, IMDb only) once per seed."""
    configs = [(f"default {model}", write_config(default_config(dataset, model, datasets_dir),
                                                 WORK / "configs" / f"{dataset}-{model}.yaml"), [])
               for model in ("cnn", "lstm") if model in models]
    if dataset == IMDB:
        archive = datasets_dir / IMDB_ARCHIVE
        # the shipped configs pin the official archive's sha256, which prepare checks; the shared copy is packed
        # differently (its README gives its own sha256), so the suite, which reads that copy, drops the pin
        configs += [(shipped, ROOT / shipped, [f"data.train={archive}", "data.sha256=null",
                                               f"data.prepared_dir={WORK / 'prepared'}", f"output.runs_dir={WORK / 'runs'}"])
                    for shipped in SHIPPED_CONFIGS if shipped in models]
    for model, config, overrides in configs:
        for seed in seeds:
            seeded = overrides + ([] if seed is None else [f"seed={seed}"])  # prepare too: the seed carves valid
            yield train_and_evaluate(RunResult(dataset, model, seed), config, seeded, precision, train_overrides)


# ---- the machine ----

def machine() -> dict:
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown CPU":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    import torch

    info = {"cpu": cpu, "cores": cores, "amx": sorted(flag for flag in flags if flag.startswith("amx")),
            "avx512_bf16": "avx512_bf16" in flags, "torch": torch.__version__, "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}
    if torch.cuda.is_available():  # device auto trains there
        properties = torch.cuda.get_device_properties(0)
        info["gpu"] = f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return info


# ---- the table and RESULTS.md ----

def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def margin(result: RunResult, floor: Floor | None) -> str:
    if result.test_accuracy is None or floor is None or floor.accuracy is None:
        return "-"
    points = (result.test_accuracy - floor.accuracy) * 100
    return f"{points:+.2f} ({'above' if points > 0 else 'below' if points < 0 else 'equal'})"


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def render_section(results: list[RunResult], floors: dict[str, Floor], info: dict, command: str,
                   precision: str | None, when: str, section: str = SECTION,
                   train_overrides: Sequence[str] = ()) -> str:
    amx = ", ".join(info["amx"]) if info["amx"] else "no"
    begin, end = markers(section)
    gpu = info.get("gpu")
    title = "default configs and shipped IMDb configs beside TF-IDF+LR" + (f", on {gpu}" if gpu else "")
    overrides = f" Every train also had {', '.join(f'`{value}`' for value in train_overrides)}." if train_overrides else ""
    lines = [begin, f"## Suite{'' if section == SECTION else f' ({section})'}: {title}", "",
             f"Measured {when} on {info['cores']} cores ({info['cpu']}); AMX: {amx}; avx512_bf16: "
             f"{'yes' if info['avx512_bf16'] else 'no'}; torch {info['torch']}, python {info['python']}, "
             f"{info['system']}{f'; GPU: {gpu}' if gpu else ''}. Precision: {precision or 'as each config says'}."
             f"{overrides}", "",
             "Command:", "", "```", command, "```", "",
             "Default = a config naming only `experiment`, `data` and `model.type`. Test accuracy and macro-F1 from "
             "`textclf evaluate RUN --split test`; train time is the wall time of `textclf train` with prepared data "
             "cached; validation accuracy is that of the best epoch. TF-IDF+LR is the floor of "
             "`../shared/datasets/README.md`, fitted in the same run; margin in points of test accuracy.", "",
             "| dataset | model / config | test acc. | macro-F1 | train time | epochs (best) | valid acc. | "
             "TF-IDF+LR acc. | TF-IDF+LR F1 | margin vs TF-IDF+LR | ECE (uncalibrated) |"
             + (" epoch 1 / median epoch | peak GPU memory |" if gpu else ""),
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|" + ("---:|---:|" if gpu else "")]
    for r in results:
        floor = floors.get(r.dataset)
        name = f"`{r.model}`" if r.model.endswith(".yaml") else r.model
        name += "" if r.seed is None else f", seed {r.seed}"
        if r.status != "ok":
            name += f" **failed**: {r.error}".replace("|", "/")
        epochs = "-" if r.epochs is None else f"{r.epochs} ({r.best_epoch})"
        lines.append(f"| {r.dataset} | {name} | {percent(r.test_accuracy)} | {percent(r.f1_macro)} | "
                     f"{minutes(r.train_s)} | {epochs} | {percent(r.valid_accuracy)} | "
                     f"{percent(floor.accuracy if floor else None)} | {percent(floor.f1_macro if floor else None)} | "
                     f"{margin(r, floor)} | {ece_text(r)} |" + (f" {seconds(r.first_epoch_s)} / {seconds(r.epoch_s)} | "
                                                f"{megabytes(r.gpu_memory_mb)} |" if gpu else ""))
    lines += seed_means(results, floors)
    lines += ["", "TF-IDF+LR per dataset:", ""]
    for dataset, floor in floors.items():
        if floor.error:
            lines.append(f"- {dataset}: **failed**: {floor.error}")
        else:
            fasttext = "" if floor.fasttext_accuracy is None else (
                f"; fastText ({', '.join(f'{k}={v}' for k, v in FASTTEXT_SETTINGS.items())}) accuracy "
                f"{percent(floor.fasttext_accuracy)}, macro-F1 {percent(floor.fasttext_f1_macro)}")
            lines.append(f"- {dataset}: accuracy {percent(floor.accuracy)}, macro-F1 {percent(floor.f1_macro)}, "
                         f"{floor.seconds:.1f} s (vectorize + fit + predict){fasttext}")
    return "\n".join(lines + ["", end])


def ece_text(result: RunResult) -> str:
    if result.ece is None:
        return "-"
    return f"{result.ece:.3f} ({result.ece_uncalibrated:.3f})" if result.ece_uncalibrated is not None else f"{result.ece:.3f}"


def seed_means(results: list[RunResult], floors: dict[str, Floor]) -> list[str]:
    """A table of each model's mean over its seeds, where some model ran with more than one seed."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.dataset, r.model), []).append(r)
    if all(len(runs) < 2 for runs in groups.values()):
        return []
    lines = ["", "Mean over seeds (failed runs left out; the margin is the mean's, the last column counts the seeds "
             "whose own run is above TF-IDF+LR):", "",
             "| dataset | model / config | seeds | mean test acc. | sd | min - max | mean macro-F1 | mean train time | "
             "TF-IDF+LR acc. | margin of the mean | seeds above |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for (dataset, model), runs in groups.items():
        done = [r for r in runs if r.test_accuracy is not None]
        floor = floors.get(dataset)
        if not done:
            continue
        accuracies = [r.test_accuracy for r in done]
        mean = RunResult(dataset, model, test_accuracy=statistics.fmean(accuracies))
        above = sum(floor is not None and floor.accuracy is not None and a > floor.accuracy for a in accuracies)
        spread = statistics.stdev(accuracies) if len(accuracies) > 1 else None
        f1s = [r.f1_macro for r in done if r.f1_macro is not None]
        times = [r.train_s for r in done if r.train_s is not None]
        name = f"`{model}`" if model.endswith(".yaml") else model
        lines.append(f"| {dataset} | {name} | {', '.join(str(r.seed) for r in done)} | {percent(mean.test_accuracy)} | "
                     f"{percent(spread)} | {percent(min(accuracies))} - {percent(max(accuracies))} | "
                     f"{percent(statistics.fmean(f1s) if f1s else None)} | "
                     f"{minutes(statistics.fmean(times) if times else None)} | "
                     f"{percent(floor.accuracy if floor else None)} | {margin(mean, floor)} | "
                     f"{above} of {len(done)} |")
    return lines


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} MB"


def replace_section(document: str, section: str, name: str = SECTION) -> str:
    """The document with its `name` section replaced (or appended); everything outside the markers is kept."""
    begin_marker, end_marker = markers(name)
    start, end = document.find(begin_marker), document.find(end_marker)
    if start != -1 and end > start:
        return document[:start] + section + document[end + len(end_marker):]
    return document.rstrip("\n") + ("\n\n" if document.strip() else "") + section + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--only", type=lambda value: [name.strip() for name in value.split(",") if name.strip()],
                        help="comma-separated datasets, e.g. mr,cr (default: all found)")
    parser.add_argument("--skip-imdb", action="store_true")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                        help="passed to every train as --set train.precision=...; default: each config's own")
    parser.add_argument("--set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every train, e.g. --set train.compile=true (repeatable)")
    parser.add_argument("--seeds", type=seed_list, default=[None], metavar="N,N,...",
                        help="train every model once per seed (default: the config's own seed, once)")
    parser.add_argument("--models", type=model_list, default=list(MODELS), metavar="NAME,NAME,...",
                        help=f"which models to train: {', '.join(MODELS)} (default: all)")
    parser.add_argument("--section", default=SECTION,
                        help="the RESULTS.md section (and bench/work/SECTION.json) to write; default: suite")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--json", type=Path, help="default: bench/work/SECTION.json")
    parser.add_argument("--from-json", type=Path, nargs="+", metavar="JSON",
                        help="write the section from these saved suite JSON files instead of running anything")
    args = parser.parse_args(argv)
    if not args.section.replace("-", "").isalnum():
        parser.error(f"--section {args.section!r}: letters, digits and '-' only")
    args.json = args.json or SUITE_JSON.with_name(f"{args.section}.json")
    return args


def seed_list(value: str) -> list[int]:
    try:
        seeds = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: comma-separated whole numbers, e.g. 42,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{value!r}: one or more different seeds, e.g. 42,1,2")
    return seeds


def model_list(value: str) -> list[str]:
    models = [part.strip() for part in value.split(",") if part.strip()]
    unknown = [model for model in models if model not in MODELS]
    if not models or unknown:
        raise argparse.ArgumentTypeError(f"{value!r}: choose from {', '.join(MODELS)}")
    return models


def chosen_datasets(args: argparse.Namespace) -> list[str]:
    names = [*CSV_DATASETS] + ([] if args.skip_imdb else [IMDB])
    if args.only:
        unknown = sorted(set(args.only) - {*CSV_DATASETS, IMDB})
        if unknown:
            sys.exit(f"error: --only: unknown dataset(s) {', '.join(unknown)}; choose from "
                     f"{', '.join([*CSV_DATASETS, IMDB])}")
        names = [name for name in names if name in args.only]
    missing = [name for name in names if not (args.datasets_dir / (IMDB_ARCHIVE if name == IMDB else
                                                                   Path(name) / "train.csv")).is_file()]
    if missing:
        sys.exit(f"error: {args.datasets_dir}: no data for {', '.join(missing)}; pass --datasets-dir or --only")
    return names


def section_from_json(paths: list[Path], section: str) -> str:
    """One section from the JSON files of a suite run in parts: every part's command, the first part's machine."""
    saved = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    floors = {name: Floor(**floor) for part in saved for name, floor in part["floors"].items()}
    results = [RunResult(**run) for part in saved for run in part["runs"]]
    commands = "\n".join(part["command"] for part in saved)
    dates = list(dict.fromkeys(part["date"] for part in saved))
    when = " and ".join([", ".join(dates[:-1]), dates[-1]] if len(dates) > 2 else dates)
    precisions = {part["precision"] for part in saved}
    overrides = list(dict.fromkeys(value for part in saved for value in part.get("train_overrides", [])))
    return render_section(results, floors, saved[0]["machine"], commands,
                          precisions.pop() if len(precisions) == 1 else "mixed", when, section, overrides)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        document = args.results.read_text(encoding="utf-8") if args.results.exists() else ""
        write_atomic(args.results, replace_section(document, section_from_json(args.from_json, args.section),
                                                   args.section))
        print(f"wrote the {args.section} section of {args.results}")
        return
    args.datasets_dir = args.datasets_dir.resolve()
    datasets = chosen_datasets(args)
    command = shlex.join(["python", "bench/run_suite.py", *(sys.argv[1:] if argv is None else argv)])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    info = machine()
    WORK.mkdir(parents=True, exist_ok=True)
    floors: dict[str, Floor] = {}
    results: list[RunResult] = []
    for dataset in datasets:
        print(f"== {dataset}", flush=True)
        floors[dataset] = floor_for(dataset, args.datasets_dir)
        print(f"  TF-IDF+LR: {floors[dataset]}", flush=True)
        for result in run_dataset(dataset, args.datasets_dir, args.precision, args.train_overrides, args.seeds,
                                  args.models):
            results.append(result)
            seeded = "" if result.seed is None else f" seed {result.seed}"
            print(f"  {result.model}{seeded}: test {percent(result.test_accuracy)} f1 {percent(result.f1_macro)} "
                  f"train {minutes(result.train_s)} ({result.status})", flush=True)
            # after each run, so a suite cut short still leaves its numbers
            write_atomic(args.json, json.dumps({"command": command, "date": when, "machine": info,
                                                "precision": args.precision, "train_overrides": args.train_overrides,
                                                "floors": {k: asdict(v) for k, v in floors.items()},
                                                "runs": [asdict(r) for r in results]}, indent=2) + "\n")
    document = args.results.read_text(encoding="utf-8") if args.results.exists() else ""
    section = render_section(results, floors, info, command, args.precision, when, args.section,
                             args.train_overrides)
    write_atomic(args.results, replace_section(document, section, args.section))
    print(f"wrote {args.results} and {args.json}")
    if any(r.status != "ok" for r in results) or any(f.error for f in floors.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
