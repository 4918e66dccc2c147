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
    # every field has a description: the config reference (docs/reference/config.md) is built from them
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    format: Literal["imdb", "csv", "tsv", "jsonl", "parquet"] = Field(
        "csv", description="Format of every data file: `imdb` (the aclImdb archive or its extracted folder), `csv`, "
                           "`tsv`, `jsonl` (each also gzip-compressed, e.g. `train.csv.gz`) or `parquet` (needs the "
                           "`parquet` extra).")
    train: Path = Field(description="Training file; for `imdb` the archive or folder that holds both splits.")
    test: Path | None = Field(None, description="Test file, used by `evaluate --split test`; not used for `imdb`.")
    valid: Path | None = Field(
        None, description="Validation file. When absent, a seeded `data.valid_fraction` of train is carved off "
                          "(stratified for multiclass); for `imdb`, another aclImdb archive or folder whose `test` "
                          "split is used.")
    text_column: str = Field("text", description="Column (CSV/TSV header name, JSONL key) holding the text.")
    label_column: str = Field(
        "label", description="Column holding the label: any strings or integers. With `task: multilabel`, a JSON list "
                             "in JSONL, or a `data.label_separator`-joined string.")
    label_separator: str = Field(
        "|", min_length=1, description="`task: multilabel`: separates the labels in one CSV/TSV field "
                                       "(`sports|business`; an empty field is the empty set).")
    valid_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of train held out for validation when `data.valid` is not set.")
    encoding: str = Field(
        "utf-8", description="Encoding of CSV/TSV/JSONL files: any Python codec name (`latin-1`, `cp1252`, ...). A "
                             "UTF-8 BOM is accepted either way.")
    bad_rows: Literal["skip", "error"] = Field(
        "skip", description="Rows with an empty text or a missing label: `skip` (one warning naming their lines) or "
                            "`error` (exit 3).")
    url: str | None = Field(None, description="Where to download `data.train` from when it is missing.")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Expected sha256 of the `data.train` archive, checked on "
                                                        "every prepare, downloaded or not.")
    prepared_dir: Path = Field(
        Path("data/prepared"), description="Where prepared (tokenized, encoded) data is cached, one folder per "
                                           "fingerprint.")
    chunk_size: int = Field(
        2000, ge=1, le=MAX_CHUNK, description="Texts `prepare` reads and tokenizes at a time. The prepared data is "
                                              "the same whatever its value, so it is not part of the fingerprint.")
    max_row_chars: int = Field(
        10_000_000, ge=1, le=2**31 - 1, description="The longest line of a CSV/TSV/JSONL file (and the longest text "
                                                    "or field) read, in characters. A longer one is a bad row at "
                                                    "file:line, read past in pieces, so one hostile row costs no more "
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
    kind: Literal["regexp", "toktok", "treebank", "punkt"] = Field(
        "regexp", description="nltk tokenizer: `regexp` (words with apostrophes and single punctuation marks; the "
                              "fastest), `toktok`, `treebank` (`word_tokenize` without sentence splitting) or `punkt` "
                              "(with sentence splitting; needs the nltk `punkt_tab` data).")
    lowercase: bool = Field(True, description="Lowercase before tokenizing.")
    strip_html: bool = Field(
        True, description="Replace HTML tags such as `<br />` by spaces and unescape entities (`&amp;`).")
    strip_punctuation: bool = Field(False, description="Drop tokens with no letter or digit.")
    remove_stopwords: bool = Field(False, description="Drop English stopwords (the `tokenizer.stopwords` list).")
    stopwords: Literal["sklearn", "nltk"] = Field(
        "sklearn", description="Stopword list: `sklearn` (scikit-learn's English list, no download) or `nltk` (needs "
                               "the nltk `stopwords` data).")


class VocabConfig(Strict):
    max_size: int = Field(
        30000, ge=3, le=MAX_VOCAB, description="Largest vocabulary, `<pad>` and `<unk>` included; the most frequent "
                                               "training tokens are kept.")
    min_freq: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        AUTO, description="Tokens seen fewer times in train become `<unk>`. `auto`: 1 on short texts in a small "
                          "corpus (the rule of `model.chars: auto`), else 2.")
    max_length: Annotated[int, Field(ge=1, le=MAX_LENGTH)] | Literal["auto"] = Field(
        AUTO, description="Tokens kept per text for training, evaluation and prediction. `auto`: the length that 97% "
                          "of the training texts do not exceed, rounded up to a multiple of 32, at most 1024. Applied "
                          "when batching: changing it does not prepare the data again.")
    truncate: Literal["head", "tail", "head_tail"] = Field(
        "head_tail", description="Which tokens a longer text keeps: `head` (the first `vocab.max_length`), `tail` "
                                 "(the last) or `head_tail` (the first quarter and the last three quarters).")


