"""Write docs/reference/config.md from the pydantic schema and docs/reference/cli.md from the Typer app.

    python scripts/gen_reference.py           # rewrite both pages
    python scripts/gen_reference.py --check   # exit 1 when a page is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parent.parent
CONFIG_PAGE = ROOT / "docs" / "reference" / "config.md"
CLI_PAGE = ROOT / "docs" / "reference" / "cli.md"

CONFIG_INTRO = """# Config reference

A config is YAML. Every key below except `experiment` and `data.train` has a default. Unknown keys, wrong types
and impossible values are refused before any work starts, one line per problem naming the file and the key
path (with a "did you mean" for typos), exit code 2. Paths are relative to the current directory, not to the
config file. `--set key.path=value` overrides a key (the value is parsed as YAML). `textclf train` writes the
fully resolved config, every `auto` replaced by the value chosen, to the run's `config.yaml`.

This page is generated from the schema in `textclf_cli/config.py` by `python scripts/gen_reference.py`.
"""


# Allowed values that a validator checks rather than the type: (key as in the tables) -> text
CHECKED_VALUES = {
    "device": "`auto`, `cpu`, `cuda`, `cuda:N`, `mps`",
    "data.encoding": "a Python codec name",
    "train.monitor": "MONITORS",
    "train.threshold": "> `0`, < `1`",
}


def section_models() -> list[tuple[str, str, type[BaseModel]]]:
    """(heading, key prefix, pydantic model) for every table of the reference, in reading order."""
    from textclf_cli import config

    families = [(f"`model` with `type: {name}`", "model", cls) for name, cls in config.MODEL_CLASSES.items()]
    return [
        ("Top level", "", config.Config),
        ("`data`", "data", config.DataConfig),
        ("`tokenizer`", "tokenizer", config.TokenizerConfig),
        ("`vocab`", "vocab", config.VocabConfig),
        *families,
        ("`model.ensemble`", "model.ensemble", config.NgramConfig),
        ("`train`", "train", config.TrainConfig),
        ("`output`", "output", config.OutputConfig),
        ("`check`", "check", config.CheckConfig),
        ("`tune`", "tune.SECTION.KEY", config.TuneRange),
    ]


SECTION_INTROS = {
    "Top level": "Besides the keys below, the top level holds the sections [`data`](#data), "
                 "[`tokenizer`](#tokenizer), [`vocab`](#vocab), `model` (one table per family: "
                 "[`cnn`](#model-with-type-cnn), [`lstm`](#model-with-type-lstm), [`bag`](#model-with-type-bag), "
                 "[`ngram`](#model-with-type-ngram)), [`train`](#train), [`output`](#output), [`check`](#check) and [`tune`](#tune).",
    "`model.ensemble`": "The n-gram model that trains beside a `cnn` or `lstm` network, with the keys of the "
                        "[`ngram` family](#model-with-type-ngram); `model.ensemble: null` trains the network alone. "
                        "How the two are mixed is in the [Models guide](../guides/models.md).",
    "`tune`": "The search space of `textclf tune`: each searched key, a dotted `SECTION.KEY` of `tokenizer`, "
              "`vocab`, `model` or `train`, maps to a numeric range `{low, high, log}` or to `{choices: [...]}`. "
              "See the [Tuning guide](../guides/tuning.md).",
}


def is_section(info: FieldInfo) -> bool:
    """A field that is a whole section (documented in its own table) rather than a setting."""
    members = [arg for arg in _union_members(info.annotation) if arg is not type(None)]
    return any(isinstance(arg, type) and issubclass(arg, BaseModel) for arg in members) or any(
        typing.get_origin(arg) is typing.Annotated for arg in members)


def _union_members(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _union_members(arg)]
    return [annotation]


def type_name(annotation: Any) -> str:
    """`int \\| null`, `bool \\| auto`, `list of int`: the kinds of value a key takes (fixed words go to allowed)."""
    names = []
    for member in _union_members(annotation):
        origin = typing.get_origin(member)
        if member is type(None):
            names.append("null")
        elif origin is Literal:
            values = typing.get_args(member)
            names.append(f"`{values[0]}`" if len(values) == 1 else "str")
        elif origin is list:
            item = _union_members(typing.get_args(member)[0])[0]
            names.append(f"list of {getattr(item, '__name__', 'values')}" if item is not Any else "list")
        elif origin is dict:
            names.append("mapping")
        elif isinstance(member, type) and issubclass(member, BaseModel):
            family = member.model_fields.get("type")
            names.append(f"`{family.default}` section" if family else "section")
        elif isinstance(member, type) and issubclass(member, Path):
            names.append("path")
        else:
            names.append(getattr(member, "__name__", str(member)))
    return " \\| ".join(dict.fromkeys(names))


def choices(annotation: Any) -> list[str]:
    """The words a key accepts, from a Literal of several (a single word, like `auto`, is shown as its type)."""
    literals = [typing.get_args(member) for member in _union_members(annotation) if typing.get_origin(member) is Literal]
    return [f"`{word}`" for values in literals if len(values) > 1 for word in values]


def _constraints(items: list[Any]) -> list[str]:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <=",
             "pattern": "matches"}
    parts = []
    for item in items:
        for attribute, word in words.items():
            value = getattr(item, attribute, None)
            if value is not None:
                parts.append(f"{word} `{value}`")
    return list(dict.fromkeys(parts))


def _annotated_metadata(annotation: Any) -> list[Any]:
    return [m for arg in typing.get_args(annotation)[1:] for m in getattr(arg, "metadata", [arg])]


def bounds(info: FieldInfo) -> str:
    """The numeric and length constraints of a field, its own, its Annotated union members' and its list items'."""
    found = list(info.metadata)
    if typing.get_origin(info.annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(info.annotation):
            if typing.get_origin(member) is typing.Annotated:
                found += _annotated_metadata(member)
    parts = _constraints(found)
    if typing.get_origin(info.annotation) is list:
        item = typing.get_args(info.annotation)[0]
        if typing.get_origin(item) is typing.Annotated:
            parts.append("each " + ", ".join(_constraints(_annotated_metadata(item))))
    return ", ".join(parts)


def allowed_text(key: str, info: FieldInfo) -> str:
    from textclf_cli.config import MONITORS

    checked = CHECKED_VALUES.get(key, "")
    if checked == "MONITORS":
        checked = ", ".join(f"`{name}`" for name in MONITORS)
    parts = [", ".join(choices(info.annotation)), bounds(info), checked]
    return "; ".join(part for part in parts if part).replace("|", "\\|")


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return f"`type: {value.type}`" if hasattr(value, "type") else "(section)"
    if value is PydanticUndefined:
        return ""
    if value is None or isinstance(value, bool):
        value = {None: "null", True: "true", False: "false"}[value]
    return f"`{value}`".replace("|", "\\|")


def table_rows(prefix: str, model: type[BaseModel]) -> list[str]:
    """One row per setting of a section (`type` first), skipping fields that are sections of their own."""
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] != "type")
    rows = []
    for name, info in fields:
        if is_section(info) and name != "ensemble":
            continue
        key = f"{prefix}.{name}" if prefix else name
        description = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name(info.annotation)} | {default_text(info)} | {allowed_text(key, info)} | "
                    f"{description} |")
    return rows


def config_reference() -> str:
    lines = [CONFIG_INTRO]
    for heading, prefix, model in section_models():
        lines += ["", f"## {heading}", ""]
        if heading in SECTION_INTROS:
            lines += [SECTION_INTROS[heading], ""]
        lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        lines += table_rows(prefix, model)
    return "\n".join(lines) + "\n"


def cli_reference() -> str:
    import typer
    from typer.cli import get_docs_for_click

    from textclf_cli.cli import app

    command = typer.main.get_command(app)
    body = get_docs_for_click(obj=command, ctx=typer.Context(command), name="textclf", title="CLI reference")
    note = "\nThis page is generated from the Typer app in `textclf_cli/cli.py` by `python scripts/gen_reference.py`.\n"
    head, _, rest = body.partition("\n")
    return head + "\n" + note + rest.rstrip() + "\n"


def pages() -> dict[Path, str]:
    return {CONFIG_PAGE: config_reference(), CLI_PAGE: cli_reference()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a page is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, content in pages().items():
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != content:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    for path in stale:
        print(f"{path.relative_to(ROOT)} is out of date: run python scripts/gen_reference.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
