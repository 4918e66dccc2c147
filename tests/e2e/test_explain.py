"""`textclf explain` end to end on tiny models trained here (cnn, lstm, bag, and the cnn + n-gram ensemble): exit
codes, the JSON's numbers (they add up to the logit; the probabilities are predict's), the HTML page, the refusals,
and faithfulness: removing the top-attributed tokens lowers the predicted label's probability more than removing
random ones."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import yaml

from tests.conftest import CLASS_WORDS, run_cli, tiny_config, tiny_examples

FAMILIES = {  # model section of each trained family; the cnn and lstm alone, then the default ensemble
    "cnn": {"type": "cnn", "embedding_dim": 16, "num_filters": 8, "filter_sizes": [2, 3], "ensemble": None},
    "lstm": {"type": "lstm", "embedding_dim": 16, "hidden_size": 8, "ensemble": None},
    "bag": {"type": "bag", "embedding_dim": 16, "buckets": 1000},
    "ensemble": {"type": "cnn", "embedding_dim": 16, "num_filters": 8, "filter_sizes": [2, 3]},
}
TRAIN = {"bag": {"epochs": 6, "lr": 0.05}}  # the bag model learns slower than the networks at these sizes
MEMBERS = {"cnn": ["cnn"], "lstm": ["lstm"], "bag": ["bag"], "ensemble": ["cnn", "ngram"]}
TEXTS = ["the movie was great and the plot superb", "the plot was awful and terrible, the worst"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny run per family, trained on texts where a few class words carry the label."""
    trained = {}
    for family, model in FAMILIES.items():
        config = tiny_config(tmp_path_factory.mktemp(family), n_train=120, train=TRAIN.get(family, {"epochs": 3, "lr": 0.02}))
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "model": model}), encoding="utf-8")
        result = run_cli("train", str(config), "-q")
        assert result.exit_code == 0, result.output
        trained[family] = Path(result.stdout.strip())
    return trained