class EmbeddingSettings(Strict):
    embedding_dim: int = Field(128, ge=1, le=MAX_WIDTH, description="Size of the word embeddings.")
    pretrained_embeddings: Path | None = Field(
        None, description="GloVe/word2vec text file (optionally `.gz`, with or without a header line) to initialize "
                          "the embeddings; its vector size must equal `embedding_dim`. Coverage is logged.")
    freeze_embeddings: bool = Field(False, description="Keep pretrained embeddings fixed instead of fine-tuning them.")
    calibration: Literal["temperature", "none"] = Field(
        "temperature", description="`temperature`: after training, divide the logits by a temperature fitted on the "
                                   "validation split, so that a probability of 0.9 is right about 90% of the time "
                                   "(predict, evaluate and the export all apply it); `none` keeps the raw "
                                   "probabilities. Inside `model.ensemble` it is not used: the model's own setting "
                                   "calibrates the mixed logits.")


class NgramConfig(Strict):
    """NBSVM-style logistic regression over hashed word n-grams (models/ngram.py); alone or as an ensemble member."""

    type: Literal["ngram"] = Field(
        "ngram", description="`ngram`: NBSVM-style logistic regression over word (and character) n-grams.")
    calibration: Literal["temperature", "none"] = Field(
        "temperature", description="`temperature`: after training, divide the logits by a temperature fitted on the "
                                   "validation split, so that a probability of 0.9 is right about 90% of the time "
                                   "(predict, evaluate and the export all apply it); `none` keeps the raw "
                                   "probabilities. Inside `model.ensemble` it is not used: the model's own setting "
                                   "calibrates the mixed logits.")
    ngrams: Annotated[int, Field(ge=1, le=4)] | Literal["auto"] = Field(
        AUTO, description="Longest word n-gram. `auto`: 3 when the training split holds at least 1M tokens (after "
                          "truncation), else 2.")
    buckets: Annotated[int, Field(ge=1, le=MAX_BUCKETS)] | Literal["auto"] = Field(
        AUTO, description="Hashed rows for n-grams of order 2 and up. `auto`: the power of two at or above the number "
                          "of training tokens, between 2^14 and 2^23.")
    min_df: int = Field(
        2, ge=1, description="n-grams found in fewer training texts are dropped (as `TfidfVectorizer(min_df=...)`).")
    alpha: float = Field(1.0, gt=0.0, description="Naive-Bayes count smoothing.")
    lr: float = Field(
        0.01, gt=0.0, description="Its own Adam step size (a linear model wants a larger one than a network); "
                                  "`train.lr` is the network's.")
    l2: float = Field(
        0.1, ge=0.0, description="L2 penalty on the weights per training text, as `LogisticRegression(C=1/l2)`.")
    chars: Annotated[int, Field(ge=0, le=8)] | Literal["auto"] = Field(
        AUTO, description="Character 2..`chars`-grams inside each word too (like scikit-learn's `char_wb`); 0: words "
                          "only. `auto`: 5 on short texts in a small corpus (under 1M training tokens, 97% of the "
                          "texts within 128 tokens), else 0.")


