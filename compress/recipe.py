"""Recipes: YAML lists of `{pass: NAME, with: {...}, optional: BOOL}`, validated against the registry before any work.

A step marked `optional: true` is a pure speed-up (graph fusion): where it cannot apply to the model (its
`check()` refuses, or `apply()` raises StepNotApplicable: no fusion rules, nothing fused), the pipeline skips
it with a line on the console and in the report and goes on with the model as it was. A required step (the
default) refuses or fails as before, so a recipe still says exactly what must happen.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from slimline.compression.base import Pass, Problem
from slimline.compression.catalogue import pass_class, pass_names
from slimline.core.errors import RecipeError, shorten
from slimline.core.suggest import validation_problems
from slimline.core.yaml_files import load_yaml_file
from slimline.profiles.schema import Profile, recipe_path


@dataclass(frozen=True)
class RecipeStep:
    index: int
    pass_: Pass
    optional: bool = False  # skipped, not failed, where it cannot apply to the model

    @property
    def name(self) -> str:
        return self.pass_.name

    def config_dict(self) -> dict[str, Any]:
        return self.pass_.config.model_dump(mode="json")


@dataclass(frozen=True)
class SkippedStep:
    """An optional step that did not run, and why (for the console, the report and the manifest)."""

    step: RecipeStep
    reason: str

    @property
    def line(self) -> str:
        """e.g. "fusion: not available for deberta-v2; continuing unfused (optional step 1,
        optimize.ort-transformers)"."""
        pass_ = self.step.pass_
        label = pass_.skip_label or self.step.name
        return (f"{label}: {self.reason}; {pass_.skip_consequence} (optional step {self.step.index + 1}, "
                f"{self.step.name})")

    def as_data(self) -> dict[str, Any]:
        return {"step": self.step.index + 1, "pass": self.step.name, "reason": self.reason, "line": self.line}


#: Keys a recipe step may have.
STEP_KEYS = frozenset({"pass", "with", "optional"})


def _config_errors(err: ValidationError, config: type[BaseModel]) -> str:
    return "; ".join(f"'{key or '(config)'}': {message}" for key, message in validation_problems(err, config))


def build_step(index: int, raw: Any, source: str) -> RecipeStep:
    where = f"{source} step {index + 1}"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where} must be a mapping like {{pass: NAME, with: {{...}}}}, got {shorten(raw)}.",
                          fix="see `slimline passes list` for the pass names.")
    unknown_keys = set(raw) - STEP_KEYS
    if unknown_keys or "pass" not in raw:
        raise RecipeError(f"{where} has keys {shorten(list(raw))}; a step takes exactly 'pass' and optionally "
                          "'with' and 'optional'.",
                          fix="write the step as {pass: NAME, with: {...}} (optional: true for a pure speed-up "
                              "that may be skipped).")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise RecipeError(f"{where}: 'optional' must be true or false, got {shorten(optional)}.",
                          fix="write optional: true (skip the step where it cannot apply) or leave it out.")
    name = raw["pass"]
    pass_cls = pass_class(name) if isinstance(name, str) else None
    if pass_cls is None:
        known = pass_names()
        close = difflib.get_close_matches(shorten(name), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise RecipeError(f"{where}: unknown pass {shorten(name)}.",
                          fix=f"{hint}known passes: {', '.join(known)}.")
    options = raw.get("with") or {}
    if not isinstance(options, dict):
        raise RecipeError(f"{where}: 'with' must be a mapping of options, got {shorten(options)}.",
                          fix=f"see `slimline passes list` for {name}'s options.")
    try:
        config = pass_cls.Config.model_validate(options)
    except ValidationError as err:
        fields = ", ".join(pass_cls.Config.model_fields)
        problems = _config_errors(err, pass_cls.Config)
        raise RecipeError(f"{where} ({name}): invalid options: {problems}{'' if problems.endswith('?') else '.'}",
                          fix=f"{name} takes: {fields}.") from err
    return RecipeStep(index, pass_cls(config), optional)


#: Keys a recipe file may have when it is a mapping rather than a plain list of steps.
RECIPE_FILE_KEYS = frozenset({"passes", "description", "schema_version"})


def parse_recipe(data: Any, source: str) -> list[RecipeStep]:
    if data is None:
        return []
    if isinstance(data, dict):
        unknown = set(map(str, data)) - RECIPE_FILE_KEYS
        if unknown or "passes" not in data:
            raise RecipeError(f"recipe {source} is a mapping with keys {shorten(sorted(map(str, data)))}; it takes "
                              f"'passes' and optionally {sorted(RECIPE_FILE_KEYS - {'passes'})}.",
                              fix="write it as a YAML list of {pass: NAME, with: {...}} or {passes: [...]}.")
        data = data["passes"]
    if not isinstance(data, list):
        raise RecipeError(f"recipe {source} must be a list of steps (or a mapping with 'passes').",
                          fix="write it as a YAML list of {pass: NAME, with: {...}}.")
    return [build_step(i, raw, source) for i, raw in enumerate(data)]


def load_recipe(name_or_path: Path | str) -> list[RecipeStep]:
    """Load a shipped recipe by name (`slimline recipes`: cpu-fast, ...) or any recipe YAML by path."""
    path = recipe_path(name_or_path)
    return parse_recipe(load_yaml_file(path, RecipeError, "recipe"), str(path))


def profile_recipe(profile: Profile) -> list[RecipeStep]:
    """The profile's default recipe: a shipped recipe named by the profile, or its inline steps."""
    if isinstance(profile.recipe, str):
        return load_recipe(profile.recipe)
    return parse_recipe(profile.recipe, f"profile {profile.name}")


def recipe_as_data(steps: list[RecipeStep]) -> list[dict[str, Any]]:
    """Steps as plain `{pass, with}` dicts, plus `optional: true` where set (YAML/JSON, reports, the
    benchmark scripts)."""
    return [{"pass": step.name, "with": step.config_dict(), **({"optional": True} if step.optional else {})}
            for step in steps]


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


def optional_skip(step: RecipeStep, problems: list[Problem]) -> SkippedStep | None:
    """The skip of an optional step whose checks refuse it (else None: the problems stand as they are)."""
    errors = [p for p in problems if p.severity == "error"]
    if not step.optional or not errors:
        return None
    return SkippedStep(step, errors[0].message)


def recipe_with_skipped(steps: list[RecipeStep], skipped: list[SkippedStep]) -> list[RecipeStep]:
    """The recipe as given: the steps that ran and the ones skipped, in their order."""
    by_index = {step.index: step for step in [*steps, *(s.step for s in skipped)]}
    return [by_index[i] for i in sorted(by_index)]