def explain_json(run_dir: Path, *args: str) -> dict:
    result = run_cli("explain", str(run_dir), *args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def predicted(run_dir: Path, texts: list[str]) -> list[dict]:
    result = run_cli("predict", str(run_dir), *texts, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_json_explains_the_predicted_label_and_adds_up_to_its_logit(runs: dict[str, Path], family: str) -> None:
    document = explain_json(runs[family], *TEXTS)
    assert document["model"]["checkpoint"] == str(runs[family] / "checkpoints" / "best.pt")
    assert (document["model"]["mix"] is not None) == (family == "ensemble")
    for explained, expected in zip(document["explanations"], predicted(runs[family], TEXTS)):
        assert list(explained["members"]) == MEMBERS[family]
        assert explained["label"] == explained["predicted"] == expected["label"]
        assert explained["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-4)
        values = [token["attribution"] for token in explained["tokens"]]
        assert explained["baseline"] + sum(values) + explained["delta"] == pytest.approx(explained["logit"], abs=1e-4)
        for token in explained["tokens"]:  # each member's share, already mixed and calibrated, sums to the token's
            assert sum(token["members"].values()) == pytest.approx(token["attribution"], abs=1e-5)
        methods = {name: member["method"] for name, member in explained["members"].items()}
        assert methods == {name: "exact" if name in ("bag", "ngram") else "integrated_gradients"
                           for name in MEMBERS[family]}
        assert all(member["delta"] == 0 for name, member in explained["members"].items() if name in ("bag", "ngram"))
        class_words = set(CLASS_WORDS[explained["label"]])
        top = max(explained["tokens"], key=lambda token: token["attribution"])
        assert top["token"] in class_words, (family, explained["tokens"])  # a word that carries the label leads


def test_label_explains_another_label_than_the_predicted_one(runs: dict[str, Path]) -> None:
    explained, = explain_json(runs["ensemble"], TEXTS[0], "--label", "neg")["explanations"]
    assert (explained["label"], explained["predicted"]) == ("neg", "pos")
    assert explained["probability"] == explained["probabilities"]["neg"] < 0.5
    great = next(token for token in explained["tokens"] if token["token"] == "great")
    assert great["attribution"] < 0  # "great" speaks against neg


def test_tokens_cut_by_max_length_are_marked_unseen(runs: dict[str, Path]) -> None:
    # max_length 50 and the default truncate head_tail: the first 12 tokens and the last 38 are read, the awfuls cut
    text = " ".join(["great"] + ["the"] * 11 + ["awful"] * 10 + ["movie"] * 38)
    document = explain_json(runs["lstm"], text)
    assert (document["model"]["max_length"], document["model"]["truncate"]) == (50, "head_tail")
    explained, = document["explanations"]
    assert [token["seen"] for token in explained["tokens"]] == [True] * 12 + [False] * 10 + [True] * 38
    assert all(token["attribution"] is None and token["members"] == {"lstm": None}
               for token in explained["tokens"][12:22])
    assert all(token["attribution"] is not None for token in explained["tokens"][22:])


def test_html_page_is_self_contained_and_escapes_every_token(runs: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "explain.html"
    text = 'great & superb > "awful" <i>tags go</i> 5<6'
    result = run_cli("explain", str(runs["ensemble"]), text, TEXTS[1], "--output", str(page))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"2 explanation(s) written to {page}\n"
    content = page.read_text(encoding="utf-8")
    assert content.startswith("<!DOCTYPE html>") and "<style>" in content
    for outside in ("<script", "<link", "src=", "http://", "https://", "url("):  # nothing fetched, nothing run
        assert outside not in content
    explained = explain_json(runs["ensemble"], text)["explanations"][0]
    assert {"&", ">", "<"} <= {token["token"] for token in explained["tokens"]}
    assert ">&amp;</span>" in content and ">&gt;</span>" in content and ">&lt;</span>" in content
    assert "text 1: pos" in content and "text 2: neg" in content and "ensemble mix" in content


def test_table_view_shows_the_tokens_and_the_sum(runs: dict[str, Path]) -> None:
    result = run_cli("explain", str(runs["bag"]), TEXTS[0])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("text 1: pos ")
    assert "the movie was great and the plot superb" in result.stdout and "= baseline" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["runs/x/export/model.onnx", "a text"], "is an ONNX export, which has no gradients"),
    (["{run}", "a text", "--label", "nope"], "--label 'nope' is not one of the model's labels (neg, pos)"),
    (["{run}"], "give one or more texts"),
    (["{run}", "a text", "--output", "x.txt"], "name an .html or .json file"),
    (["{run}", "a text", "--format", "table", "--output", "x.html"], "--output needs --format html or json"),
])
def test_refusals_are_one_line_and_exit_2(runs: dict[str, Path], args: list[str], message: str) -> None:
    result = run_cli("explain", *(arg.format(run=runs["cnn"]) for arg in args))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_without_captum_the_network_is_refused_and_the_bag_model_still_explains(runs: dict[str, Path],
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "captum" else
                        find_spec(name, *rest))
    result = run_cli("explain", str(runs["lstm"]), TEXTS[0])
    assert result.exit_code == 2
    assert result.stderr == ('error: explain: Integrated Gradients for the CNN/LSTM network needs captum, which is '
                             'not installed: pip install "textclf-cli[explain]" (or pip install captum)\n')
    assert run_cli("explain", str(runs["bag"]), TEXTS[0]).exit_code == 0


@pytest.mark.parametrize("family", ["cnn", "ensemble"])
def test_removing_the_top_attributed_tokens_lowers_the_probability_more_than_random_ones(
        runs: dict[str, Path], family: str) -> None:
    texts = [text for text, _ in tiny_examples(24, seed=11)]
    explanations = explain_json(runs[family], *texts)["explanations"]
    rng, removed_top, removed_random, draws = random.Random(0), [], [], 5
    for explained in explanations:
        tokens = [token["token"] for token in explained["tokens"]]
        k = min(2, len(tokens) - 1)
        top = sorted(range(len(tokens)), key=lambda i: -explained["tokens"][i]["attribution"])[:k]
        removed_top.append(" ".join(t for i, t in enumerate(tokens) if i not in top))
        for _ in range(draws):
            drop = set(rng.sample(range(len(tokens)), k))
            removed_random.append(" ".join(t for i, t in enumerate(tokens) if i not in drop))
    after_top, after_random = predicted(runs[family], removed_top), predicted(runs[family], removed_random)
    drops_top, drops_random = [], []
    for n, explained in enumerate(explanations):
        label, before = explained["label"], explained["probability"]
        drops_top.append(before - after_top[n]["probabilities"][label])
        drops_random += [before - record["probabilities"][label] for record in after_random[n * draws:(n + 1) * draws]]
    mean_top, mean_random = sum(drops_top) / len(drops_top), sum(drops_random) / len(drops_random)
    print(f"{family}: mean drop of p(predicted label), top-2 removed {mean_top:.3f}, random 2 removed {mean_random:.3f}")
    assert mean_top > mean_random + 0.1, (mean_top, mean_random)
