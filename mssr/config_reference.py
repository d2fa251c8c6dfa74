"""The configuration reference (``docs/configuration.md``), made from the config classes.

Every field of ``mssr.config.Config`` carries its reason as the docstring under it; this
module renders them, with each field's type, default and bounds, as one Markdown table per
section, so that the reference cannot drift from the code (``tests/test_config_reference.py``
fails when the file and the classes disagree).

    .venv/bin/python -m mssr.config_reference            # rewrite docs/configuration.md
    .venv/bin/python -m mssr.config_reference --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mssr.config import Config, DatasetSource, TaskSpec

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

_HEADER = """# Configuration reference

A run is configured by one YAML file of the sections below (every key optional: each has a
default, with the reason for it), plus `key=value` overrides on the command line
(`mssr run configs/demo.yaml replay.strategy=fixed seed=1`). The whole config is validated
before anything starts: an unknown key is refused with the nearest valid one, a wrong type or
an out-of-range value names the dotted key.

This page is generated from `mssr/config.py` by `python -m mssr.config_reference`; edit the
docstrings there, not this file.
"""

_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _type_name(annotation) -> str:
    """``Optional[Literal["a", "b"]]`` -> ``a | b | null``, in the words of a YAML file."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is typing.Union:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (list, tuple):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"list of {inner}" if origin is list else f"[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation is TaskSpec:
            return "task (see the task table)"
        return "dataset (see the dataset table)" if annotation is DatasetSource else "section"
    return {"str": "string", "int": "integer", "float": "number", "bool": "true/false"}.get(
        getattr(annotation, "__name__", str(annotation)), str(annotation)
    )


def _bounds(field: FieldInfo) -> str:
    return ", ".join(f"{_BOUNDS[k]} {getattr(m, k)}" for m in field.metadata for k in _BOUNDS if hasattr(m, k))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if isinstance(value, BaseModel):
        return ""
    return f"`{json.dumps(value)}`"


def _table(cls: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            continue  # a sub-section: its own table
        kind = _type_name(ann) + (f" ({_bounds(field)})" if _bounds(field) else "")
        text = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {kind} | {_default(field)} | {text} |")
    return rows


def _sections(cls: type[BaseModel], prefix: str = ""):
    """(dotted section name, class) for ``cls`` and every section under it, depth first."""
    yield prefix.rstrip("."), cls
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _sections(ann, f"{prefix}{name}.")


def reference_markdown() -> str:
    """The whole of ``docs/configuration.md``."""
    out = [_HEADER]
    for section, cls in _sections(Config):
        out.append(f"## `{section}`" if section else "## Top level")
        if cls.__doc__ and not cls.__doc__.startswith(("Usage docs", "!!! abstract")):
            out.append("\n" + " ".join(cls.__doc__.split()))
        out.append("\n" + "\n".join(_table(cls, f"{section}." if section else "")) + "\n")
    out.append("## `stream.tasks[]`: one task\n")
    out.append("\n".join(_table(TaskSpec, "")) + "\n")
    out.append("## A task's `train`, `test` or `validation` as a Hugging Face dataset\n")
    out.append(" ".join(DatasetSource.__doc__.split()) + "\n")
    out.append("\n".join(_table(DatasetSource, "")) + "\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    args = ap.parse_args(argv)
    text = reference_markdown()
    if args.check:
        if not REFERENCE.is_file() or REFERENCE.read_text(encoding="utf-8") != text:
            print(f"{REFERENCE} is stale: run python -m mssr.config_reference", file=sys.stderr)
            return 1
        return 0
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
