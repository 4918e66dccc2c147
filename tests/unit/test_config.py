"""config.py: defaults, --set overrides, unknown keys with a "did you mean", the model union, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from textclf_cli.config import BagConfig, CNNConfig, LSTMConfig, check_resumable, load_config
from textclf_cli.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def minimal(tmp_path: Path) -> Path:
    return write_config(tmp_path, {"experiment": "exp", "data": {"train": "train.csv"}})


def config_error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


def test_defaults_fill_every_section(minimal: Path) -> None:
    config = load_config(minimal)
    assert config.seed == 42 and config.device == "auto"
    assert config.data.format == "csv" and config.data.test is None and config.data.valid is None
    assert (config.data.text_column, config.data.label_column, config.data.valid_fraction) == ("text", "label", 0.1)
    assert config.tokenizer.kind == "regexp" and config.tokenizer.lowercase and config.tokenizer.strip_html
    assert not config.tokenizer.strip_punctuation and not config.tokenizer.remove_stopwords
    assert (config.vocab.max_size, config.vocab.min_freq, config.vocab.max_length) == (30000, "auto", "auto")
    assert config.vocab.truncate == "head_tail"
    assert (config.train.epochs, config.train.early_stopping_patience) == (10, 2)
    assert isinstance(config.model, CNNConfig) and config.model.filter_sizes == [3, 4, 5]
    assert (config.train.optimizer, config.train.lr, config.train.monitor) == ("adam", 1e-3, "valid_f1_macro")
    assert config.train.class_weights == "none"
    assert config.output.runs_dir == Path("runs")


def test_set_overrides_win_and_are_parsed_as_yaml(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "train.csv"}, "train": {"lr": 0.5}})
    config = load_config(path, [
        "train.lr=3e-4",
        "model.filter_sizes=[2, 3]",
        "tokenizer.lowercase=false",
        "vocab.max_size=100",
        "train.early_stopping_patience=null",
        "train.grad_clip=",
        "experiment=other",
        "data.text_column=review",
    ])
    assert config.train.lr == 3e-4 and isinstance(config.train.lr, float)
    assert config.model.filter_sizes == [2, 3]
    assert config.tokenizer.lowercase is False
    assert config.vocab.max_size == 100
    assert config.train.early_stopping_patience is None
    assert config.train.grad_clip is None  # an empty value means null
    assert config.experiment == "other"
    assert config.data.text_column == "review"
    assert config.data.train == Path("train.csv")  # untouched keys of an overridden section stay


def test_set_creates_missing_sections_and_switches_model_type(minimal: Path) -> None:
    config = load_config(minimal, ["model.type=lstm", "model.hidden_size=7", "tokenizer.kind=regexp"])
    assert isinstance(config.model, LSTMConfig) and config.model.hidden_size == 7
    assert config.tokenizer.kind == "regexp"


def test_set_later_override_wins_over_earlier(minimal: Path) -> None:
    assert load_config(minimal, ["seed=1", "seed=2"]).seed == 2


def test_set_into_a_value_is_refused(minimal: Path) -> None:
    message = config_error(minimal, ["data.train.path=x"])
    assert "--set data.train.path" in message and "data.train is a value, not a section" in message


def test_set_overrides_are_validated_like_the_file(minimal: Path) -> None:
    message = config_error(minimal, ["train.lr=fast"])
    assert message == f"{minimal}: train.lr: Input should be a valid number, unable to parse string as a number (got 'fast')"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"expriment": "x"}, "expriment: unknown key; did you mean 'experiment'?"),
        ({"train": {"epoch": 3}}, "train.epoch: unknown key; did you mean 'epochs'?"),
        ({"vocab": {"min_frequency": 1}}, "vocab.min_frequency: unknown key; did you mean 'min_freq'?"),
        ({"model": {"type": "lstm", "hiden_size": 3}}, "model.hiden_size: unknown key; did you mean 'hidden_size'?"),
        ({"model": {"type": "cnn", "filter_size": [3]}}, "model.filter_size: unknown key; did you mean 'filter_sizes'?"),
    ],
)
def test_unknown_key_names_file_path_and_suggestion(tmp_path: Path, raw: dict, expected: str) -> None:
    full = {"experiment": "exp", "data": {"train": "train.csv"}}
    for key, value in raw.items():
        full[key] = value
    path = write_config(tmp_path, full)
    message = config_error(path)
    assert message.startswith(f"{path}: {expected}")
    assert "allowed here:" in message


def test_unknown_key_without_close_match_lists_allowed_keys(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "t.csv"}, "vocab": {"zzz": 1}})
    assert config_error(path) == f"{path}: vocab.zzz: unknown key allowed here: max_length, max_size, min_freq, truncate"


def test_one_line_per_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "t.csv"},
                                   "train": {"lr": 0, "batch_size": -1}, "colour": "red"})
    lines = config_error(path).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert {line.split(": ")[1] for line in lines} == {"train.lr", "train.batch_size", "colour"}


@pytest.mark.parametrize(("model", "expected_class"), [("cnn", CNNConfig), ("lstm", LSTMConfig), ("bag", BagConfig)])
def test_model_type_picks_its_own_schema(tmp_path: Path, model: str, expected_class: type) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "t.csv"},
                                   "model": {"type": model, "embedding_dim": 8}})
    config = load_config(path)
    assert type(config.model) is expected_class and config.model.embedding_dim == 8


def test_key_of_another_model_family_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "t.csv"},
                                   "model": {"type": "cnn", "hidden_size": 8}})
    message = config_error(path)
    assert message.startswith(f"{path}: model.hidden_size: unknown key")
    assert "filter_sizes" in message  # the allowed keys are the CNN's, not the LSTM's


def test_unknown_model_type(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "t.csv"}, "model": {"type": "gru"}})
    assert config_error(path) == f"{path}: model.type: unknown model type 'gru'; allowed: cnn, lstm, bag, ngram"


def test_model_section_without_type_is_a_cnn(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "t.csv"}, "model": {"embedding_dim": 8}})
    config = load_config(path)
    assert isinstance(config.model, CNNConfig) and config.model.embedding_dim == 8
    message = config_error(path, ["model.hidden_size=8"])  # an LSTM key without type: judged as a CNN
    assert message.startswith(f"{path}: model.hidden_size: unknown key")


def test_every_shipped_config_is_there() -> None:
    assert {path.name for path in SHIPPED_CONFIGS} >= {"quickstart.yaml", "cnn.yaml", "cnn-large.yaml", "lstm.yaml"}


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda path: path.name)
def test_shipped_config_validates(path: Path) -> None:
    config = load_config(path)
    assert config.experiment
    expected_model = {"cnn.yaml": "cnn", "cnn-large.yaml": "cnn", "lstm.yaml": "lstm"}.get(path.name)
    if expected_model:
        assert config.model.type == expected_model and config.data.format == "imdb"


def test_cnn_large_is_the_default_cnn_spelled_out(tmp_path: Path) -> None:
    """Its measured accuracy is the default CNN's on IMDb: the two must not drift apart."""
    large = load_config(REPO / "configs/cnn-large.yaml")
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text(f"experiment: x\ndata:\n  format: imdb\n  train: {large.data.train}\nmodel:\n  type: cnn\n")
    default = load_config(minimal)
    for section in ("tokenizer", "vocab", "model"):
        assert getattr(large, section) == getattr(default, section), section
    # precision auto, like cnn.yaml: bf16 inference where the CPU has it (the suite trains both in fp32)
    assert large.train.model_copy(update={"precision": "fp32"}) == default.train
    assert (large.seed, large.data.valid_fraction) == (default.seed, default.data.valid_fraction)