class CNNConfig(EmbeddingSettings):
    type: Literal["cnn"] = Field(
        "cnn", description="`cnn`: Kim-style TextCNN (embedding, parallel 1-D convolutions, pooling over time, "
                           "dropout, linear).")
    num_filters: int = Field(100, ge=1, le=MAX_WIDTH, description="Convolution filters per width.")
    filter_sizes: list[Annotated[int, Field(ge=1, le=64)]] = Field(
        default_factory=lambda: [3, 4, 5], min_length=1, max_length=16,
        description="Convolution widths in tokens; texts shorter than the widest are padded.")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout before the output layer.")
    pooling: Literal["max", "max_mean"] = Field(
        "max", description="`max` (max over time) or `max_mean` (max and mean concatenated).")
    word_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability of dropping a whole word vector during training (the rest are "
                                         "scaled up), so that no single word carries a text.")
    ensemble: NgramConfig | None = Field(
        default_factory=NgramConfig, description="The n-gram model trained beside the network, their logits mixed "
                                                 "(see the Models guide); its keys are those of `ngram`. `null` "
                                                 "trains the network alone.")


class LSTMConfig(EmbeddingSettings):
    type: Literal["lstm"] = Field(
        "lstm", description="`lstm`: embedding, stacked (Bi)LSTM over length-bucketed batches, pooling, dropout, "
                            "linear.")
    hidden_size: int = Field(128, ge=1, le=MAX_WIDTH, description="LSTM hidden size per direction.")
    num_layers: int = Field(1, ge=1, le=32, description="Stacked LSTM layers.")
    bidirectional: bool = Field(True, description="Also run each text backwards.")
    dropout: float = Field(
        0.5, ge=0.0, lt=1.0, description="Dropout on the embeddings, between layers and before the output layer.")
    pooling: Literal["last", "max", "mean", "max_mean"] = Field(
        "last", description="How the sequence becomes one vector: `last` (the final hidden states), `max`, `mean` or "
                            "`max_mean`.")
    word_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Probability of dropping a whole word vector during training (the rest are "
                                         "scaled up), so that no single word carries a text.")
    ensemble: NgramConfig | None = Field(
        default_factory=NgramConfig, description="The n-gram model trained beside the network, their logits mixed "
                                                 "(see the Models guide); its keys are those of `ngram`. `null` "
                                                 "trains the network alone.")


class BagConfig(EmbeddingSettings):
    type: Literal["bag"] = Field(
        "bag", description="`bag`: fastText-style mean of word and hashed n-gram embeddings, then linear.")
    embedding_dim: int = Field(
        32, ge=1, le=MAX_WIDTH, description="Size of each word and n-gram vector (the bag model's own default).")
    ngrams: int = Field(2, ge=1, le=3, description="Longest word n-gram; 1 means words only.")
    buckets: int = Field(
        1_000_000, ge=1, le=MAX_BUCKETS, description="Hash buckets for n-grams: the embedding table has vocabulary + "
                                                     "buckets rows, so this sets the model's size.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the output layer.")
    sparse: bool = Field(
        False, description="Sparse embedding gradients: each step updates only the rows it used, which is much "
                           "faster. Needs `train.optimizer: adagrad` (or `sgd` with `train.momentum: 0`) and "
                           "`train.weight_decay: 0`.")


ModelConfig = Annotated[CNNConfig | LSTMConfig | BagConfig | NgramConfig, Field(discriminator="type")]
MODEL_CLASSES: dict[str, type[Strict]] = {"cnn": CNNConfig, "lstm": LSTMConfig, "bag": BagConfig,
                                          "ngram": NgramConfig}


