"""Recipes: YAML lists of `{pass: NAME, with: {...}}`, validated against the registry before any work."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compress.base import Pass, registry
from slimline.errors import RecipeError
from slimline.yaml_files import load_yaml_file


@dataclass(frozen=True)
class RecipeStep:
    index: int
    pass_: Pass

    @property
    def name(self) -> str:
        return self.pass_.name

    def config_dict(self) -> dict[str, Any]:
        return self.pass_.config.model_dump(mode="json")


def _config_errors(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(config)"
        parts.append(f"'{key}': {item['msg']}")
    return "; ".join(parts)


def build_step(index: int, raw: Any, source: str) -> RecipeStep:
    where = f"{source} step {index + 1}"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping like {{pass: NAME, with: {{...}}}}, got {raw!r}.",
                          fix="see `slimline passes list` for the pass names.")
    unknown_keys = set(raw) - {"pass", "with"}
    if unknown_keys or "pass" not in raw:
        raise RecipeError(f"{where} has keys {sorted(raw)}; a step takes exactly 'pass' and optionally 'with'.",
                          fix="write the step as {pass: NAME, with: {...}}.")
    name = raw["pass"]
    passes = registry()
    if name not in passes:
        close = difflib.get_close_matches(str(name), passes, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(f"{where}: unknown pass {name!r}.",
                          fix=f"{hint}known passes: {', '.join(passes)}.")
    pass_cls = passes[name]
    options = raw.get("with") or {}
    if not isinstance(options, dict):
        raise RecipeError(f"{where}: 'with' must be a mapping of options, got {options!r}.",
                          fix=f"see `slimline passes list` for {name}'s options.")
    try:
        config = pass_cls.Config.model_validate(options)
    except ValidationError as err:
        fields = ", ".join(pass_cls.Config.model_fields)
        raise RecipeError(f"{where} ({name}): invalid options: {_config_errors(err)}.",
                          fix=f"{name} takes: {fields}.") from err
    return RecipeStep(index, pass_cls(config))


def parse_recipe(data: Any, source: str) -> list[RecipeStep]:
    if data is None:
        return []
    if isinstance(data, dict) and "passes" in data:
        data = data["passes"]
    if not isinstance(data, list):
        raise RecipeError(f"recipe {source} must be a list of steps (or a mapping with 'passes').",
                          fix="write it as a YAML list of {pass: NAME, with: {...}}.")
    return [build_step(i, raw, source) for i, raw in enumerate(data)]


def load_recipe(path: Path | str) -> list[RecipeStep]:
    return parse_recipe(load_yaml_file(Path(path), RecipeError, "recipe"), str(path))


def order_problems(steps: list[RecipeStep]) -> list[str]:
    """Why these passes cannot follow each other: torch-level passes must all come before ONNX ones."""
    problems = []
    seen_onnx: RecipeStep | None = None
    for step in steps:
        if step.pass_.stage == "onnx" and seen_onnx is None:
            seen_onnx = step
        elif step.pass_.stage == "torch" and seen_onnx is not None:
            problems.append(
                f"step {step.index + 1} ({step.name}) works on PyTorch models but comes after step "
                f"{seen_onnx.index + 1} ({seen_onnx.name}), which works on the exported ONNX model; "
                "move torch-level passes before ONNX-level ones"
            )
    return problems
