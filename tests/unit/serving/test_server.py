"""serving/server.py in-process, on a stand-in model: a model that fails gives 500 in the error shape and the next
request works; abstain marks texts below --min-confidence; rows go back to the request that sent them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serve needs the serve extra")
from fastapi.testclient import TestClient  # noqa: E402

from textclf_cli.data.text import TokenizerSettings  # noqa: E402
from textclf_cli.serving.live import ServedModel  # noqa: E402
from textclf_cli.serving.scoring import Scorer  # noqa: E402
from textclf_cli.serving.server import create_app  # noqa: E402
from textclf_cli.serving.settings import ServeSettings  # noqa: E402
from textclf_cli.serving.targets import CHECKPOINT, ModelFile, OpenedScorer  # noqa: E402

VOCAB = ["<pad>", "<unk>", "good", "bad", "boom"]


def score(encoded, batch_size: int, whole_input: bool) -> np.ndarray:
    """p(pos) 0.9 for a text with "good", 0.2 with "bad", 0.55 otherwise; "boom" breaks the model."""
    rows = []
    for i in range(len(encoded)):
        ids = set(encoded.ids[encoded.offsets[i]: encoded.offsets[i + 1]].tolist())
        if 4 in ids:
            raise RuntimeError("CUDA error: an illegal memory access")
        pos = 0.9 if 2 in ids else 0.2 if 3 in ids else 0.55
        rows.append([1 - pos, pos])
    return np.array(rows)


@pytest.fixture
def client(tmp_path: Path):
    scorer = Scorer(TokenizerSettings(), VOCAB, ["neg", "pos"], score)
    model = ServedModel(OpenedScorer(scorer, CHECKPOINT), ModelFile(tmp_path / "best.pt", None, onnx=False),
                        ("x", 1, 1), {"run_id": "run-1", "experiment": "toy", "labels": ["neg", "pos"]}, 0.1)
    settings = ServeSettings(target=str(tmp_path), reload_every_s=0, min_confidence=0.6, max_texts=5, max_chars=50)
    with TestClient(create_app(settings, model)) as test_client:
        yield test_client


def test_a_model_failure_is_500_in_the_error_shape_and_the_next_request_works(client: TestClient) -> None:
    failed = client.post("/v1/predict", json={"texts": ["boom"]})
    assert failed.status_code == 500
    assert set(failed.json()) == {"error", "detail"}
    assert "illegal memory access" in failed.json()["detail"]
    after = client.post("/v1/predict", json={"texts": ["good"]})
    assert after.status_code == 200 and after.json()["predictions"][0]["label"] == "pos"
    metrics = client.get("/metrics").text
    assert 'textclf_texts_total{status="500"} 1.0' in metrics
    assert 'textclf_requests_total{route="/v1/predict",status="500"} 1.0' in metrics


def test_texts_below_min_confidence_are_abstained_with_their_probabilities(client: TestClient) -> None:
    response = client.post("/v1/predict", json={"texts": ["good", "neither", "bad"]})
    predictions = response.json()["predictions"]
    assert [(p["label"], p["abstained"]) for p in predictions] == [("pos", False), (None, True), ("neg", False)]
    assert predictions[1]["probabilities"] == {"pos": 0.55, "neg": 0.45}
    assert response.json()["model"] == {"run_id": "run-1", "experiment": "toy", "scorer": CHECKPOINT}
    assert "textclf_abstained_texts_total 1.0" in client.get("/metrics").text


def test_limits_name_the_field(client: TestClient) -> None:
    too_many = client.post("/v1/predict", json={"texts": ["good"] * 6})
    assert too_many.status_code == 413 and too_many.json()["error"].startswith("texts: 6 texts, more than --max-texts 5")
    too_long = client.post("/v1/predict", json={"texts": ["good", "x" * 51]})
    assert too_long.status_code == 413 and too_long.json()["error"].startswith("texts[1]: 51 characters")
