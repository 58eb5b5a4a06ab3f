"""Search space files: loading a space (shipped by name or any YAML path) and validating it like a recipe.

Before anything runs, every pass must exist, every value a parameter can take must be a valid option
for that pass (each choice and both ends of each range, with the other parameters at their first
value), every combination of blocks must order torch-level passes before ONNX-level ones, and the
initial trials must name parameters and values the space offers. Any failure is a RecipeError (exit 2).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from slimline.compression.recipe import build_step, order_problems
from slimline.compression.search_space import (
    Block,
    Choice,
    EarlyStopping,
    OneOfBlock,
    OptionalBlock,
    PassBlock,
    SearchSpace,
    all_params,
    is_number,
    parse_steps,
    sample_blocks,
    walk_blocks,
)
from slimline.core.errors import RecipeError, shorten
from slimline.core.yaml_files import load_yaml_file
from slimline.profiles.schema import PROFILES_DIR, shipped_or_path

SPACES_DIR = PROFILES_DIR / "spaces"
SPACE_FILE_KEYS = frozenset({"schema_version", "description", "steps", "initial_trials", "early_stopping"})
#: Structural combinations (optional blocks x alternatives) checked for pass order; more is refused.
MAX_STRUCTURES = 4096


class _Corner:
    """A `Suggest` that takes the first value everywhere except where `overrides` says otherwise, and
    follows a fixed structure (which optional blocks are on, which alternative is taken)."""

    def __init__(self, overrides: dict[str, Any]) -> None:
        self.overrides = overrides

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self.overrides.get(name, choices[0])

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self.overrides.get(name, low)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self.overrides.get(name, low)


def _structures(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """Every combination of optional on/off and alternative taken (capped at MAX_STRUCTURES)."""
    axes: list[tuple[str, list[Any]]] = []

    def collect(items: Sequence[Block]) -> None:
        for block in items:
            if isinstance(block, OptionalBlock):
                axes.append((block.key, [False, True]))
                collect(block.steps)
            elif isinstance(block, OneOfBlock):
                axes.append((block.key, list(block.options)))
                for option in block.options.values():
                    collect(option.steps)

    collect(blocks)
    total = 1
    for _, values in axes:
        total *= len(values)
    if total > MAX_STRUCTURES:
        raise RecipeError(f"the space has {total} combinations of blocks; at most {MAX_STRUCTURES} are allowed.",
                          fix="nest fewer optional/one_of blocks.")
    return [dict(zip([a for a, _ in axes], combo, strict=True)) for combo in itertools.product(*[v for _, v in axes])]


def _validate_pass_values(blocks: Sequence[Block], source: str) -> None:
    """Each value a parameter can take (every choice, both ends of every range) builds a valid step."""
    for block in blocks:
        if isinstance(block, PassBlock):
            params = block.params()
            trials = [{}] + [{name: param.encode(value)} for name, param in params.items()
                             for value in param.corners()]
            for overrides in trials:
                step = sample_blocks([block], _Corner(overrides), [])[0]
                build_step(0, step, f"space {source} ({block.prefix}{block.pass_name})")
        elif isinstance(block, OptionalBlock):
            _validate_pass_values(block.steps, source)
        else:
            for option in block.options.values():
                _validate_pass_values(option.steps, source)


def _validate_order(space: SearchSpace) -> None:
    everything = ("avx512_vnni", "avx_vnni", "amx_int8", *{f for b in space.steps if isinstance(b, OneOfBlock)
                                                            for o in b.options.values() for f in o.when_cpu_has_any})
    for structure in _structures(space.steps):
        recipe = sample_blocks(space.steps, _Corner(structure), everything)
        steps = [build_step(i, raw, f"space {space.source}") for i, raw in enumerate(recipe)]
        problems = order_problems(steps)
        if problems:
            raise RecipeError(f"space {space.source}: with {structure} the passes cannot follow each other: "
                              f"{problems[0]}.", fix="reorder the blocks.")


def _domains(blocks: Sequence[Block]) -> dict[str, Callable[[Any], bool]]:
    """Per parameter: whether a value is one it can take (initial trials are checked against it)."""
    found: dict[str, Callable[[Any], bool]] = {}
    for name, param in all_params(blocks):
        if isinstance(param, Choice):
            found[name] = lambda value, param=param: param.encode(value) in [param.encode(v) for v in param.values]
        else:
            found[name] = lambda value, param=param: is_number(value) and param.low <= value <= param.high
    for block in walk_blocks(blocks):
        if isinstance(block, OptionalBlock):
            found[block.key] = lambda value: isinstance(value, bool)
        elif isinstance(block, OneOfBlock):
            found[block.key] = lambda value, block=block: value in block.options
    return found


def _validate_initial_trials(space: SearchSpace) -> None:
    known = space.parameter_names()
    domains = _domains(space.steps)
    for index, trial in enumerate(space.initial_trials):
        if not isinstance(trial, dict):
            raise RecipeError(f"space {space.source}: initial_trials[{index}] must be a mapping of parameter -> value.",
                              fix="write e.g. {student: false, quantization: dynamic}.")
        unknown = sorted(set(map(str, trial)) - known)
        if unknown:
            raise RecipeError(f"space {space.source}: initial_trials[{index}] names unknown parameter(s) "
                              f"{shorten(unknown)}.", fix=f"known parameters: {', '.join(sorted(known))}.")
        for name, value in trial.items():
            allowed = domains.get(name)
            if allowed is not None and not allowed(value):
                raise RecipeError(f"space {space.source}: initial_trials[{index}] sets {name} to {shorten(value)}, "
                                  "which the space does not offer.",
                                  fix="use one of its choices or a value in its range.")


def parse_search_space(data: Any, source: str) -> SearchSpace:
    if not isinstance(data, dict) or "steps" not in data or set(map(str, data)) - SPACE_FILE_KEYS:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise RecipeError(f"search space {source} must be a mapping with `steps` (and optionally "
                          f"{sorted(SPACE_FILE_KEYS - {'steps'})}); got {shorten(keys)}.",
                          fix="see profiles/spaces/cpu.yaml for the layout.")
    if data.get("schema_version", 1) != 1:
        raise RecipeError(f"search space {source}: unsupported schema_version {shorten(data['schema_version'])}.",
                          fix="use schema_version: 1.")
    initial = data.get("initial_trials") or []
    if not isinstance(initial, list):
        raise RecipeError(f"search space {source}: initial_trials must be a list.", fix="write a YAML list.")
    space = SearchSpace(source=source, description=str(data.get("description", "")),
                        steps=parse_steps(data["steps"], f"search space {source}", ""), initial_trials=initial,
                        early_stopping=EarlyStopping.from_space(data.get("early_stopping"), source), raw=data)
    _validate_pass_values(space.steps, source)
    _validate_order(space)
    _validate_initial_trials(space)
    return space


def list_spaces() -> list[str]:
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml"))


def space_path(name_or_path: str | Path) -> Path:
    return shipped_or_path(name_or_path, SPACES_DIR, "search space")


def load_search_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (profiles/spaces/NAME.yaml) or any space YAML by path, validated."""
    path = space_path(name_or_path)
    return parse_search_space(load_yaml_file(path, RecipeError, "space"), str(path))
