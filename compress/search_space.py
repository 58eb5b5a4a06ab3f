"""Search spaces as data: a recipe whose steps may give alternatives or ranges instead of values.

A space file is YAML:

    schema_version: 1
    description: ...
    steps:
      - optional:                     # a block kept or dropped (one yes/no parameter)
          name: student
          steps:
            - pass: prune.structured
              with: {heads_ratio: {low: 0.25, high: 0.625, step: 0.125}, importance: magnitude}
            - pass: distill.kd
              with: {max_steps: {choice: [150, 300]}}
      - pass: optimize.ort-transformers
      - one_of:                       # exactly one of several alternatives (one categorical parameter)
          name: quantization
          options:
            dynamic: [{pass: quantize.ort-int8-dynamic, with: {per_channel: {choice: [false, true]}}}]
            static-qdq:
              when_cpu_has_any: [avx512_vnni, avx_vnni, amx_int8]   # offered only on such CPUs
              steps: [{pass: quantize.ort-int8-static, with: {format: qdq}}]
    initial_trials:                   # evaluated first (missing parameters are sampled)
      - {student: false, quantization: dynamic}

A value in `with` is either a plain value or a parameter: `{choice: [..]}` or `{low, high, step?, log?}`
(integers when low, high and step are all integers). Parameters are named by where they sit
(`quantization=dynamic/quantize.ort-int8-dynamic:per_channel`), so trials of a study stay comparable.

The space is validated like a recipe before anything runs: every pass exists, every value a parameter
can take is a valid option for that pass (each choice and both ends of each range, with the other
parameters at their first value), the ranges are possible, and every combination of blocks orders
torch-level passes before ONNX-level ones. No sampler library is imported here: sampling goes through
the small `Suggest` protocol, which an Optuna trial satisfies.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from slimline.compress.recipe import build_step, order_problems
from slimline.core.errors import RecipeError, shorten
from slimline.core.yaml_files import load_yaml_file
from slimline.profiles.schema import PROFILES_DIR

SPACES_DIR = PROFILES_DIR / "spaces"
SPACE_FILE_KEYS = frozenset({"schema_version", "description", "steps", "initial_trials"})
RANGE_KEYS = frozenset({"low", "high", "step", "log"})
#: Structural combinations (optional blocks x alternatives) checked for pass order; more is refused.
MAX_STRUCTURES = 4096


class Suggest(Protocol):
    """What sampling needs from an optimiser's trial (optuna.Trial has these methods)."""

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def corners(self) -> list[Any]:
        return list(self.values)

    @property
    def scalar(self) -> bool:
        return all(v is None or isinstance(v, (bool, int, float, str)) for v in self.values)

    def encode(self, value: Any) -> Any:
        """Optuna's categorical choices must be scalars: lists and mappings travel as their JSON text."""
        return value if self.scalar or isinstance(value, str) else json.dumps(value, sort_keys=True)

    def sample(self, name: str, suggest: Suggest) -> Any:
        if self.scalar:
            return suggest.suggest_categorical(name, list(self.values))
        return json.loads(suggest.suggest_categorical(name, [self.encode(v) for v in self.values]))


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    step: float | None = None
    log: bool = False

    @property
    def integer(self) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high, self.step or 1))

    def corners(self) -> list[Any]:
        return [self.low, self.high]

    def encode(self, value: Any) -> Any:
        return value

    def sample(self, name: str, suggest: Suggest) -> Any:
        if self.integer:
            return suggest.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return suggest.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)


Param = Choice | Range


@dataclass(frozen=True)
class PassBlock:
    pass_name: str
    options: dict[str, Any]  # plain values and Param leaves, nested like the pass config
    prefix: str

    def params(self) -> dict[str, Param]:
        return dict(_leaves(self.options, f"{self.prefix}{self.pass_name}:"))


@dataclass(frozen=True)
class OptionalBlock:
    name: str
    steps: tuple[Block, ...]
    key: str  # the parameter's name: the block's path (`student`, `quantization=fused/fusion`)


