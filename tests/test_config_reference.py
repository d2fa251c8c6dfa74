"""docs/configuration.md is generated from the config classes and must match them."""

from pydantic import BaseModel

from mssr.config import Config, TaskSpec
from mssr.config_reference import REFERENCE, main, reference_markdown


def _leaf_keys(cls, prefix=""):
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaf_keys(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_the_reference_in_docs_is_the_generated_one():
    assert REFERENCE.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale: run .venv/bin/python -m mssr.config_reference"
    )
    assert main(["--check"]) == 0


def test_every_key_has_a_described_row():
    text = reference_markdown()
    for key, field in [*_leaf_keys(Config), *_leaf_keys(TaskSpec)]:
        assert field.description, f"{key}: no docstring under the field in mssr/config.py"
        assert f"| `{key}` |" in text, key
    assert '| `train.autocast` | `auto` \\| `none` \\| `bf16` | `"auto"` |' in text
    assert "| `train.lr` | number (> 0) | `0.001` |" in text
