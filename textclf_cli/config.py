"""The YAML config: pydantic schema, loading with file:line errors, and dotted --set overrides."""

from __future__ import annotations

import difflib
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from textclf_cli.errors import ConfigError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
AUTO = "auto"  # a value the train stage resolves from the training data (textclf_cli/training/auto.py)
# Upper bounds of the size keys: far above any useful value, far below one that asks for terabytes
MAX_BUCKETS = 2**24  # hashed n-gram rows: 16.7M (auto picks at most 2^23)
MAX_VOCAB = 10_000_000
MAX_LENGTH = 1_000_000  # tokens per text
MAX_WIDTH = 16_384  # embedding_dim, num_filters, hidden_size
MAX_BATCH = 1 << 20
MAX_CHUNK = 1_000_000
MONITORS = ("valid_f1_macro", "valid_accuracy", "valid_loss", "valid_f1_micro")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    format: Literal["imdb", "csv", "tsv", "jsonl", "parquet"] = "csv"
    train: Path
    test: Path | None = None
    valid: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    label_separator: str = Field("|", min_length=1)  # task multilabel: splits a CSV/TSV label field into labels
    valid_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    encoding: str = "utf-8"
    bad_rows: Literal["skip", "error"] = "skip"
    url: str | None = None
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    prepared_dir: Path = Path("data/prepared")
    chunk_size: int = Field(2000, ge=1, le=MAX_CHUNK)  # texts prepare reads and tokenizes at a time; the output never depends on it
    max_row_chars: int = Field(
        10_000_000, ge=1, le=2**31 - 1,
        description="The longest line of a CSV/TSV/JSONL file (and the longest text or field) read, in characters. "
                    "A longer one is a bad row at file:line, read past in pieces, so one hostile row costs no more "
                    "memory than this.")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError("unknown text encoding; use a Python codec name such as utf-8, latin-1 or cp1252") from None
        return value


class TokenizerConfig(Strict):
    kind: Literal["regexp", "toktok", "treebank", "punkt"] = "regexp"  # fastest; best n-gram features on 3 of 5 sets
    lowercase: bool = True
    strip_html: bool = True
    strip_punctuation: bool = False
    remove_stopwords: bool = False
    stopwords: Literal["sklearn", "nltk"] = "sklearn"


class VocabConfig(Strict):
    max_size: int = Field(30000, ge=3, le=MAX_VOCAB)
    # auto: 1 on short texts in a small corpus (where character n-grams go on too), else 2 (textclf_cli/training/auto.py)
    min_freq: Annotated[int, Field(ge=1)] | Literal["auto"] = AUTO
    max_length: Annotated[int, Field(ge=1, le=MAX_LENGTH)] | Literal["auto"] = AUTO
    truncate: Literal["head", "tail", "head_tail"] = "head_tail"


class EmbeddingSettings(Strict):
    embedding_dim: int = Field(128, ge=1, le=MAX_WIDTH)
    pretrained_embeddings: Path | None = None
    freeze_embeddings: bool = False


class NgramConfig(Strict):
    """NBSVM-style logistic regression over hashed word n-grams (models/ngram.py); alone or as an ensemble member."""

    type: Literal["ngram"] = "ngram"
    # longest n-gram; auto: 3 on a training split of >= 1M tokens, else 2 (textclf_cli/training/auto.py)
    ngrams: Annotated[int, Field(ge=1, le=4)] | Literal["auto"] = AUTO
    # hash space for n-grams of order >= 2; auto: about one bucket per training token, 2^14 to 2^23 (textclf_cli/training/auto.py)
    buckets: Annotated[int, Field(ge=1, le=MAX_BUCKETS)] | Literal["auto"] = AUTO
    min_df: int = Field(2, ge=1)
    alpha: float = Field(1.0, gt=0.0)  # naive-Bayes count smoothing
    lr: float = Field(0.01, gt=0.0)  # its own Adam step: a linear model wants a larger one than a network
    l2: float = Field(0.1, ge=0.0)  # penalty per training text, as LogisticRegression(C=1/l2)
    # character 2..chars-grams inside words too (0: words only); auto: 5 for short texts in a small corpus, else 0
    chars: Annotated[int, Field(ge=0, le=8)] | Literal["auto"] = AUTO


