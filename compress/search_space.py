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
    early_stopping: {probe_steps: 96} # a student is screened after this many distillation steps and
                                      # stopped when it cannot reach the accuracy budget (default on;
                                      # `false` turns it off; slimline.pipeline.search.early_stop)

A value in `with` is either a plain value or a parameter: `{choice: [..]}` or `{low, high, step?, log?}`
(integers when low, high and step are all integers). Parameters are named by where they sit
(`quantization=dynamic/quantize.ort-int8-dynamic:per_channel`), so trials of a study stay comparable.

This module holds the space's model, the parsing of its blocks and sampling; loading a file and
validating it like a recipe is `slimline.compression.search_space_files`. No sampler library is imported
here: sampling goes through the small `Suggest` protocol, which an Optuna trial satisfies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from slimline.core.errors import RecipeError, shorten

RANGE_KEYS = frozenset({"low", "high", "step", "log"})


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
    optional: bool = False  # the recipe step's `optional: true` (skipped where it cannot apply), not a parameter

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


DEFAULT_PROBE_STEPS = 96  # about a third of an epoch of the demo's train split at batch 32


@dataclass(frozen=True)
class EarlyStopping:
    """The space's `early_stopping` setting: on (the default) with its probe length, or off. The rule that
    uses it is slimline.pipeline.search.early_stop."""

    probe_steps: int = DEFAULT_PROBE_STEPS
    enabled: bool = True

    @classmethod
    def from_space(cls, raw: Any, source: str) -> EarlyStopping:
        """`early_stopping: false`, `{probe_steps: N}`, or absent (on, DEFAULT_PROBE_STEPS)."""
        if raw is None or raw is True:
            return cls()
        if raw is False:
            return cls(enabled=False)
        if not isinstance(raw, dict) or set(raw) - {"probe_steps"}:
            raise RecipeError(f"search space {source}: early_stopping must be false or {{probe_steps: N}}.",
                              fix="write e.g. `early_stopping: {probe_steps: 96}`, or `early_stopping: false`.")
        steps = raw.get("probe_steps", DEFAULT_PROBE_STEPS)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 100_000:
            raise RecipeError(f"search space {source}: early_stopping.probe_steps must be an integer from 1 to "
                              f"100000; got {steps!r}.", fix="e.g. probe_steps: 96.")
        return cls(probe_steps=steps)


