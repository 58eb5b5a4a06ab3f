"""run.yaml: everything a `slimline run` was asked to do, written beside its report, so it can be run again.

The profile and the recipe are written out in full (not by name), so a shipped profile that changes
later does not change what the file reproduces; paths are absolute, so it runs from any directory.
`slimline run --config run.yaml` (or `slimline.api.rerun`) plans the same run: same source, same
steps, same eval data, same budgets. Only `--out`, `--force` and the history options may be given
with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimline.compression.recipe import parse_recipe
from slimline.core.artifact import atomic_write_text
from slimline.core.data import DatasetSpec
from slimline.core.errors import RecipeError
from slimline.core.yaml_files import load_yaml_file
from slimline.exporters.onnx import OnnxExportConfig
from slimline.pipeline.plan import RunRequest
from slimline.profiles.schema import format_validation_error, parse_profile

RUN_CONFIG_NAME = "run.yaml"
RUN_CONFIG_SCHEMA_VERSION = 1


class EvalDataEntry(BaseModel):
    """`dataset`: a labelled text dataset (slimline.core.data.DatasetSpec); `source`: an image folder, an .npz
    or `pkg.module:function` (slimline.benchmarking.evaluators.EvalSource)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["dataset", "source"]
    spec: dict[str, Any]


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = RUN_CONFIG_SCHEMA_VERSION
    checkpoint: str
    base: str | None = None
    task: str | None = None
    out: str
    profile: dict[str, Any]
    recipe: list[dict[str, Any]] = Field(description="the steps the run applied, in full")
    eval_data: EvalDataEntry | None = None
    evaluator: str | None = None  # --evaluator: how quality was scored, when not chosen by task and outputs
    bench_export: bool = False
    seed: int = 0
    export: dict[str, Any] = Field(default_factory=dict)
    tensorrt: dict[str, Any] | None = None
    command_line: str | None = None  # how it was first run, for people: the fields above are what counts


def config_of(request: RunRequest, steps_data: list[dict[str, Any]], command_line: str | None) -> RunConfig:
    eval_entry = None
    if request.eval_data is not None:
        kind = "dataset" if isinstance(request.eval_data, DatasetSpec) else "source"
        eval_entry = EvalDataEntry(kind=kind, spec=request.eval_data.model_dump(mode="json"))
    return RunConfig(
        checkpoint=str(request.checkpoint.resolve()), base=str(request.base.resolve()) if request.base else None,
        task=request.task, out=str(request.out_dir.resolve()),
        profile=request.profile.model_dump(mode="json", exclude_none=True),
        recipe=steps_data, eval_data=eval_entry, evaluator=request.evaluator, bench_export=request.bench_export,
        seed=request.seed,
        export=request.export.model_dump(mode="json"),
        tensorrt=request.tensorrt.model_dump(mode="json") if request.tensorrt is not None else None,
        command_line=command_line)


def write_run_config(request: RunRequest, steps_data: list[dict[str, Any]], command_line: str | None) -> Path:
    """OUT/run.yaml for `request` (its recipe as the steps the plan resolved), written atomically."""
    path = request.out_dir / RUN_CONFIG_NAME
    data = config_of(request, steps_data, command_line).model_dump(mode="json")
    header = "# Written by slimline: `slimline run --config run.yaml` runs this again (--out to write elsewhere).\n"
    atomic_write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return path


def load_run_config(path: Path, out: Path | None = None, force: bool = False) -> RunRequest:
    """The RunRequest a run.yaml describes (into `out` when given); bad files are a RecipeError (exit 2)."""
    data = load_yaml_file(path, RecipeError, "config")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"run config {path} is invalid:\n{format_validation_error(err, RunConfig)}",
                          fix="use a run.yaml that slimline wrote beside a report, unchanged, or fix the fields "
                              "named above.") from err
    profile = parse_profile(config.profile, f"{path} (profile)")
    steps = parse_recipe(config.recipe, f"{path} (recipe)")
    try:
        export = OnnxExportConfig.model_validate(config.export)
        tensorrt = None
        if config.tensorrt is not None:
            from slimline.exporters.tensorrt_plan import TensorRTExportConfig

            tensorrt = TensorRTExportConfig.model_validate(config.tensorrt)
        eval_data = _eval_data(config.eval_data)
    except ValidationError as err:
        raise RecipeError(f"run config {path} is invalid:\n{format_validation_error(err)}",
                          fix="fix the fields named above.") from err
    return RunRequest(checkpoint=Path(config.checkpoint), profile=profile, out_dir=out or Path(config.out),
                      recipe=steps, task=config.task, eval_data=eval_data, evaluator=config.evaluator, export=export,
                      bench_export=config.bench_export, tensorrt=tensorrt, seed=config.seed, force=force,
                      base=Path(config.base) if config.base else None)


def _eval_data(entry: EvalDataEntry | None) -> Any:
    if entry is None:
        return None
    if entry.kind == "dataset":
        return DatasetSpec.model_validate(entry.spec)
    from slimline.benchmarking.evaluators.base import EvalSource

    return EvalSource.model_validate(entry.spec)
