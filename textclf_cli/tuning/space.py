"""What `textclf tune` searches: the config's `tune:` section or a default space per model family, sampled into
parameter values and applied to a config as dotted keys."""

from __future__ import annotations

import copy
import json
from typing import Any

from textclf_cli.config import Config, TuneRange, tune_target, value_kind
from textclf_cli.models.families import default_space

# fastText-style lr for the optimizers that sparse bags use; Adam wants the common range
PLAIN_SGD_LR = TuneRange(low=1e-2, high=1.0, log=True)


def search_space(config: Config) -> dict[str, TuneRange]:
    """The config's `tune:` section, or the default space of its model family."""
    if config.tune:
        return dict(config.tune)
    space = default_space(config.model.type)
    if config.train.optimizer in ("sgd", "adagrad"):
        space["train.lr"] = PLAIN_SGD_LR
    if getattr(config.model, "pretrained_embeddings", None) is not None:  # the vectors fix the embedding size
        space.pop("model.embedding_dim", None)
    return {key: _widened(spec, _config_value(config, key)) for key, spec in space.items()}


def _config_value(config: Config, key: str) -> Any:
    section, _, name = key.partition(".")
    return config.model_dump(mode="json")[section][name]


def _widened(spec: TuneRange, value: Any) -> TuneRange:
    """A default range stretched to hold the config's own value, so that the first trial can run the config
    exactly as written."""
    if spec.choices is not None:
        return spec if value in spec.choices else TuneRange(choices=[value, *spec.choices])
    if not isinstance(value, (int, float)) or isinstance(value, bool) or (spec.log and value <= 0):
        return spec
    return TuneRange(low=min(spec.low, value), high=max(spec.high, value), log=spec.log)


def value_kinds(config: Config, space: dict[str, TuneRange]) -> dict[str, str]:
    """'int', 'float' or 'other' per key: whether a range is sampled as whole numbers."""
    kinds = {}
    for key in space:
        model, name = tune_target(config, key)
        kinds[key] = value_kind(model.model_fields[name].annotation)
    return kinds


def choice_label(choice: Any) -> Any:
    """Optuna stores only plain choices: a list such as [3, 4, 5] is stored as its JSON text."""
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)


def suggest(trial: Any, space: dict[str, TuneRange], kinds: dict[str, str]) -> dict[str, Any]:
    """One value per key, drawn by the trial's sampler."""
    params: dict[str, Any] = {}
    for key, spec in space.items():
        if spec.choices is not None:
            labels = {choice_label(choice): choice for choice in spec.choices}
            params[key] = labels[trial.suggest_categorical(key, list(labels))]
        elif kinds[key] == "int":
            params[key] = trial.suggest_int(key, int(spec.low), int(spec.high), log=spec.log)
        else:
            params[key] = trial.suggest_float(key, float(spec.low), float(spec.high), log=spec.log)
    return params


def decode_params(space: dict[str, TuneRange], stored: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params back as config values (JSON text of a list choice -> the list)."""
    params = {}
    for key, value in stored.items():
        spec = space.get(key)
        labels = {choice_label(choice): choice for choice in spec.choices} if spec and spec.choices else {}
        params[key] = labels.get(value, value)
    return params


def params_as_written(config: Config, space: dict[str, TuneRange]) -> dict[str, Any]:
    """The config's own values of the searched keys that lie inside the space, as stored labels: the first
    trial runs them, so the study never ends below the untuned config."""
    params = {}
    for key, spec in space.items():
        value = _config_value(config, key)
        if spec.choices is not None:
            if value in spec.choices:
                params[key] = choice_label(value)
        elif isinstance(value, (int, float)) and spec.low <= value <= spec.high:
            params[key] = value
    return params


def apply_params(raw: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of a plain config dict with each dotted key set, e.g. {"train.lr": 3e-3}."""
    result = copy.deepcopy(raw)
    for key, value in params.items():
        section, _, name = key.partition(".")
        result.setdefault(section, {})[name] = copy.deepcopy(value)
    return result