@dataclass
class SearchSpace:
    source: str
    description: str
    steps: tuple[Block, ...]
    initial_trials: list[dict[str, Any]] = field(default_factory=list)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    raw: Any = None  # the parsed file, hashed into the study so a resumed search uses the same space

    def parameter_names(self) -> set[str]:
        return set(_parameter_names(self.steps))

    def encode_params(self, values: dict[str, Any]) -> dict[str, Any]:
        """Parameter values as the sampler stores them (see Choice.encode)."""
        params = dict(all_params(self.steps))
        return {name: params[name].encode(value) if name in params else value for name, value in values.items()}

    def sample(self, suggest: Suggest, cpu_flags: Sequence[str]) -> list[dict[str, Any]]:
        """One concrete recipe (`{pass, with}` steps with plain values) drawn through `suggest`."""
        return sample_blocks(self.steps, suggest, cpu_flags)

    def student_key(self) -> str | None:
        """The optional block that trains a student (holds a distillation): the expensive prefix of a trial."""
        return next((block.key for block in self.steps if isinstance(block, OptionalBlock)
                     and any(isinstance(inner, PassBlock) and inner.pass_name.startswith("distill.")
                             for inner in walk_blocks(block.steps))), None)

    def student_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The trial parameters that describe its student (the rest choose its scheme)."""
        key = self.student_key()
        return {} if key is None else {name: value for name, value in params.items()
                                       if name == key or name.startswith(f"{key}/")}

    def with_other_schemes(self, params: dict[str, Any], cpu_flags: Sequence[str]) -> list[dict[str, Any]]:
        """The same student under every other alternative of each top-level `one_of` offered on this CPU
        (their own parameters left to the sampler): a trained student tried across schemes and runtimes."""
        key = self.student_key()
        if key is None or params.get(key) is not True:
            return []
        student = self.student_params(params)
        return [{**student, block.key: option} for block in self.steps if isinstance(block, OneOfBlock)
                for option in block.offered(cpu_flags) if option != params.get(block.key)]


def walk_blocks(blocks: Sequence[Block]) -> list[Block]:
    """Every block, nested ones included, in order."""
    every: list[Block] = []
    for block in blocks:
        every.append(block)
        if isinstance(block, OptionalBlock):
            every += walk_blocks(block.steps)
        elif isinstance(block, OneOfBlock):
            for option in block.options.values():
                every += walk_blocks(option.steps)
    return every


def _is_param(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and (set(value) == {"choice"} or
                                                        ({"low", "high"} <= set(value) <= RANGE_KEYS))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_param(value: dict[str, Any], where: str) -> Param:
    if "choice" in value:
        choices = value["choice"]
        if not isinstance(choices, list) or not choices:
            raise RecipeError(f"{where}: `choice` must be a non-empty list, got {shorten(choices)}.",
                              fix="write e.g. {choice: [false, true]}.")
        return Choice(tuple(choices))
    low, high, step, log = value["low"], value["high"], value.get("step"), bool(value.get("log", False))
    if not (is_number(low) and is_number(high)) or (step is not None and not is_number(step)):
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


def parse_steps(raw: Any, where: str, prefix: str) -> tuple[Block, ...]:
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
        elif isinstance(step, dict) and "pass" in step and set(step) <= {"pass", "with", "optional"}:
            if not isinstance(step["pass"], str):
                raise RecipeError(f"{at}: `pass` must be a pass name, got {shorten(step['pass'])}.",
                                  fix="see `slimline passes list`.")
            if not isinstance(step.get("optional", False), bool):
                raise RecipeError(f"{at}: `optional` must be true or false, got {shorten(step['optional'])}.",
                                  fix="optional: true marks a pure speed-up that is skipped where it cannot apply.")
            options = step.get("with") or {}
            if not isinstance(options, dict):
                raise RecipeError(f"{at}: `with` must be a mapping, got {shorten(options)}.",
                                  fix="write with: {option: value or {choice: [...]}}.")
            blocks.append(PassBlock(step["pass"], _parse_options(options, f"{at} ({step['pass']})"), prefix,
                                    step.get("optional", False)))
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
    return OptionalBlock(name, parse_steps(raw.get("steps"), f"{where} ({name})", f"{prefix}{name}/"),
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
            parsed[str(option)] = Alternative(parse_steps(body.get("steps"), at, option_prefix), tuple(flags))
        elif body == []:
            parsed[str(option)] = Alternative(())  # "none of these passes" is a valid alternative
        else:
            parsed[str(option)] = Alternative(parse_steps(body, at, option_prefix))
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


def all_params(blocks: Sequence[Block]) -> list[tuple[str, Param]]:
    found: list[tuple[str, Param]] = []
    for block in blocks:
        if isinstance(block, PassBlock):
            found += list(block.params().items())
        elif isinstance(block, OptionalBlock):
            found += all_params(block.steps)
        else:
            for option in block.options.values():
                found += all_params(option.steps)
    return found


def _concrete(options: Any, values: dict[str, Any], name: str) -> Any:
    if isinstance(options, (Choice, Range)):
        return values[name]
    if isinstance(options, dict):
        sep = "" if name.endswith(":") else "."
        return {key: _concrete(value, values, f"{name}{sep}{key}") for key, value in options.items()}
    return options


def sample_blocks(blocks: Sequence[Block], suggest: Suggest, cpu_flags: Sequence[str]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, PassBlock):
            values = {name: param.sample(name, suggest) for name, param in block.params().items()}
            steps.append({"pass": block.pass_name,
                          "with": _concrete(block.options, values, f"{block.prefix}{block.pass_name}:"),
                          **({"optional": True} if block.optional else {})})
        elif isinstance(block, OptionalBlock):
            if suggest.suggest_categorical(block.key, [False, True]):
                steps += sample_blocks(block.steps, suggest, cpu_flags)
        else:
            offered = block.offered(cpu_flags)
            if not offered:
                raise RecipeError(f"no option of {block.name!r} is offered on this CPU ({', '.join(cpu_flags)}).",
                                  fix="add an option without when_cpu_has_any.")
            chosen = suggest.suggest_categorical(block.key, offered)
            steps += sample_blocks(block.options[chosen].steps, suggest, cpu_flags)
    return steps