def test_quickstart_points_at_the_bundled_sample() -> None:
    config = load_config(REPO / "configs/quickstart.yaml")
    for data_file in (config.data.train, config.data.test):
        assert (REPO / data_file).is_file(), data_file


def test_resume_allows_more_epochs_and_names_every_other_change(minimal: Path) -> None:
    stored = load_config(minimal)
    check_resumable(stored, load_config(minimal, ["train.epochs=9"]), Path("runs/x/1"))
    changed = load_config(minimal, ["train.epochs=9", "train.lr=0.5", "model.type=lstm"])
    with pytest.raises(ConfigError) as error:
        check_resumable(stored, changed, Path("runs/x/1"))
    message = str(error.value)
    assert message.startswith("--resume runs/x/1: the config differs from the run's in model.")
    assert "train.lr" in message and "train.epochs" not in message.split(";")[0]
    assert message.endswith("; only train.epochs (and train.refit, output.keep_runs, output.tensorboard, output.export_onnx) may change when resuming")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("seed=-1", "seed: Input should be greater than or equal to 0 (got -1)"),
        ("seed=99999999999", "seed: Input should be less than or equal to 4294967295 (got 99999999999)"),
        ("model.ensemble.buckets=1000000000000", "model.ensemble.buckets"),
        ("vocab.max_size=1000000000000", "vocab.max_size: Input should be less than or equal to 10000000"),
        ("model.embedding_dim=1000000000", "model.embedding_dim: Input should be less than or equal to 16384"),
        ("train.batch_size=1000000000000", "train.batch_size: Input should be less than or equal to 1048576"),
        ("data.max_row_chars=0", "data.max_row_chars: Input should be greater than or equal to 1"),
    ],
)
def test_out_of_range_sizes_and_seeds_name_the_key(minimal: Path, override: str, expected: str) -> None:
    # before: seed -1 failed late inside numpy, and 1e12 buckets asked torch for a 128 TB embedding table
    assert expected in config_error(minimal, [override])


def test_a_bag_models_buckets_are_bounded_also_when_written_as_a_float(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"experiment": "exp", "data": {"train": "train.csv"},
                                   "model": {"type": "bag", "buckets": 1.0e12}})
    assert "model.buckets: Input should be less than or equal to 16777216 (got 1000000000000.0)" in config_error(path)


def test_the_largest_seed_and_auto_bucket_count_are_accepted(minimal: Path) -> None:
    config = load_config(minimal, ["seed=4294967295", "model.ensemble.buckets=8388608"])
    assert config.seed == 2**32 - 1 and config.model.ensemble.buckets == 2**23
