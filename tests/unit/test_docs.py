"""The docs: every config key has a description, and the generated reference pages are up to date."""

from __future__ import annotations

import importlib.util
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from textclf_cli.config import MODEL_CLASSES, Config

REPO = Path(__file__).resolve().parents[2]


def load_gen_reference() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "scripts" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nested_models(annotation: Any) -> list[type[BaseModel]]:
    """The section models an annotation holds: in a union, an Annotated type, a list or a dict's values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in nested_models(arg)]


def config_keys(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str | None]]:
    """(dotted key, description) of every field reachable from `model`, each section model walked once per path."""
    keys = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append((key, info.description))
        for section in nested_models(info.annotation):
            keys += config_keys(section, f"{key}.{section.__name__}." if key == "model" else f"{key}.")
    return keys


def test_every_config_key_has_a_description():
    keys = config_keys(Config)
    # the walk reaches every model family, the ensemble member and the tune ranges
    for family in MODEL_CLASSES.values():
        assert any(key.startswith(f"model.{family.__name__}.") for key, _ in keys), family
    assert "model.CNNConfig.ensemble.chars" in dict(keys)
    assert "tune.low" in dict(keys)
    missing = [key for key, description in keys if not (description and description.strip())]
    assert not missing, f"config keys without a description (give each a Field(description=...)): {missing}"


def test_descriptions_carry_no_benchmark_figures():
    # measured figures live in bench/RESULTS.md; a description says what a key does
    dataset_names = ("IMDb", "AG News", "MR ", "Subj", "SST", "MPQA", "CR ")
    quoted = [key for key, description in config_keys(Config)
              if any(name in (description or "") for name in dataset_names)]
    assert not quoted, f"descriptions naming a benchmark dataset: {quoted}"


def test_generated_reference_pages_are_up_to_date(capsys):
    # the same check CI runs; a stale page is rewritten by `python scripts/gen_reference.py`
    assert load_gen_reference().main(["--check"]) == 0, capsys.readouterr().err


def test_config_reference_lists_every_key_of_every_family():
    page = (REPO / "docs" / "reference" / "config.md").read_text(encoding="utf-8")
    for family in MODEL_CLASSES.values():
        for name in family.model_fields:
            assert f"| `model.{name}` |" in page, name
    for name in MODEL_CLASSES["ngram"].model_fields:
        assert f"| `model.ensemble.{name}` |" in page, name
