"""`textclf serve` under concurrent load on loopback, beside `textclf predict --input` on the same texts, in one run.

usage: PYTHONPATH=. python bench/bench_serve.py EXPERIMENT_DIR --archive ARCHIVE [--duration 30] [--write]

EXPERIMENT_DIR is a trained experiment (runs/<experiment>, served from its best run); its texts are the IMDb test
reviews of ARCHIVE. Measures:
  1. `textclf predict EXPERIMENT_DIR/best --input` on --cli-texts reviews: texts/s (start-up included);
  2. 16 concurrent clients for --duration s, one review per request: requests/s, p50/p99, errors;
  3. 4 clients, 64 reviews per request: texts/s (and its ratio to the CLI's), p50/p99, errors;
  4. a promotion under load: a second experiment on the bundled quickstart sample (a weak first run as best),
     served while 16 clients send single texts and `textclf train --promote-if-better` runs beside them: when
     best moved, when the first answer came from the new run, the new model's load + warm-up time, and errors.
The load generator is a minimal HTTP/1.1 keep-alive client on asyncio (httpx costs more CPU per request than the
server does), and it shares the machine's cores with the server: figures on a shared 2-core machine are noisy,
so compare the ratios taken in this one run. --write puts the section into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- serve-bench:begin -->", "<!-- serve-bench:end -->"
TEXTCLF = [sys.executable, "-m", "textclf_cli"]


def imdb_test_reviews(archive: Path, count: int, seed: int = 0) -> list[str]:
    texts = []
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and parts[1:2] == ["test"] and parts[2:3] in (["pos"], ["neg"]):
                texts.append(tar.extractfile(member).read().decode("utf-8").replace("\n", " ").strip())
    random.Random(seed).shuffle(texts)
    return texts[:count]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0  # connection failures and non-200 answers
    run_ids: list[tuple[float, str]] = field(default_factory=list)  # (time, run id) when watching a swap


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:"))
    return status, await reader.readexactly(length)


async def client(port: int, bodies: list[bytes], stop_at: float, load: Load, watch: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = random.randrange(len(bodies))
    while time.perf_counter() < stop_at:
        body = bodies[index % len(bodies)]
        index += 1
        request = (b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
        started = time.perf_counter()
        try:
            writer.write(request)
            status, payload = await read_response(reader)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            load.errors += 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            continue
        load.latencies.append(time.perf_counter() - started)
        load.statuses[status] += 1
        load.errors += status != 200
        if watch:
            at = payload.find(b'"run_id": "') + 11
            load.run_ids.append((time.perf_counter(), payload[at: payload.find(b'"', at)].decode()))
    writer.close()


async def run_load(port: int, texts: list[str], clients: int, per_request: int, seconds: float,
                   watch: bool = False, until=None, load: Load | None = None) -> tuple[Load, float]:
    bodies = [json.dumps({"texts": texts[i: i + per_request]}).encode()
              for i in range(0, len(texts) - per_request + 1, per_request)]
    load = load or Load()
    started = time.perf_counter()
    stop_at = started + seconds
    tasks = [asyncio.create_task(client(port, bodies, stop_at, load, watch)) for _ in range(clients)]
    if until is not None:  # a promotion: run until it is done (and a few seconds more), at most `seconds`
        while not tasks[0].done() and not until():
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return load, time.perf_counter() - started


def summary(load: Load, seconds: float, per_request: int) -> dict[str, float]:
    latencies = np.array(load.latencies) * 1000
    return {"requests_per_s": len(latencies) / seconds, "texts_per_s": len(latencies) * per_request / seconds,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "requests": len(latencies), "errors": load.errors}


def start_server(target: Path, port: int, log: Path, *options: str) -> subprocess.Popen:
    import urllib.request

    process = subprocess.Popen([*TEXTCLF, "serve", str(target), "--port", str(port), *options],
                               stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"serve exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    sys.exit("serve did not get ready within 120 s")


def get_json(port: int, route: str) -> dict:
    import urllib.request

    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=10))


def cli_predict(target: Path, texts: list[str], work: Path) -> dict[str, float]:
    inputs, output = work / "texts.txt", work / "predictions.jsonl"
    inputs.write_text("".join(text + "\n" for text in texts), encoding="utf-8")
    started = time.perf_counter()
    subprocess.run([*TEXTCLF, "predict", str(target), "--input", str(inputs), "--format", "jsonl", "-o", str(output),
                    "-q"], check=True)
    seconds = time.perf_counter() - started
    return {"texts_per_s": len(texts) / seconds, "seconds": seconds}


def promotion_under_load(texts: list[str], work: Path, seconds: float) -> dict[str, object]:
    """Serve a weak quickstart run as best; train a better one with --promote-if-better while 16 clients ask."""
    runs = work / "promotion-runs"
    common = ["--set", f"output.runs_dir={runs}", "--set", "experiment=serve-bench-promotion", "--set",
              "model.ensemble=null", "-q", "--promote-if-better"]
    subprocess.run([*TEXTCLF, "train", "configs/quickstart.yaml", *common, "--set", "train.epochs=1", "--set",
                    "train.lr=0.00001"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    experiment = runs / "serve-bench-promotion"
    port = free_port()
    server = start_server(experiment, port, work / "serve-promotion.log", "--reload-every", "1s")
    old = get_json(port, "/v1/model")["run_id"]
    trainer = subprocess.Popen([*TEXTCLF, "train", "configs/quickstart.yaml", *common, "--set", "train.epochs=2"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    moved: list[float] = []
    load = Load()

    def promoted() -> bool:
        best = experiment / "best"
        if not moved and best.exists() and best.resolve().name != old:
            moved.append(time.perf_counter())
        return trainer.poll() is not None and any(run_id != old for _, run_id in load.run_ids)

    _, elapsed = asyncio.run(run_load(port, texts, 16, 1, seconds, watch=True, until=promoted, load=load))
    trainer.wait()
    new = get_json(port, "/v1/model")
    server.terminate()
    server.wait(timeout=60)
    first_new = next((at for at, run_id in load.run_ids if run_id != old), None)
    return {"old": old, "new": new["run_id"], "load_seconds": new["load_seconds"],
            "promotion_to_first_answer_s": None if not moved or first_new is None else first_new - moved[0],
            **summary(load, elapsed, 1)}


def section(cli: dict, single: dict, batch: dict, promotion: dict | None, args: argparse.Namespace) -> str:
    ratio = batch["texts_per_s"] / cli["texts_per_s"]
    lines = [BEGIN, "", "## Serving under load (`textclf serve`)", "",
             f"`PYTHONPATH=. python bench/bench_serve.py {args.experiment} --archive {args.archive} --write` on "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with the load generator "
             f"(load average {os.getloadavg()[0]:.1f} when the section was written; machines are shared, so "
             f"compare the ratios, taken in this one run). Model: the best run of `{args.experiment}` served with defaults "
             f"(--max-batch 256, --max-wait-ms 5); texts: IMDb test reviews.", "",
             "| load | requests/s | texts/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|",
             f"| 16 clients, 1 text per request, {args.duration:.0f} s | {single['requests_per_s']:,.0f} | "
             f"{single['texts_per_s']:,.0f} | {single['p50_ms']:.1f} | {single['p99_ms']:.1f} | {single['errors']} |",
             f"| 4 clients, 64 texts per request, {args.duration:.0f} s | {batch['requests_per_s']:,.1f} | "
             f"{batch['texts_per_s']:,.0f} | {batch['p50_ms']:.1f} | {batch['p99_ms']:.1f} | {batch['errors']} |",
             f"| `textclf predict --input` ({args.cli_texts:,} texts, start-up included) | | "
             f"{cli['texts_per_s']:,.0f} | | | |", "",
             f"64-text requests reach **{ratio:.2f}x** the batch CLI's texts/s (target 0.7x); single-text p99 "
             f"{single['p99_ms']:.1f} ms (target < 100 ms) at {single['requests_per_s']:,.0f} requests/s "
             f"(target 1,000)."]
    if promotion is not None:
        swap = promotion["promotion_to_first_answer_s"]
        lines += ["", f"A promotion under load (16 single-text clients; a second experiment on the quickstart "
                      f"sample whose best was a weak run, while `textclf train --promote-if-better` ran beside "
                      f"them): best moved {promotion['old']} -> {promotion['new']}; the new model loaded and "
                      f"warmed up in {promotion['load_seconds']:.2f} s beside the old one, and the first answer from "
                      f"it came {'n/a' if swap is None else f'{swap:.2f} s'} after the link moved (--reload-every "
                      f"1s). {promotion['requests']:,} requests across the swap, **{promotion['errors']} errors**, "
                      f"p99 {promotion['p99_ms']:.1f} ms (the training shared the cores)."]
    return "\n".join([*lines, "", END])


def write_section(text: str) -> None:
    results = RESULTS.read_text(encoding="utf-8")
    if BEGIN in results:
        results = results[: results.index(BEGIN)] + text + results[results.index(END) + len(END):]
    else:
        results = results.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS.write_text(results, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--archive", type=Path, default=ROOT / "data" / "aclImdb_v1.tar.gz")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--cli-texts", type=int, default=10_000)
    parser.add_argument("--no-promotion", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    texts = imdb_test_reviews(args.archive, max(args.cli_texts, 4096))
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
        work = Path(folder)
        cli = cli_predict(args.experiment / "best", texts[: args.cli_texts], work)
        print(f"cli: {cli}", flush=True)
        port = free_port()
        server = start_server(args.experiment, port, work / "serve.log", "--reload-every", "0")
        print(f"serving: {get_json(port, '/v1/model')['scorer']}", flush=True)
        single = summary(*asyncio.run(run_load(port, texts, 16, 1, args.duration)), 1)
        print(f"single: {single}", flush=True)
        batch = summary(*asyncio.run(run_load(port, texts, 4, 64, args.duration)), 64)
        print(f"batch: {batch}", flush=True)
        server.terminate()
        server.wait(timeout=60)
        promotion = None if args.no_promotion else promotion_under_load(texts, work, 600)
        print(f"promotion: {promotion}", flush=True)
    text = section(cli, single, batch, promotion, args)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
