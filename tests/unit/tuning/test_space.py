"""The tune: section (did-you-mean errors, nested and --set forms) and search_space.py (defaults, sampling)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from textclf_cli.config import TuneRange, config_to_dict, load_config
from textclf_cli.errors import ConfigError
from textclf_cli.tune import parse_duration
from textclf_cli.tuning import space as spaces


def write_config(tmp_path: Path, tune: object = None, **sections: object) -> Path:
    raw = {"experiment": "exp", "data": {"train": "train.csv"}, **sections}
    if tune is not None:
        raw["tune"] = tune
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def config_error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


@pytest.mark.parametrize(("tune", "message"), [
    ({"train.lrr": {"low": 1e-4, "high": 1e-2}}, "tune.train.lrr: unknown key; did you mean 'lr'? allowed here: "),
    ({"trian.lr": {"low": 1e-4, "high": 1e-2}}, "tune.trian.lr: unknown key; did you mean 'train.lr'?"),
    ({"lr": {"low": 1e-4, "high": 1e-2}}, "tune.lr: unknown key; did you mean 'train.lr'?"),
    ({"model.hidden_size": {"choices": [64, 128]}}, "tune.model.hidden_size: unknown key"),  # an lstm key on a cnn
    ({"data.valid_fraction": {"low": 0.1, "high": 0.2}}, "tune.data.valid_fraction: data settings cannot be tuned"),
    ({"model.type": {"choices": ["cnn", "lstm"]}}, "tune.model.type: cannot be tuned"),
    ({"train.lr": {"lowe": 1e-4, "high": 1e-2}}, "tune.train.lr.lowe: unknown key; did you mean 'low'?"),
    ({"train.lr": {"low": 1e-2, "high": 1e-4}}, "tune.train.lr: low must be below high"),
    ({"train.lr": {"low": 0, "high": 1e-2, "log": True}}, "tune.train.lr: log: true needs low > 0"),
    ({"train.lr": {"high": 1e-2}}, "tune.train.lr: give low and high"),
    ({"train.lr": {"low": 1e-4, "high": 1e-2, "choices": [1e-3]}}, "tune.train.lr: give either choices or low/high"),
    ({"model.dropout": {"low": 0.1, "high": 1.5}}, "tune.model.dropout.high: Input should be less than 1 (got 1.5)"),
    ({"model.num_filters": {"low": 0.5, "high": 10}}, "tune.model.num_filters: takes whole numbers"),
    ({"model.pooling": {"low": 1, "high": 3}}, "tune.model.pooling: not a number; give choices"),
    ({"model.pooling": {"choices": ["max", "avg"]}}, "tune.model.pooling.choices[1]: Input should be 'max' or"),
])
def test_bad_tune_sections_are_one_line_errors_naming_the_key(tmp_path: Path, tune: dict, message: str) -> None:
    error = config_error(write_config(tmp_path, tune))
    assert error.startswith(f"{tmp_path / 'config.yaml'}: {message}"), error
    assert "\n" not in error


def test_tune_keys_nest_or_dot_and_set_overrides_reach_them(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"train": {"lr": {"low": "1e-4", "high": 0.01, "log": True}},
                                   "model.filter_sizes": {"choices": [[2, 3], [3, 4, 5]]}})
    config = load_config(path, ["tune.train.lr.low=1e-5", "tune.model.dropout.choices=[0.1, 0.3]"])
    assert config.tune == {
        "train.lr": TuneRange(low=1e-5, high=0.01, log=True),
        "model.filter_sizes": TuneRange(choices=[[2, 3], [3, 4, 5]]),
        "model.dropout": TuneRange(choices=[0.1, 0.3]),
    }
    assert "tune" not in config_to_dict(load_config(write_config(tmp_path)))  # absent stays absent in config.yaml


def test_default_space_per_family_holds_the_configs_own_values(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, model={"type": "lstm", "hidden_size": 96}, train={"lr": 0.05}))
    space = spaces.search_space(config)
    assert {"train.lr", "model.hidden_size", "model.num_layers", "model.pooling", "model.dropout"} <= set(space)
    assert 96 in space["model.hidden_size"].choices and space["train.lr"].high == 0.05
    assert spaces.params_as_written(config, space)["model.hidden_size"] == 96
    bag = load_config(write_config(tmp_path, model={"type": "bag", "sparse": True}, train={"optimizer": "adagrad",
                                                                                         "lr": 0.5}))
    assert set(spaces.search_space(bag)) >= {"model.ngrams", "model.embedding_dim"}
    assert spaces.search_space(bag)["train.lr"] == TuneRange(low=1e-2, high=1.0, log=True)  # fastText-like
    ngram = load_config(write_config(tmp_path, model={"type": "ngram"}))
    ngram_space = spaces.search_space(ngram)
    assert ngram_space["model.chars"].choices == ["auto", 0, 3, 5]  # words only, or 2..3- / 2..5-grams inside words
    assert spaces.params_as_written(ngram, ngram_space)["model.chars"] == "auto"


def test_a_tune_section_replaces_the_default_space_unchanged(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, {"model.dropout": {"low": 0.2, "high": 0.4}}))
    assert spaces.search_space(config) == {"model.dropout": TuneRange(low=0.2, high=0.4)}
    assert spaces.params_as_written(config, spaces.search_space(config)) == {}  # 0.5 lies outside


def test_list_choices_are_stored_as_text_and_decoded_back() -> None:
    space = {"model.filter_sizes": TuneRange(choices=[[2, 3], [3, 4, 5]]), "train.batch_size": TuneRange(choices=[8])}
    assert spaces.choice_label([3, 4, 5]) == "[3, 4, 5]"
    assert spaces.decode_params(space, {"model.filter_sizes": "[3, 4, 5]", "train.batch_size": 8}) == {
        "model.filter_sizes": [3, 4, 5], "train.batch_size": 8}
    raw = {"model": {"type": "cnn"}, "train": {"lr": 1.0}}
    assert spaces.apply_params(raw, {"train.lr": 0.1, "model.filter_sizes": [2]}) == {
        "model": {"type": "cnn", "filter_sizes": [2]}, "train": {"lr": 0.1}}
    assert raw["train"]["lr"] == 1.0


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45", 45),
                                               ("0.5m", 30)])
def test_timeout_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30x", "m", "0s", "-5m"])
def test_bad_timeouts_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--timeout"):
        parse_duration(text)
