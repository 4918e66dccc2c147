"""`textclf serve` as a real process on a free loopback port, asked over real HTTP (httpx): predictions for binary,
multi-class and multi-label models, every bad request, the API key, a hot reload after a real promotion, a corrupt
new checkpoint refused while the old model answers, and SIGTERM with requests in flight."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli, tiny_config
from tests.e2e.test_multilabel import multilabel_config

httpx = pytest.importorskip("httpx", reason="the serve tests send their requests with httpx (the test extra)")
pytest.importorskip("fastapi", reason="serve needs the serve extra")

KEY = "s3cret-key"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(target: Path, *options: str, log: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A `textclf serve TARGET` process, once its /healthz answers and /readyz says ready; stopped afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stderr = (log or Path(os.devnull)).open("w")
    process = subprocess.Popen([sys.executable, "-m", "textclf_cli", "serve", str(target), "--port", str(port),
                                *options], stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"serve exited with {process.returncode}: {log and log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve did not answer /healthz within 60 s"
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        stderr.close()


def train(config: Path, *settings: str) -> Path:
    result = run_cli("train", str(config), "-q", "--promote-if-better",
                     *[arg for setting in settings for arg in ("--set", setting)])
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    """An experiment folder whose best run is a tiny binary CNN, evaluated on its test split."""
    run_dir = train(tiny_config(tmp_path_factory.mktemp("serve-binary"), train={"epochs": 1}))
    evaluated = run_cli("evaluate", str(run_dir), "-q")
    assert evaluated.exit_code == 0, evaluated.output
    return run_dir.parent


@pytest.fixture(scope="module")
def binary_server(binary: Path, tmp_path_factory) -> Iterator[str]:
    key_file = tmp_path_factory.mktemp("serve-key") / "key"
    key_file.write_text(KEY + "\n")
    with server(binary, "--api-key-file", str(key_file), "--max-texts", "20", "--max-chars", "300",
                "--reload-every", "0") as (url, _):
        yield url


def post(url: str, body: object, key: str | None = KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        return httpx.post(f"{url}/v1/predict", content=raw, headers=headers, timeout=30)
    return httpx.post(f"{url}/v1/predict", json=body, headers=headers, timeout=30)


def test_binary_predictions_have_the_record_shape_of_predict_jsonl(binary_server: str, binary: Path) -> None:
    texts = ["a great and wonderful film", "an awful, boring film"]
    response = post(binary_server, {"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"run_id": (binary / "best").resolve().name, "experiment": "tiny",
                             "scorer": "checkpoint"}
    cli = run_cli("predict", str(binary / "best"), *texts, "--format", "jsonl")
    assert cli.exit_code == 0, cli.output
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [p["label"] for p in body["predictions"]] == [e["label"] for e in expected]
    for served, printed in zip(body["predictions"], expected):
        assert served.keys() == printed.keys() == {"text", "label", "probabilities"}
        assert served["probabilities"] == pytest.approx(printed["probabilities"], abs=1e-5)
    top = post(binary_server, {"texts": texts, "top_k": 1}).json()["predictions"]
    assert [len(p["probabilities"]) for p in top] == [1, 1]


def test_concurrent_requests_each_get_their_own_answers(binary_server: str) -> None:
    texts = [f"great film number {i}" if i % 2 else f"awful film number {i}" for i in range(24)]
    answers: dict[int, dict] = {}

    def ask(i: int) -> None:
        answers[i] = post(binary_server, {"texts": [texts[i]]}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answers[i]["predictions"][0]["text"] for i in range(len(texts))] == texts


@pytest.mark.parametrize("body, raw, status, error", [
    (None, b'{"texts": ["a", ', 400, "malformed JSON: not valid JSON (EOF while parsing"),
    ({"text": ["a"]}, None, 422, "text: unknown field"),
    ({}, None, 422, "texts: is required"),
    ({"texts": ["fine", 3]}, None, 422, "texts[1]: must be a string"),
    ({"texts": []}, None, 422, "texts: must hold at least one text"),
    ({"texts": "just one"}, None, 422, "texts: must be a list of strings"),
    ({"texts": ["a"], "top_k": 0}, None, 422, "top_k: must be at least 1"),
    (["a"], None, 422, "body: must be a JSON object"),
    ({"texts": ["a"] * 21}, None, 413, "texts: 21 texts, more than --max-texts 20 in one request"),
    ({"texts": ["ok", "x" * 301]}, None, 413, "texts[1]: 301 characters, more than --max-chars 300"),
])
def test_bad_requests_get_a_4xx_json_error_naming_the_field(binary_server: str, body, raw, status: int,
                                                            error: str) -> None:
    response = post(binary_server, body, raw=raw)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}
    assert response.json()["error"].startswith(error), response.json()
    assert post(binary_server, {"texts": ["still up"]}).status_code == 200


def test_the_api_key_guards_every_route_but_healthz(binary_server: str) -> None:
    for key in (None, "wrong-key"):
        assert post(binary_server, {"texts": ["a"]}, key=key).status_code == 401
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        for route in ("/v1/model", "/readyz", "/metrics", "/docs", "/openapi.json"):
            response = httpx.get(f"{binary_server}{route}", headers=headers, timeout=10)
            assert response.status_code == 401, route
            assert response.json()["error"].startswith("unauthorized")
        assert httpx.post(f"{binary_server}/v1/reload", headers=headers, timeout=10).status_code == 401
    assert httpx.get(f"{binary_server}/healthz", timeout=10).status_code == 200
    good = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{binary_server}/docs", headers=good, timeout=10).status_code == 200
    assert "/v1/predict" in httpx.get(f"{binary_server}/openapi.json", headers=good, timeout=10).json()["paths"]


def test_model_readyz_and_metrics_describe_the_served_model(binary_server: str, binary: Path) -> None:
    good = {"Authorization": f"Bearer {KEY}"}
    model = httpx.get(f"{binary_server}/v1/model", headers=good, timeout=10).json()
    run_dir = (binary / "best").resolve()
    assert (model["run_id"], model["experiment"], model["labels"], model["task"], model["scorer"]) == \
        (run_dir.name, "tiny", ["neg", "pos"], "binary", "checkpoint")
    assert model["monitor"] == "valid_f1_macro" and model["loaded_at"]
    assert model["evaluation"]["test"]["num_examples"] == 30 and 0 <= model["evaluation"]["test"]["accuracy"] <= 1
    assert httpx.get(f"{binary_server}/readyz", headers=good, timeout=10).json()["status"] == "ready"
    post(binary_server, {"texts": ["one", "two", "three"]})
    metrics = httpx.get(f"{binary_server}/metrics", headers=good, timeout=10).text
    assert f'textclf_model_info{{run_id="{run_dir.name}",scorer="checkpoint"}} 1.0' in metrics
    for name in ("textclf_requests_total{route=\"/v1/predict\",status=\"200\"}", "textclf_texts_total{status=\"200\"}",
                 "textclf_request_latency_seconds_bucket", "textclf_batch_size_bucket", "textclf_requests_total{"
                 "route=\"/v1/predict\",status=\"401\"}"):
        assert name in metrics, name


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory) -> Path:
    config = tiny_config(tmp_path_factory.mktemp("serve-multiclass"), labels=("pos", "neg", "mixed"),
                         train={"epochs": 1})
    return train(config)


def test_multiclass_with_min_confidence_abstains_below_it(multiclass: Path) -> None:
    with server(multiclass, "--min-confidence", "0.5", "--reload-every", "0") as (url, _):
        texts = ["great superb loved", "awful terrible worst", "okay average fine", "the plot", "a", "scene"]
        predictions = post(url, {"texts": texts}).json()["predictions"]
    assert {label for p in predictions for label in p["probabilities"]} == {"pos", "neg", "mixed"}
    for p in predictions:
        top_label, top = max(p["probabilities"].items(), key=lambda item: item[1])
        assert p["abstained"] == (top < 0.5)
        assert p["label"] == (None if top < 0.5 else top_label)


def test_multilabel_predictions_give_label_sets(tmp_path_factory) -> None:
    run_dir = train(multilabel_config(tmp_path_factory.mktemp("serve-multilabel")))
    with server(run_dir, "--reload-every", "0") as (url, _):
        response = post(url, {"texts": ["stock market profit", "the team won the match"]})
        model = httpx.get(f"{url}/v1/model", timeout=10).json()
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert all(set(p) == {"text", "labels", "probabilities"} and isinstance(p["labels"], list) for p in predictions)
    assert model["task"] == "multilabel"


def corrupt_best(experiment_dir: Path) -> Path:
    """A new run folder whose best.pt is garbage, and best pointed at it: what a broken promotion would leave."""
    good = (experiment_dir / "best").resolve()
    broken = experiment_dir / "20991231-235959"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "status.json").write_text((good / "status.json").read_text())
    (broken / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint at all")
    (experiment_dir / "best").unlink()
    (experiment_dir / "best").symlink_to(broken.name)
    return broken


def test_hot_reload_after_a_promotion_and_a_corrupt_checkpoint_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, train={"epochs": 1, "lr": 1e-6})
    weak = train(config, "model.ensemble=null")  # barely trained: the next run beats it on validation, is promoted
    experiment = weak.parent
    with server(experiment, "--reload-every", "0.3s", log=tmp_path / "serve.log") as (url, _):
        assert post(url, {"texts": ["great"]}).json()["model"]["run_id"] == weak.name
        strong = train(config, "model.ensemble=null", "train.lr=0.01", "train.epochs=2")
        assert (experiment / "best").resolve() == strong, "the second run should have been promoted"
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/model", timeout=10).json()["run_id"] != strong.name:
            assert time.monotonic() < deadline, "serve did not pick up the promotion within 30 s"
            time.sleep(0.1)
        assert post(url, {"texts": ["great"]}).json()["model"]["run_id"] == strong.name

        broken = corrupt_best(experiment)
        refused = httpx.post(f"{url}/v1/reload", timeout=30)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == f"reload refused; still serving {strong.name}"
        assert str(broken / "checkpoints" / "best.pt") in refused.json()["detail"]
        answer = post(url, {"texts": ["great", "awful"]})
        assert answer.status_code == 200 and answer.json()["model"]["run_id"] == strong.name
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'textclf_reloads_total{result="ok"} 1.0' in metrics
    assert 'textclf_reloads_total{result="failed"}' in metrics
    log = (tmp_path / "serve.log").read_text()
    assert f"reload refused, still serving {strong.name}: {broken / 'checkpoints' / 'best.pt'}" in log
    assert f"reload: now serving {strong.name}" in log


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_requests_in_flight_finish_and_exits_0(binary: Path, tmp_path: Path, stop) -> None:
    texts = ["the movie was great and the actor was brilliant " * 4] * 1000
    log = tmp_path / "serve.log"
    with server(binary, "--reload-every", "0", "--max-batch", "1000", log=log) as (url, process):
        clients = [httpx.Client(timeout=60) for _ in range(8)]
        for client in clients:  # connections open before the signal: uvicorn closes only idle ones
            client.get(f"{url}/healthz")
        statuses: list[int] = []

        def ask(client: httpx.Client) -> None:
            statuses.append(client.post(f"{url}/v1/predict", json={"texts": texts}).status_code)

        threads = [threading.Thread(target=ask, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        process.send_signal(stop)
        for thread in threads:
            thread.join()
        assert process.wait(timeout=30) == 0
    assert statuses == [200] * len(clients)
    assert f"stopped by {stop.name}" in log.read_text()