class TrainConfig(Strict):
    epochs: int = Field(
        10, ge=1, le=100_000, description="Most epochs to train: early stopping usually ends a run before. One of the "
                                          "keys that may change on `--resume`.")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="Texts per training batch.")
    optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = Field(
        "adam", description="The optimizer; `adagrad` (or `sgd` without momentum) is the one for `model.sparse: "
                            "true`.")
    lr: float = Field(1e-3, gt=0.0, description="Learning rate of the network (an n-gram model has its own `lr`).")
    weight_decay: float = Field(
        0.0, ge=0.0, description="Weight decay: L2 for `adam`, `sgd` and `adagrad`, decoupled for `adamw`.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="Momentum, used by `sgd` only.")
    scheduler: Literal["none", "linear", "cosine"] = Field(
        "none", description="Learning-rate schedule, stepped every batch: `none` (constant), `linear` or `cosine` "
                            "decay to 0 at the last epoch.")
    warmup_epochs: float = Field(
        0.0, ge=0.0, description="Linear warm-up from about 0 to `lr` over this many epochs (fractions allowed), "
                                 "before the schedule.")
    grad_clip: float | None = Field(
        5.0, gt=0.0, description="Clip the gradient norm to this value; `null` turns clipping off.")
    early_stopping_patience: int | None = Field(
        2, ge=1, description="Stop after this many epochs without `monitor` improving; `null` never stops early. In "
                             "an ensemble each member also stops, back to its best weights, after this many epochs "
                             "without improving.")
    monitor: str = Field(
        "valid_f1_macro", description="Validation metric that picks `best.pt` and drives early stopping and "
                                      "`--promote-if-better`: `valid_f1_macro`, `valid_accuracy`, `valid_loss` (lower "
                                      "is better) or, for `task: multilabel`, `valid_f1_micro`.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="`balanced` weights the loss by inverse class frequency (as scikit-learn's `balanced`), "
                            "for imbalanced data; multiclass only.")
    pos_weight: Literal["none", "balanced"] = Field(
        "none", description="`task: multilabel`: `balanced` weighs each label's positive examples by its "
                            "negatives/positives ratio in train, so that rare labels are not ignored.")
    threshold: float | Literal["per_label"] = Field(
        0.5, description="`task: multilabel`: a label is predicted when its probability is at or above its threshold: "
                         "one number for every label, or `per_label` to tune each label's for F1 on the validation "
                         "split after every epoch.")
    bucket_chunk: int = Field(
        50, ge=1, le=100_000, description="Length bucketing: the training order is shuffled, then sorted by length "
                                          "within chunks of this many batches, so that batches carry little padding.")
    eval_batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="Batch size for validation; raise it on a GPU.")
    num_threads: int | None = Field(
        None, ge=1, le=4096, description="torch CPU threads (`torch.set_num_threads`); `null` keeps torch's default.")
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32", description="Autocast mixed precision: `fp32`, `bf16`, `fp16` (CUDA only, with a gradient scaler) or "
                            "`auto` (bf16 where the hardware computes it natively, a CUDA GPU with bf16 or a CPU with "
                            "AMX; else fp32).")
    compile: bool = Field(
        False, description="Wrap the model in `torch.compile`; checkpoints store the plain module. It slows these "
                           "models down (see the GPU guide).")
    refit: bool | Literal["auto"] = Field(
        False, description="`true`: after training, a fresh model trains on train + valid for the epochs validation "
                           "chose and becomes `best.pt` (the model chosen on validation stays as "
                           "`checkpoints/selected.pt`). `auto`: when the validation split is carved from train "
                           "(`data.valid` not set). See the Models guide for when it pays.")

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


class CheckConfig(Strict):
    """Thresholds of `textclf check` (and of the summary `train` logs): above them a finding is a warning or an error."""

    min_per_class: int = Field(
        10, ge=1, description="A class with fewer training rows is a warning (`check --min-per-class` overrides it).")
    max_imbalance: float = Field(
        20.0, ge=1.0, description="Rows of the largest training class over the smallest; above this, a warning.")
    max_dropped: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of a split's rows dropped (empty text or label); above this, an error.")
    max_leakage: float = Field(
        0.01, ge=0.0, le=1.0, description="Share of valid/test texts also in train (after normalising case, "
                                          "whitespace and punctuation); above this, an error (any at all: a warning).")
    max_duplicates: float = Field(
        0.01, ge=0.0, le=1.0, description="Share of a split's texts that repeat an earlier one in the same split "
                                          "(after normalising); above this, a warning.")
    max_conflicts: float = Field(
        0.01, ge=0.0, le=1.0, description="Share of a split's texts that also occur (normalised) with another label; "
                                          "above this, an error (any at all: a warning).")
    max_truncated: float = Field(
        0.10, ge=0.0, le=1.0, description="Share of a split's texts longer than `vocab.max_length` (or what `auto` "
                                          "resolves to); above this, a warning.")
    max_oov: float = Field(
        0.05, ge=0.0, le=1.0, description="Share of valid/test tokens missing from train's vocabulary; above this, a "
                                          "warning.")
    examples: int = Field(3, ge=0, le=100, description="Example rows shown per duplicate, leakage and conflict finding.")
    on_train: bool = Field(
        True, description="`train` reads the splits once more (no tokenizing) and logs a one-line summary of rows, "
                          "labels, duplicates and leakage, with warnings.")


