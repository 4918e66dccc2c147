"""The one builder that reads config values into a family's flat arguments, and what every model answers."""

from __future__ import annotations

from typing import Any

from torch import nn

from textclf_cli.models.ensemble import Ensemble
from textclf_cli.models.families import FAMILIES

NOT_MODEL_ARGS = {"type", "pretrained_embeddings", "freeze_embeddings", "calibration"}


def model_kwargs(model_config: Any) -> dict[str, Any]:
    """The flat constructor arguments a checkpoint stores (config keys minus the loading-only ones)."""
    kwargs = {key: value for key, value in model_config.model_dump().items() if key not in NOT_MODEL_ARGS}
    if isinstance(kwargs.get("ensemble"), dict):
        kwargs["ensemble"] = {key: value for key, value in kwargs["ensemble"].items() if key != "calibration"}
    return kwargs


def build_model(model_type: str, vocab_size: int, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """The model of one family, or an Ensemble when the config names a second family under `ensemble`."""
    kwargs = dict(kwargs)
    partner = kwargs.pop("ensemble", None)
    model = FAMILIES[model_type].model_class()(vocab_size=vocab_size, num_classes=num_classes, **kwargs)
    if partner is None:
        return model
    partner = dict(partner)
    return Ensemble(model, FAMILIES[partner.pop("type")].model_class()(vocab_size=vocab_size, num_classes=num_classes, **partner))


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer groups: members with their own settings (the n-gram model) bring theirs; the rest share train's."""
    groups, own = [], set()
    for module in model.modules():
        if hasattr(module, "param_groups"):
            for group in module.param_groups():
                groups.append(group)
                own.update(id(p) for p in group["params"])
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    return ([{"params": rest, "lr": lr, "weight_decay": weight_decay}] if rest else []) + groups


def fit_counts(model: nn.Module, batches: Any, vocabulary: list[str] | None = None) -> bool:
    """Let members that count the training data first (the n-gram model) do so; False when none does."""
    counting = [module for module in model.modules() if hasattr(module, "fit_counts")]
    if counting:
        counting[0].fit_counts(batches, vocabulary)  # one counting member at most (a network + an n-gram model)
    return bool(counting)


def min_width(model: nn.Module) -> int:
    """Shortest padded batch width the model accepts (the widest CNN filter)."""
    return int(getattr(model, "min_width", 1))
