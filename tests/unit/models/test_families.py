"""models/families.py: the one table of model families agrees with the config schema, the builder and tune."""

from __future__ import annotations

import typing

import pytest
from torch import nn

from textclf_cli import config
from textclf_cli.config import Config
from textclf_cli.models.families import FAMILIES, default_space
from textclf_cli.tuning.space import search_space


def test_the_config_schema_names_exactly_the_families_of_the_table() -> None:
    union = typing.get_args(typing.get_args(config.ModelConfig)[0])
    assert set(config.MODEL_CLASSES) == set(FAMILIES)
    assert {family.config_class for family in FAMILIES.values()} == set(union)
    for name, family in FAMILIES.items():
        assert config.MODEL_CLASSES[name] is family.config_class
        assert family.config_class.model_fields["type"].default == name


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_builds_a_module_and_has_a_valid_default_space(name: str) -> None:
    assert issubclass(FAMILIES[name].model_class(), nn.Module)
    space = default_space(name)
    assert space, f"{name} has no default tune space"
    # every key of the default space is a real, tunable key of that family (check_tune_key raises otherwise)
    tuned = Config.model_validate({"experiment": "x", "data": {"train": "t.csv"}, "model": {"type": name},
                                   "tune": {key: spec.model_dump(exclude_none=True) for key, spec in space.items()}})
    assert set(search_space(tuned)) == set(space)