class OutputConfig(Strict):
    runs_dir: Path = Field(Path("runs"), description="Folder that holds the `<experiment>/<run-id>/` run folders.")
    keep_runs: int | None = Field(
        None, ge=1, description="After each successful `train`, delete the experiment's oldest finished runs beyond "
                                "the newest N, as `textclf runs prune --keep N` does; `null` keeps every run.")
    tensorboard: bool = Field(
        False, description="Write per-epoch scalars and the final hparams to `<run>/tensorboard/` (needs the "
                           "`tensorboard` extra).")
    export_onnx: bool | Literal["auto"] = Field(
        "auto", description="After a completed `train`, export `best.pt` to `<run>/export/model.onnx`, so that "
                            "`predict RUN` answers a few texts without importing torch. `auto`: when onnx and "
                            "onnxruntime (the `export` extra) are installed; `true` refuses to start without them.")


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

    low: int | float | None = Field(None, description="Lowest value of a numeric range.")
    high: int | float | None = Field(None, description="Highest value of a numeric range.")
    log: bool = Field(False, description="Sample the range on a log scale (needs `low > 0`).")
    choices: list[Any] | None = Field(None, min_length=1, description="The values to choose from, instead of a range.")

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
    experiment: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100,
        description="Name of the experiment: its runs go to `<output.runs_dir>/<experiment>/`.")
    # numpy's and sklearn's seeds are unsigned 32-bit
    seed: int = Field(
        42, ge=0, le=2**32 - 1, description="Seeds model initialization, the validation split and batch order: the "
                                            "same config and seed on a CPU give the same metrics.")
    device: str = Field(
        "auto", description="`auto` (CUDA, then MPS, then CPU), `cpu`, `cuda`, `cuda:N` or `mps`; asking for one that "
                            "is not there is an error.")
    task: Literal["multiclass", "multilabel"] = Field(
        "multiclass", description="`multiclass` (one label per text, softmax) or `multilabel` (a set of labels per "
                                  "text, possibly empty: a sigmoid per label).")
    data: DataConfig = Field(description="Where the labelled text is and how to read it.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="How a text becomes tokens.")
    vocab: VocabConfig = Field(
        default_factory=VocabConfig, description="How tokens become ids, and how many a text keeps.")
    model: ModelConfig = Field(
        default_factory=CNNConfig, description="The model family (`model.type`) and its settings.")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="The optimizer, the schedule, early stopping and the hardware "
                                                 "settings of training.")
    output: OutputConfig = Field(
        default_factory=OutputConfig, description="Where runs go and what is written beside them.")
    check: CheckConfig = Field(
        default_factory=CheckConfig, description="Thresholds of `textclf check` and of the data summary `train` logs.")
    tune: dict[str, TuneRange] | None = Field(
        None, description="Search space of `textclf tune`: dotted `SECTION.KEY` keys mapped to ranges; other commands "
                          "ignore it.")

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


MACHINE_AUTO_KEYS = frozenset({"device", "train.precision", "output.export_onnx"})


def with_stored_auto(current: Config, stored: Config) -> Config:
    """`current` with each `auto` replaced by what the stored run resolved it to: a resumed run keeps its sizes
    even where a newer textclf would resolve `auto` to another value (n-gram buckets, for one)."""
    def adopt(now: Any, then: Any, key: str) -> Any:
        if isinstance(now, dict) and isinstance(then, dict):
            return {name: adopt(value, then.get(name), f"{key}{name}.") for name, value in now.items()}
        if key.rstrip(".") in MACHINE_AUTO_KEYS:  # what the machine resuming the run has, not what the first one had
            return now
        return then if now == AUTO and then is not None and then != AUTO else now

    return validate_config(adopt(config_to_dict(current), config_to_dict(stored), ""), source="resumed run config")


def flat_differences(left: Any, right: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, e.g. ['train.lr', 'model.type']."""
    if isinstance(left, dict) and isinstance(right, dict):
        keys = sorted(set(left) | set(right))
        return [diff for key in keys for diff in flat_differences(left.get(key), right.get(key), f"{prefix}{key}.")]
    # `auto` resolves the same way on the same data, which the other keys pin down
    return [] if left == right or right == AUTO else [prefix.rstrip(".")]