class CNNConfig(EmbeddingSettings):
    type: Literal["cnn"] = "cnn"
    num_filters: int = Field(100, ge=1, le=MAX_WIDTH)
    filter_sizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(default_factory=lambda: [3, 4, 5], min_length=1,
                                                                   max_length=16)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    pooling: Literal["max", "max_mean"] = "max"
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # a second model family trained beside the network (models/ensemble.py); `ensemble: null` trains the CNN alone
    ensemble: NgramConfig | None = Field(default_factory=NgramConfig)


class LSTMConfig(EmbeddingSettings):
    type: Literal["lstm"] = "lstm"
    hidden_size: int = Field(128, ge=1, le=MAX_WIDTH)
    num_layers: int = Field(1, ge=1, le=32)
    bidirectional: bool = True
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    pooling: Literal["last", "max", "mean", "max_mean"] = "last"
    word_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    ensemble: NgramConfig | None = Field(default_factory=NgramConfig)


class BagConfig(EmbeddingSettings):
    type: Literal["bag"] = "bag"
    embedding_dim: int = Field(32, ge=1, le=MAX_WIDTH)
    ngrams: int = Field(2, ge=1, le=3)
    buckets: int = Field(1_000_000, ge=1, le=MAX_BUCKETS)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    sparse: bool = False  # true needs train.optimizer adagrad (or sgd without momentum); much faster


ModelConfig = Annotated[CNNConfig | LSTMConfig | BagConfig | NgramConfig, Field(discriminator="type")]
MODEL_CLASSES: dict[str, type[Strict]] = {"cnn": CNNConfig, "lstm": LSTMConfig, "bag": BagConfig,
                                          "ngram": NgramConfig}


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1, le=100_000)  # an upper bound: early stopping usually ends a run well before it
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["none", "linear", "cosine"] = "none"
    warmup_epochs: float = Field(0.0, ge=0.0)
    grad_clip: float | None = Field(5.0, gt=0.0)
    early_stopping_patience: int | None = Field(2, ge=1)
    monitor: str = "valid_f1_macro"
    class_weights: Literal["none", "balanced"] = "none"
    pos_weight: Literal["none", "balanced"] = "none"  # task multilabel: BCE weight of each label's positives
    # task multilabel: one decision threshold for every label, or per_label ones tuned for F1 on validation
    threshold: float | Literal["per_label"] = 0.5
    bucket_chunk: int = Field(50, ge=1, le=100_000)
    eval_batch_size: int = Field(128, ge=1, le=MAX_BATCH)
    num_threads: int | None = Field(None, ge=1, le=4096)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    compile: bool = False
    # after training, a fresh model trains on train + valid for the epochs validation chose (refit.py) and becomes
    # best.pt. auto: when the validation split is carved from the training data (data.valid not set). Off by default:
    # on held-out carves of the five sentence sets it gained 0.09 points on average (25 paired runs), within noise,
    # for 15-80% more training time
    refit: bool | Literal["auto"] = False

    @field_validator("threshold", mode="before")
    @classmethod
    def _threshold_in_range(cls, value: Any) -> Any:
        if value == "per_label":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError("must be a probability between 0 and 1 (exclusive), or per_label")
        return float(value)

    @field_validator("monitor")
    @classmethod
    def _known_monitor(cls, value: str) -> str:
        if value not in MONITORS:
            raise ValueError(f"must be one of {', '.join(MONITORS)}")
        return value


class OutputConfig(Strict):
    runs_dir: Path = Path("runs")
    keep_runs: int | None = Field(None, ge=1)  # after a successful train, prune the experiment to this many runs
    tensorboard: bool = False
    # after a train, <run>/export/model.onnx from best.pt: `predict RUN` then answers a few texts without importing
    # torch (0.5 s instead of 2 s cold). auto: when onnx and onnxruntime are installed (the `export` extra)
    export_onnx: bool | Literal["auto"] = "auto"


# `tune:` maps dotted keys of these sections to search ranges; data/output/seed would change what is measured
TUNABLE_SECTIONS = ("tokenizer", "vocab", "model", "train")
UNTUNABLE_KEYS = {
    "model.type": "a study tunes one model family; run one study per family",
    "model.pretrained_embeddings": "it is a file, not a hyperparameter",
    "train.monitor": "it is the metric the study optimizes",
}
RANGE_KEYS = {"low", "high", "log", "choices"}