@dataclass(frozen=True)
class Alternative:
    steps: tuple[Block, ...]
    when_cpu_has_any: tuple[str, ...] = ()

    def offered(self, cpu_flags: Sequence[str]) -> bool:
        return not self.when_cpu_has_any or bool(set(self.when_cpu_has_any) & set(cpu_flags))


@dataclass(frozen=True)
class OneOfBlock:
    name: str
    options: dict[str, Alternative]
    key: str

    def offered(self, cpu_flags: Sequence[str]) -> list[str]:
        return [name for name, option in self.options.items() if option.offered(cpu_flags)]


Block = PassBlock | OptionalBlock | OneOfBlock


@dataclass
class SearchSpace:
    source: str
    description: str
    steps: tuple[Block, ...]
    initial_trials: list[dict[str, Any]] = field(default_factory=list)
    raw: Any = None  # the parsed file, hashed into the study so a resumed search uses the same space

    def parameter_names(self) -> set[str]:
        return set(_parameter_names(self.steps))

    def encode_params(self, values: dict[str, Any]) -> dict[str, Any]:
        """Parameter values as the sampler stores them (see Choice.encode)."""
        params = dict(_all_params(self.steps))
        return {name: params[name].encode(value) if name in params else value for name, value in values.items()}

    def sample(self, suggest: Suggest, cpu_flags: Sequence[str]) -> list[dict[str, Any]]:
        """One concrete recipe (`{pass, with}` steps with plain values) drawn through `suggest`."""
        return _sample(self.steps, suggest, cpu_flags)