class TuneRange(Strict):
    """One searched key of `tune:`: a numeric range {low, high, log} or a list of choices."""

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> TuneRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("give either choices or low/high (with log), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (and optionally log: true), or choices: [...]")
        if not self.low < self.high:
            raise ValueError(f"low must be below high (got low {self.low}, high {self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        return self


class Config(Strict):
    experiment: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: int = Field(42, ge=0, le=2**32 - 1)  # numpy's and sklearn's seeds are unsigned 32-bit
    device: str = "auto"
    task: Literal["multiclass", "multilabel"] = "multiclass"
    data: DataConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    model: ModelConfig = Field(default_factory=CNNConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    tune: dict[str, TuneRange] | None = None  # search space of `textclf tune`; `train` ignores it

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _default_model_type(cls, value: Any) -> Any:
        # model.type defaults to cnn also when a model section (or `--set model.x=...`) leaves it out
        if isinstance(value, dict) and "type" not in value:
            return {"type": "cnn", **value}
        return value

    @field_validator("tune", mode="before")
    @classmethod
    def _flatten_tune(cls, value: Any) -> Any:
        # `train: {lr: {...}}` and `--set tune.train.lr.low=...` both mean the dotted key train.lr
        return flatten_tune(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _tune_keys_exist(self) -> Config:
        for key, space in (self.tune or {}).items():
            check_tune_key(self, key, space)
        return self

    @model_validator(mode="after")
    def _sparse_needs_sparse_optimizer(self) -> Config:
        sparse = getattr(self.model, "sparse", False)
        if sparse and not (self.train.optimizer == "adagrad" or (self.train.optimizer == "sgd" and
                                                                  self.train.momentum == 0)):
            raise ValueError("model.sparse: sparse embedding gradients need train.optimizer: adagrad "
                             "(or sgd with train.momentum: 0); or set model.sparse: false")
        if sparse and self.train.weight_decay:
            raise ValueError("model.sparse: sparse embedding gradients cannot use train.weight_decay; set it to 0")
        return self

    @model_validator(mode="after")
    def _task_settings_match(self) -> Config:
        train = self.train
        if self.task == "multiclass":
            for key, value, default in (("pos_weight", train.pos_weight, "none"), ("threshold", train.threshold, 0.5)):
                if value != default:
                    raise ValueError(f"train.{key}: only applies to task: multilabel; remove it or set task: multilabel")
            if train.monitor == "valid_f1_micro":
                raise ValueError("train.monitor: valid_f1_micro needs task: multilabel (for one label per text it "
                                 "equals valid_accuracy)")
            return self
        if self.data.format == "imdb":
            raise ValueError("data.format: imdb has one label per review; task: multilabel needs csv, tsv or jsonl")
        if train.class_weights != "none":
            raise ValueError("train.class_weights: use train.pos_weight: balanced for task: multilabel")
        return self


# ---------------------------------------------------------------------------------------------------------
# the tune: section


def flatten_tune(raw: dict[Any, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": {"low": 1}}, "train.lr": {"high": 2}} -> {"train.lr": {"low": 1, "high": 2}}."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        nested = (isinstance(value, dict) and value and not RANGE_KEYS & set(value)
                  and all(isinstance(child, dict) for child in value.values()))
        for flat_key, spec in (flatten_tune(value, f"{name}.").items() if nested else [(name, value)]):
            previous = flat.get(flat_key)
            flat[flat_key] = {**previous, **spec} if isinstance(previous, dict) and isinstance(spec, dict) else spec
    return flat


def tune_target(config: Config, key: str) -> tuple[type[BaseModel], str]:
    """(section model, field name) that the dotted tune key names; ValueError `tune.<key>: ...` otherwise."""
    section, _, name = key.partition(".")
    if section not in TUNABLE_SECTIONS:
        if section in Config.model_fields:
            raise ValueError(f"tune.{key}: {section} settings cannot be tuned; tune keys of "
                             f"{', '.join(TUNABLE_SECTIONS)}")
        everything = [f"{part}.{field}" for part in TUNABLE_SECTIONS for field in _section_model(config, part).model_fields]
        close = [dotted for dotted in everything if dotted.endswith(f".{key}")]  # `lr` -> train.lr
        close = close or difflib.get_close_matches(key, everything, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"tune.{key}: unknown key{hint} (tune keys are SECTION.KEY, SECTION one of "
                         f"{', '.join(TUNABLE_SECTIONS)})")
    model = _section_model(config, section)
    if name not in model.model_fields:
        raise ValueError(f"tune.{key}: unknown key{_did_you_mean(name, list(model.model_fields))}")
    if key in UNTUNABLE_KEYS:
        raise ValueError(f"tune.{key}: cannot be tuned: {UNTUNABLE_KEYS[key]}")
    return model, name


def _section_model(config: Config, section: str) -> type[BaseModel]:
    return MODEL_CLASSES[config.model.type] if section == "model" else Config.model_fields[section].annotation


def value_kind(annotation: Any) -> str:
    """'int' or 'float' for a numeric setting (None allowed besides), else 'other' (choices only)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    if annotation is int:
        return "int"
    return "float" if annotation is float else "other"


def check_tune_key(config: Config, key: str, space: TuneRange) -> None:
    """The key exists and every value the range can give (low, high, each choice) is valid for it."""
    model, name = tune_target(config, key)
    kind = value_kind(model.model_fields[name].annotation)
    if space.choices is None:
        if kind == "other":
            raise ValueError(f"tune.{key}: not a number; give choices: [...] instead of low/high")
        if kind == "int" and not all(isinstance(end, int) for end in (space.low, space.high)):
            raise ValueError(f"tune.{key}: takes whole numbers; low and high must be integers "
                             f"(got {space.low}, {space.high})")
        candidates = {"low": space.low, "high": space.high}
    else:
        candidates = {f"choices[{index}]": choice for index, choice in enumerate(space.choices)}
    section = getattr(config, key.partition(".")[0]).model_dump()
    for where, value in candidates.items():
        try:
            model.model_validate({**section, name: value})
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ValueError(f"tune.{key}.{where}: {message} (got {value!r})") from None


# ---------------------------------------------------------------------------------------------------------
# loading


def load_config(path: Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a config; every problem becomes one ConfigError (exit 2)."""
    raw = read_yaml_mapping(path)
    for override in overrides or []:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def load_run_config(path: Path) -> Config:
    """A run folder's config.yaml. Keys added since with an `auto` default take the value the textclf that wrote
    the run behaved as, so that resuming rebuilds the model it saved."""
    raw = read_yaml_mapping(path)
    model = raw.get("model")
    ngram = (model if model.get("type") == "ngram" else model.get("ensemble")) if isinstance(model, dict) else None
    if isinstance(ngram, dict):
        ngram.setdefault("chars", 0)  # character n-grams came later: words only before
    return validate_config(raw, source=str(path))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: config file not found; pass the path of a YAML config (see configs/)")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(f"{path}: the config is empty; it needs at least `experiment` and `data.train`")
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys (experiment:, data:, ...), got {kind}")
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`train.lr=3e-4` sets raw["train"]["lr"] = 3e-4 (the value is parsed as YAML)."""
    key, sep, value_text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY.PATH=VALUE, for example --set train.lr=3e-4")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else None
    except yaml.YAMLError:
        value = value_text
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {key}: {where} is a value, not a section; it has no key {parts[depth + 1]!r}")
        node = child
    node[parts[-1]] = value


def validate_config(raw: dict[str, Any], source: str) -> Config:
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {describe_error(err)}" for err in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    return config


def describe_error(err: dict[str, Any]) -> str:
    raw_loc = tuple(err["loc"])
    loc = _clean_loc(raw_loc)
    key = ".".join(str(part) for part in loc) or "(top level)"
    if not loc and re.match(r"^Value error, [^\s:]+: ", err["msg"]):  # a cross-section check names its own key
        return err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "extra_forbidden":
        if len(raw_loc) == 3 and raw_loc[0] == "model" and raw_loc[1] in MODEL_CLASSES:
            allowed = list(MODEL_CLASSES[raw_loc[1]].model_fields)
        elif len(raw_loc) == 4 and raw_loc[0] == "model" and raw_loc[2] == "ensemble":
            allowed = list(NgramConfig.model_fields)
        elif len(raw_loc) == 3 and raw_loc[0] == "tune":
            allowed = list(TuneRange.model_fields)
        else:
            allowed = _allowed_keys(loc[:-1])
        return f"{key}: unknown key{_did_you_mean(str(loc[-1]), allowed)}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == "union_tag_invalid":
        return f"{key}.type: unknown model type {err['input'].get('type')!r}; allowed: cnn, lstm, bag, ngram"
    if kind == "union_tag_not_found":
        return f"{key}.type: required key is missing (cnn, lstm, bag or ngram)"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if isinstance(got, (dict, list)) or got is None:
        return f"{key}: {message}"
    return f"{key}: {message} (got {got!r})"


def _clean_loc(loc: tuple) -> tuple:
    # pydantic puts the discriminator tag into the path: ('model', 'cnn', 'x') -> ('model', 'x')
    if len(loc) >= 2 and loc[0] == "model" and loc[1] in MODEL_CLASSES:
        return (loc[0],) + tuple(loc[2:])
    return tuple(loc)


def _did_you_mean(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} allowed here: {', '.join(sorted(allowed))}"


def _allowed_keys(parent: tuple) -> list[str]:
    model: Any = Config
    for part in parent:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


PATH_KEYS = (("data", "train"), ("data", "valid"), ("data", "test"), ("data", "prepared_dir"),
             ("model", "pretrained_embeddings"), ("output", "runs_dir"))


def with_absolute_paths(config: Config) -> Config:
    """The same config with every file path made absolute (against the current folder), so that a run's stored
    config works from any folder. Symlinks are kept as written (absolute(), not resolve())."""
    raw = config.model_dump()
    for section, key in PATH_KEYS:
        value = raw[section].get(key)
        if value is not None:
            raw[section][key] = Path(value).absolute()
    return Config.model_validate(raw)


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain JSON/YAML-safe dict (paths as strings), e.g. for config.yaml and checkpoints."""
    raw = config.model_dump(mode="json", exclude={"tune"})
    if config.tune is not None:  # as written: {low, high, log} or {choices}, without the unused fields
        raw["tune"] = {key: spec.model_dump(mode="json", exclude_defaults=True) for key, spec in config.tune.items()}
    return raw


# a resumed run may train longer and change its bookkeeping; anything else makes another run
RESUMABLE_KEYS = frozenset({"train.epochs", "train.refit", "output.keep_runs", "output.tensorboard",
                            "output.export_onnx"})
RESUMABLE_HINT = "train.epochs (and train.refit, output.keep_runs, output.tensorboard, output.export_onnx)"


def check_resumable(stored: Config, current: Config, run_dir: Path) -> None:
    """Refuse to --resume run_dir when the config differs from the run's in anything but RESUMABLE_KEYS.

    Paths compare as absolute paths: a run's config.yaml stores them so (older runs: as written)."""
    changed = flat_differences(config_to_dict(with_absolute_paths(stored)), config_to_dict(with_absolute_paths(current)))
    differences = sorted(key for key in changed if key not in RESUMABLE_KEYS)
    if differences:
        raise ConfigError(f"--resume {run_dir}: the config differs from the run's in {', '.join(differences)}; "
                          f"only {RESUMABLE_HINT} may change when resuming")


def with_stored_auto(current: Config, stored: Config) -> Config:
    """`current` with each `auto` replaced by what the stored run resolved it to: a resumed run keeps its sizes
    even where a newer textclf would resolve `auto` to another value (n-gram buckets, for one)."""
    def adopt(now: Any, then: Any) -> Any:
        if isinstance(now, dict) and isinstance(then, dict):
            return {key: adopt(value, then.get(key)) for key, value in now.items()}
        return then if now == AUTO and then is not None and then != AUTO else now

    return validate_config(adopt(config_to_dict(current), config_to_dict(stored)), source="resumed run config")


def flat_differences(left: Any, right: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, e.g. ['train.lr', 'model.type']."""
    if isinstance(left, dict) and isinstance(right, dict):
        keys = sorted(set(left) | set(right))
        return [diff for key in keys for diff in flat_differences(left.get(key), right.get(key), f"{prefix}{key}.")]
    # `auto` resolves the same way on the same data, which the other keys pin down
    return [] if left == right or right == AUTO else [prefix.rstrip(".")]