def _is_param(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and (set(value) == {"choice"} or
                                                        ({"low", "high"} <= set(value) <= RANGE_KEYS))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_param(value: dict[str, Any], where: str) -> Param:
    if "choice" in value:
        choices = value["choice"]
        if not isinstance(choices, list) or not choices:
            raise RecipeError(f"{where}: `choice` must be a non-empty list, got {shorten(choices)}.",
                              fix="write e.g. {choice: [false, true]}.")
        return Choice(tuple(choices))
    low, high, step, log = value["low"], value["high"], value.get("step"), bool(value.get("log", False))
    if not (_number(low) and _number(high)) or (step is not None and not _number(step)):
        raise RecipeError(f"{where}: low/high/step must be numbers, got {shorten(value)}.",
                          fix="write e.g. {low: 0.0, high: 0.5, step: 0.125}.")
    if low > high:
        raise RecipeError(f"{where}: impossible range, low {low} > high {high}.", fix="swap or fix the bounds.")
    if step is not None and step <= 0:
        raise RecipeError(f"{where}: step must be positive, got {step}.", fix="use a positive step or omit it.")
    if log and (low <= 0 or step is not None):
        raise RecipeError(f"{where}: a log range needs low > 0 and no step.", fix="drop `log` or fix the range.")
    return Range(low, high, step, log)


def _parse_options(options: Any, where: str) -> Any:
    if _is_param(options):
        return _parse_param(options, where)
    if isinstance(options, dict):
        return {str(key): _parse_options(value, f"{where}.{key}") for key, value in options.items()}
    return options


def _leaves(options: Any, name: str) -> list[tuple[str, Param]]:
    if isinstance(options, (Choice, Range)):
        return [(name, options)]
    if isinstance(options, dict):
        sep = "" if name.endswith(":") else "."
        return [leaf for key, value in options.items() for leaf in _leaves(value, f"{name}{sep}{key}")]
    return []


def _parse_steps(raw: Any, where: str, prefix: str) -> tuple[Block, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"{where} must be a non-empty list of steps, got {shorten(raw)}.",
                          fix="write steps as a YAML list of {pass: ...}, {optional: ...} or {one_of: ...}.")
    blocks: list[Block] = []
    for index, step in enumerate(raw):
        at = f"{where} step {index + 1}"
        if isinstance(step, dict) and set(step) == {"optional"}:
            blocks.append(_parse_optional(step["optional"], at, prefix))
        elif isinstance(step, dict) and set(step) == {"one_of"}:
            blocks.append(_parse_one_of(step["one_of"], at, prefix))
        elif isinstance(step, dict) and "pass" in step and set(step) <= {"pass", "with"}:
            if not isinstance(step["pass"], str):
                raise RecipeError(f"{at}: `pass` must be a pass name, got {shorten(step['pass'])}.",
                                  fix="see `slimline passes list`.")
            options = step.get("with") or {}
            if not isinstance(options, dict):
                raise RecipeError(f"{at}: `with` must be a mapping, got {shorten(options)}.",
                                  fix="write with: {option: value or {choice: [...]}}.")
            blocks.append(PassBlock(step["pass"], _parse_options(options, f"{at} ({step['pass']})"), prefix))
        else:
            raise RecipeError(f"{at} must be {{pass, with}}, {{optional: ...}} or {{one_of: ...}}; got keys "
                              f"{shorten(sorted(map(str, step)) if isinstance(step, dict) else step)}.",
                              fix="see profiles/spaces/cpu.yaml for the layout.")
    _check_unique_names(blocks, where)
    return tuple(blocks)


def _block_name(raw: Any, where: str, keys: set[str]) -> str:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or set(raw) - keys:
        raise RecipeError(f"{where} takes a mapping with keys {sorted(keys)} and a string `name`; got "
                          f"{shorten(raw)}.", fix="see profiles/spaces/cpu.yaml for the layout.")
    if not raw["name"].replace("-", "").replace("_", "").isalnum():
        raise RecipeError(f"{where}: name {shorten(raw['name'])} may hold only letters, digits, - and _.",
                          fix="rename the block.")
    return raw["name"]


def _parse_optional(raw: Any, where: str, prefix: str) -> OptionalBlock:
    name = _block_name(raw, where, {"name", "steps"})
    return OptionalBlock(name, _parse_steps(raw.get("steps"), f"{where} ({name})", f"{prefix}{name}/"),
                         f"{prefix}{name}")


def _parse_one_of(raw: Any, where: str, prefix: str) -> OneOfBlock:
    name = _block_name(raw, where, {"name", "options"})
    options = raw.get("options")
    if not isinstance(options, dict) or not options:
        raise RecipeError(f"{where} ({name}): `options` must be a non-empty mapping of name -> steps.",
                          fix="write options: {dynamic: [...], static: [...]}.")
    parsed: dict[str, Alternative] = {}
    for option, body in options.items():
        at, option_prefix = f"{where} ({name}={option})", f"{prefix}{name}={option}/"
        if isinstance(body, dict):
            if set(body) - {"steps", "when_cpu_has_any"}:
                raise RecipeError(f"{at}: an option takes `steps` and optionally `when_cpu_has_any`.",
                                  fix="write the option as a list of steps or {steps: [...], when_cpu_has_any: [...]}.")
            flags = body.get("when_cpu_has_any") or []
            if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
                raise RecipeError(f"{at}: when_cpu_has_any must be a list of CPU flags.",
                                  fix="e.g. when_cpu_has_any: [avx512_vnni, avx_vnni].")
            parsed[str(option)] = Alternative(_parse_steps(body.get("steps"), at, option_prefix), tuple(flags))
        elif body == []:
            parsed[str(option)] = Alternative(())  # "none of these passes" is a valid alternative
        else:
            parsed[str(option)] = Alternative(_parse_steps(body, at, option_prefix))
    return OneOfBlock(name, parsed, f"{prefix}{name}")


def _check_unique_names(blocks: list[Block], where: str) -> None:
    names = [b.name for b in blocks if not isinstance(b, PassBlock)]
    passes = [b.pass_name for b in blocks if isinstance(b, PassBlock)]
    for duplicates, what in ((names, "block name"), (passes, "pass")):
        repeated = sorted({n for n in duplicates if duplicates.count(n) > 1})
        if repeated:
            raise RecipeError(f"{where}: {what} {repeated[0]!r} appears twice at the same level, so its parameters "
                              "would share names.", fix="wrap one of them in a named optional/one_of block.")


def _parameter_names(blocks: Sequence[Block]) -> list[str]:
    names: list[str] = []
    for block in blocks:
        if isinstance(block, PassBlock):
            names += list(block.params())
        elif isinstance(block, OptionalBlock):
            names += [block.key, *_parameter_names(block.steps)]
        else:
            names.append(block.key)
            for option in block.options.values():
                names += _parameter_names(option.steps)
    return names


def _all_params(blocks: Sequence[Block]) -> list[tuple[str, Param]]:
    found: list[tuple[str, Param]] = []
    for block in blocks:
        if isinstance(block, PassBlock):
            found += list(block.params().items())
        elif isinstance(block, OptionalBlock):
            found += _all_params(block.steps)
        else:
            for option in block.options.values():
                found += _all_params(option.steps)
    return found


def _concrete(options: Any, values: dict[str, Any], name: str) -> Any:
    if isinstance(options, (Choice, Range)):
        return values[name]
    if isinstance(options, dict):
        sep = "" if name.endswith(":") else "."
        return {key: _concrete(value, values, f"{name}{sep}{key}") for key, value in options.items()}
    return options


def _sample(blocks: Sequence[Block], suggest: Suggest, cpu_flags: Sequence[str]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, PassBlock):
            values = {name: param.sample(name, suggest) for name, param in block.params().items()}
            steps.append({"pass": block.pass_name,
                          "with": _concrete(block.options, values, f"{block.prefix}{block.pass_name}:")})
        elif isinstance(block, OptionalBlock):
            if suggest.suggest_categorical(block.key, [False, True]):
                steps += _sample(block.steps, suggest, cpu_flags)
        else:
            offered = block.offered(cpu_flags)
            if not offered:
                raise RecipeError(f"no option of {block.name!r} is offered on this CPU ({', '.join(cpu_flags)}).",
                                  fix="add an option without when_cpu_has_any.")
            chosen = suggest.suggest_categorical(block.key, offered)
            steps += _sample(block.options[chosen].steps, suggest, cpu_flags)
    return steps


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
                step = _sample([block], _Corner(overrides), [])[0]
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
        recipe = _sample(space.steps, _Corner(structure), everything)
        steps = [build_step(i, raw, f"space {space.source}") for i, raw in enumerate(recipe)]
        problems = order_problems(steps)
        if problems:
            raise RecipeError(f"space {space.source}: with {structure} the passes cannot follow each other: "
                              f"{problems[0]}.", fix="reorder the blocks.")


def _domains(blocks: Sequence[Block]) -> dict[str, Callable[[Any], bool]]:
    """Per parameter: whether a value is one it can take (initial trials are checked against it)."""
    found: dict[str, Callable[[Any], bool]] = {}
    for name, param in _all_params(blocks):
        if isinstance(param, Choice):
            found[name] = lambda value, param=param: param.encode(value) in [param.encode(v) for v in param.values]
        else:
            found[name] = lambda value, param=param: _number(value) and param.low <= value <= param.high
    for block in _walk(blocks):
        if isinstance(block, OptionalBlock):
            found[block.key] = lambda value: isinstance(value, bool)
        elif isinstance(block, OneOfBlock):
            found[block.key] = lambda value, block=block: value in block.options
    return found


def _walk(blocks: Sequence[Block]) -> list[Block]:
    every: list[Block] = []
    for block in blocks:
        every.append(block)
        if isinstance(block, OptionalBlock):
            every += _walk(block.steps)
        elif isinstance(block, OneOfBlock):
            for option in block.options.values():
                every += _walk(option.steps)
    return every


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
                        steps=_parse_steps(data["steps"], f"search space {source}", ""), initial_trials=initial,
                        raw=data)
    _validate_pass_values(space.steps, source)
    _validate_order(space)
    _validate_initial_trials(space)
    return space


def list_spaces() -> list[str]:
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml"))


def space_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix or path.exists() or len(path.parts) != 1:
        return path
    shipped = SPACES_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise RecipeError(f"no search space named {shorten(str(name_or_path))}.",
                          fix=f"use one of {', '.join(list_spaces())} or a path to a YAML file.")
    return shipped


def load_search_space(name_or_path: str | Path) -> SearchSpace:
    """A shipped space by name (profiles/spaces/NAME.yaml) or any space YAML by path, validated."""
    path = space_path(name_or_path)
    return parse_search_space(load_yaml_file(path, RecipeError, "space"), str(path))
