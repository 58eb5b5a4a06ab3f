"""The public Python API: the CLI's commands as functions, with typed results.

Every function takes `str | Path` for paths, a profile as a shipped name, a YAML path or a `Profile`,
a recipe as a shipped name, a YAML path, a list of `{pass, with}` dicts or a list of pass config
objects, and eval data as `rotten-tomatoes[:split]`, a .csv/.jsonl path or a `DatasetSpec`. Bad input
raises a `slimline.SlimlineError` subclass whose message says how to fix it, naming these functions'
parameters (the CLI's own calls name its flags: slimline.core.frontend). The long-running functions take
`progress`: None (silent; the default), True (progress lines on stderr) or a callable that receives
`slimline.ProgressEvent`s. The CLI (slimline.cli) only parses arguments and calls these.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from slimline.compression.base import PassConfig, registered_passes
from slimline.compression.recipe import RecipeStep, build_step, load_recipe
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec, parse_dataset_arg
from slimline.core.errors import RecipeError
from slimline.core.frontend import python_call
from slimline.core.outputs import check_output, claimed_output, input_paths
from slimline.core.progress import ProgressCallback, reporting
from slimline.core.scratch import sweep_dead_scratch
from slimline.profiles.schema import Profile, load_profile

if TYPE_CHECKING:  # the result types live in modules that import numpy and the runtimes' glue
    from slimline.benchmarking.report import Report
    from slimline.core.doctor import DoctorReport
    from slimline.deploy.bundle import PackagedBundle
    from slimline.deploy.manifest import VerifyResult
    from slimline.history.compare import Comparison
    from slimline.history.records import RunRecord
    from slimline.pipeline.search import SearchResult

PathLike = str | Path
ProfileLike = str | Path | Profile
RecipeLike = str | Path | Sequence[dict[str, Any] | PassConfig | RecipeStep]
DataLike = str | Path | DatasetSpec
ProgressLike = bool | ProgressCallback | None
F = TypeVar("F", bound=Callable[..., Any])


def public(function: F) -> F:
    """A public API function: a refusal it raises names its parameters, not the CLI's flags, and its `progress`
    argument (where it has one) chooses how progress shows for the length of the call. functools.wraps keeps
    the function's own name, docstring and signature (`help()`, `inspect.signature`)."""
    takes_progress = "progress" in inspect.signature(function).parameters

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        with python_call(), reporting(kwargs.get("progress") if takes_progress else None):
            return function(*args, **kwargs)

    return call  # type: ignore[return-value]


def as_profile(profile: ProfileLike) -> Profile:
    return profile if isinstance(profile, Profile) else load_profile(profile)


def _step_for_config(index: int, config: PassConfig) -> RecipeStep:
    owners = [cls for cls in registered_passes().values() if cls.Config is type(config)]
    if len(owners) != 1:
        raise RecipeError(f"recipe step {index + 1}: no single pass takes a {type(config).__name__}.",
                          fix="give the step as {'pass': NAME, 'with': {...}} instead.")
    return RecipeStep(index, owners[0](config))


def as_recipe(recipe: RecipeLike) -> list[RecipeStep]:
    """Steps from a shipped recipe's name, a YAML path, or a list of dicts / pass configs / steps."""
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe)
    steps = []
    for index, item in enumerate(recipe):
        if isinstance(item, RecipeStep):
            steps.append(RecipeStep(index, item.pass_, item.optional))
        elif isinstance(item, PassConfig):
            steps.append(_step_for_config(index, item))
        else:
            steps.append(build_step(index, item, "recipe"))
    return steps


def _optional_path(path: PathLike | None) -> Path | None:
    return None if path is None else Path(path)


def as_dataset(data: DataLike | None) -> DatasetSpec | None:
    return parse_dataset_arg(str(data) if isinstance(data, Path) else data)


def as_eval_data(data: Any) -> Any:
    """Eval data for run/bench: a labelled text dataset (DatasetSpec), or an EvalSource for an image folder,
    an .npz or `pkg.module:function` (scored by slimline.benchmarking.evaluators)."""
    if data is None or isinstance(data, DatasetSpec):
        return data
    from slimline.benchmarking.evaluators.base import parse_eval_arg

    return parse_eval_arg(str(data) if isinstance(data, Path) else data)


@public
def run(checkpoint: PathLike | None = None, *, out: PathLike, profile: ProfileLike = "cpu",
        recipe: RecipeLike | None = None, task: str | None = None, eval_data: DataLike | None = None,
        bench_export: bool = False, seed: int = 0, force: bool = False, base: PathLike | None = None,
        model: Any = None, example_inputs: Any = None, model_factory: str | None = None,
        weights: PathLike | None = None, inputs: Any = None, eval: Any = None, evaluator: str | None = None,
        history: PathLike | bool | None = None, mlflow_uri: str | None = None, progress: ProgressLike = None) -> Report:
    """Compress -> export -> bench -> verdict; writes OUT/stages, report.json, report.md and report.html.

    Returns the `Report` (its `.verdict` is "pass", "fail", "inconclusive" or "incomplete"); bad input raises
    before any stage runs. OUT/run.yaml reproduces the run (`rerun`). `out` follows the output rule
    (slimline.core.outputs): one holding files slimline did not write is refused unless `force`, which never
    applies to /, $HOME, the working directory or an input.
    `checkpoint` may be a PEFT adapter directory: `base` is then its base checkpoint (default: the local
    path its adapter_config.json names); the merged checkpoint is the first stage and the fp32 baseline.

    A plain PyTorch model instead of `checkpoint`: `model` (an nn.Module) with `example_inputs` (or an input
    spec `inputs`), or `model_factory` ("pkg.module:callable") + `weights` + `inputs` (a YAML path or dict).
    `checkpoint` may also be an ONNX file (or a directory holding one: its fp32 baseline is the graph on ONNX
    Runtime, read from the graph's declared inputs, which `inputs` may rename) or a TorchScript archive
    (torch.jit.save; `inputs` then gives the dtypes and shapes TorchScript does not record).
    `eval` is `eval_data` or a callable returning {input name: array}, split like any eval data (the verdict on
    its seeded test split, static INT8 calibrated on its train split). `evaluator` names how quality is scored
    (text-classification, image-top1, agreement, embedding, perplexity) instead of the choice by task and data.
    `history`: None records the run in the default history, a path in that file, False nowhere; `mlflow_uri`
    also logs it to MLflow. `progress`: None (silent), True (lines on stderr) or a callable taking ProgressEvents.
    """
    read = input_paths(checkpoint, base, weights, inputs, eval_data, eval if not callable(eval) else None, profile,
                       recipe if isinstance(recipe, (str, Path)) else None)
    with claimed_output(out, "run", force=force, inputs=read):  # the output rule and the lock, before torch
        from slimline.pipeline.module_source import eval_from_callable, file_checkpoint, module_checkpoint
        from slimline.pipeline.plan import RunRequest
        from slimline.pipeline.run import run as run_pipeline

        check_history(history)
        sweep_dead_scratch()
        if model is not None or model_factory is not None:
            checkpoint = module_checkpoint(model, example_inputs, model_factory, weights, inputs, task).path
            task = None
        elif checkpoint is not None and base is None:
            from_file = file_checkpoint(checkpoint, inputs, task)  # ONNX / TorchScript: their model directory
            if from_file is not None:
                checkpoint, task = from_file.path, None
        if checkpoint is None:
            raise RecipeError("run needs a checkpoint, a model (nn.Module) or a model_factory.",
                              fix="pass checkpoint=DIR, model=module with example_inputs, or model_factory + "
                                  "weights.")
        if eval is not None:
            eval_data = eval_from_callable(eval) if callable(eval) else eval
        report = run_pipeline(RunRequest(
            checkpoint=Path(checkpoint), profile=as_profile(profile), out_dir=Path(out),
            recipe=None if recipe is None else as_recipe(recipe), task=task, eval_data=as_eval_data(eval_data),
            bench_export=bench_export, seed=seed, force=force, base=_optional_path(base), evaluator=evaluator))
    return _after_run(report, "run", out, history, mlflow_uri)


@public
def rerun(config: PathLike, *, out: PathLike | None = None, force: bool = False,
          history: PathLike | bool | None = None, mlflow_uri: str | None = None,
          progress: ProgressLike = None) -> Report:
    """Run again what a `run.yaml` (written beside every `run`'s report) describes: the same source, profile,
    recipe, eval data and seed; into `out` when given, else the run directory the file names."""
    from slimline.pipeline.run import run as run_pipeline
    from slimline.pipeline.run_config import load_run_config

    request = load_run_config(Path(config), out=_optional_path(out), force=force)
    read = input_paths(config, request.checkpoint, request.base, request.eval_data)
    with claimed_output(request.out_dir, "run", force=force, inputs=read):
        check_history(history)
        sweep_dead_scratch()
        report = run_pipeline(request)
    return _after_run(report, "run", request.out_dir, history, mlflow_uri)


@public
def compress(checkpoint: PathLike, *, recipe: RecipeLike, out: PathLike, profile: ProfileLike = "cpu",
             eval_data: DataLike | None = None, force: bool = False, base: PathLike | None = None,
             progress: ProgressLike = None) -> ModelDir:
    """Apply a recipe's passes to a checkpoint or model directory (or a PEFT adapter merged into `base`); returns
    the new model directory at `out`.

    `recipe` as `run` takes it; a list of steps may mix `{"pass": NAME, "with": {...}}` dicts and pass config
    objects. `profile` is the target the passes are checked against; `eval_data` feeds accuracy-aware passes
    (calibration, the quality fallback) their splits."""
    read = input_paths(checkpoint, base, eval_data, profile, recipe if isinstance(recipe, (str, Path)) else None)
    with claimed_output(out, "model", force=force, inputs=read):  # the output rule and the lock, first
        from slimline.core.progress import reporter
        from slimline.pipeline.single import compress_to

        steps = as_recipe(recipe)
        with reporter().step(f"compress: {' -> '.join(step.name for step in steps) or 'no steps'}"):
            return compress_to(Path(checkpoint), Path(out), steps, as_profile(profile),
                               tuning_data=as_dataset(eval_data), force=force, base=_optional_path(base))


@public
def export(checkpoint: PathLike, *, out: PathLike, task: str | None = None, opset: int = 18,
           exporter: str = "auto", force: bool = False, base: PathLike | None = None,
           progress: ProgressLike = None) -> ModelDir:
    """Export a Hugging Face checkpoint (or a PEFT adapter merged into `base`) to an ONNX model directory at
    `out`, checked against PyTorch on real or seeded inputs (parity, recorded in its manifest).

    `exporter`: "auto" (optimum's where it supports the model, else torch.onnx), "optimum" or "torch"."""
    with claimed_output(out, "model", force=force, inputs=input_paths(checkpoint, base)):  # first: the rule, the lock
        from slimline.core.progress import reporter
        from slimline.pipeline.single import export_to

        with reporter().step(f"export: {Path(checkpoint).name} to ONNX (with a parity check)"):
            return export_to(Path(checkpoint), Path(out), task=task, opset=opset, exporter=exporter, force=force,
                             base=_optional_path(base))


@public
def bench(checkpoint: PathLike, *, out: PathLike, profile: ProfileLike = "cpu", baseline: PathLike | None = None,
          eval_data: DataLike | None = None, force: bool = False, base: PathLike | None = None,
          history: PathLike | bool | None = None, mlflow_uri: str | None = None,
          evaluator: str | None = None, progress: ProgressLike = None) -> Report:
    """Benchmark a model directory against its fp32 source on a profile; returns the `Report`.

    `baseline` (default: the model's lineage source) is the fp32 original: a Hugging Face checkpoint, a PEFT
    adapter directory merged into `base`, or an fp32 ONNX model directory (measured on ONNX Runtime; for a
    hand-made model with no source)."""
    read = input_paths(checkpoint, baseline, base, eval_data, profile)
    with claimed_output(out, "run", force=force, inputs=read):  # the output rule and the lock, first
        from slimline.pipeline.single import bench_model

        check_history(history)
        sweep_dead_scratch()
        report = bench_model(Path(checkpoint), as_profile(profile), Path(out),
                             baseline=Path(baseline) if baseline is not None else None,
                             eval_data=as_eval_data(eval_data), force=force, base=_optional_path(base),
                             evaluator=evaluator)
    return _after_run(report, "bench", out, history, mlflow_uri)


@public
def search(checkpoint: PathLike, *, out: PathLike, profile: ProfileLike = "cpu", space: PathLike | None = None,
           eval_data: DataLike | None = None, trials: int | None = None, time_budget_s: float | None = None,
           seed: int = 0, executor: str = "local", ray_address: str | None = None, parallel: int | None = None,
           confidence_z: float = 0.0, force: bool = False, history: PathLike | bool | None = None,
           mlflow_uri: str | None = None, progress: ProgressLike = None) -> SearchResult:
    """Search a space of recipes (`space`: a shipped name or YAML; default by the profile's device) for the
    fastest artifact within every budget of `profile`; resumable: rerun with the same `out` to continue.

    Stops after `trials` finished trials or `time_budget_s` (default 20 minutes when neither is given).
    Writes OUT/trials.{json,md}, front.json, front.svg, best/ (artifact + best-recipe.yaml) after every
    trial, and report.json/.md for the chosen artifact, benched on the test split. `executor="ray"` runs
    trials as Ray tasks (`ray_address` for a cluster). Returns the `SearchResult` (`.report`, `.state`).
    """
    with claimed_output(out, "run", force=force, inputs=input_paths(checkpoint, space, eval_data, profile)):
        from slimline.pipeline.search import SearchRequest, run_search  # after the rule and the lock

        check_history(history)
        sweep_dead_scratch()
        result = run_search(SearchRequest(
            checkpoint=Path(checkpoint), profile=as_profile(profile), out_dir=Path(out),
            space=None if space is None else str(space), eval_data=as_dataset(eval_data), trials=trials,
            time_budget_s=time_budget_s, seed=seed, executor=executor,  # type: ignore[arg-type]
            ray_address=ray_address, parallel=parallel, confidence_z=confidence_z, force=force))
    result.report = _after_run(result.report, "search", out, history, mlflow_uri)
    return result


@public
def package(source: PathLike, *, out: PathLike, name: str | None = None, profile: ProfileLike | None = None,
            force: bool = False, tar: bool = False, sign_key: PathLike | None = None) -> PackagedBundle:
    """Build a verified deployment bundle from a run or model directory; returns the `PackagedBundle`.

    `sign_key`: an Ed25519 PEM private key (`slimline keygen`); signature.json then signs the manifest.
    """
    from slimline.deploy.bundle import package as package_bundle

    return package_bundle(Path(source), Path(out), name=name,
                          profile=None if profile is None else as_profile(profile), replace=force, archive=tar,
                          sign_key=None if sign_key is None else Path(sign_key))


@public
def verify(bundle: PathLike, *, key: PathLike | None = None, expect_sha256: str | None = None) -> VerifyResult:
    """Check a bundle's hashes, layout and that this machine can load it; returns the `VerifyResult`.

    Hashes only show the files match the manifest, which anyone can rewrite; for trust pass `key` (the
    publisher's Ed25519 PEM public key: a valid signature is required) and/or `expect_sha256` (the
    manifest's pinned sha256).
    """
    from slimline.deploy.manifest import verify_bundle

    return verify_bundle(Path(bundle), key=None if key is None else Path(key), expect_sha256=expect_sha256)


@public
def demo_checkpoint(*, progress: ProgressLike = None) -> ModelDir:
    """The offline demo checkpoint: MiniLM-L6 fine-tuned on Rotten Tomatoes, built once (about 10 minutes on 2
    cores, the first time) and cached in the user cache directory (SLIMLINE_CACHE_DIR overrides it)."""
    from slimline.pipeline.demo import ensure_demo_checkpoint

    return ensure_demo_checkpoint()


@public
def doctor(*, refresh: bool = False) -> DoctorReport:
    """What this machine can run: CPU instruction sets, runtimes and execution providers, GPUs, and whether the
    imports every export runs through load here. The slow part (a fresh interpreter importing the export stack,
    and torch's CUDA facts) is cached per environment, keyed on the installed packages; `refresh` probes again."""
    from slimline.core.doctor import diagnose

    return diagnose(refresh=refresh)


@public
def keygen(out: PathLike) -> tuple[Path, Path]:
    """An Ed25519 key pair for signing bundles: writes OUT.key (private, mode 0600) and OUT.pub, never over an
    existing file; returns their paths. Sign with `package(..., sign_key=OUT.key)`, check with
    `verify(..., key=OUT.pub)`."""
    from slimline.deploy.signing import generate_keypair

    return generate_keypair(str(out))


@public
def check_history(history: PathLike | bool | None) -> None:
    """The history pre-flight of run, bench, search and demo: a corrupt, truncated, foreign or (when chosen)
    unwritable database is refused (exit 2) before any work, not after the verdict (`history` as `run` takes it)."""
    from slimline.history.preflight import check_history_choice

    check_history_choice(history)


def _after_run(report: Report, kind: str, out: PathLike, history: PathLike | bool | None,
               mlflow_uri: str | None) -> Report:
    """Every run and bench: the profile's regression budget, then the results history (default on; `history`
    False skips it, a path chooses the file) and, with `mlflow_uri`, MLflow (see slimline.history.hooks)."""
    from slimline.history.hooks import after_run

    return after_run(report, kind, Path(out), history=history, mlflow_uri=mlflow_uri)[0]


def _history_path(history: PathLike | None) -> Path | None:
    return None if history is None else Path(history)


@public
def import_history_record(record: PathLike, *, history: PathLike | None = None) -> tuple[int, bool]:
    """Add a run that could not be recorded when it finished (OUT/history-record.json, or OUT itself) to the
    history; returns (run id, whether it was new: importing twice records it once)."""
    from slimline.history.pending import import_pending_record

    return import_pending_record(Path(record), _history_path(history))


@public
def history_runs(*, history: PathLike | None = None, checkpoint: str | None = None, profile: str | None = None,
                 limit: int | None = None) -> list[RunRecord]:
    """Recorded runs, newest first (`history`: the database; default $SLIMLINE_HISTORY or the user data dir)."""
    from slimline.history.records import list_runs

    return list_runs(_history_path(history), checkpoint=checkpoint, profile=profile, limit=limit)


@public
def history_run(run_id: int | str, *, history: PathLike | None = None) -> RunRecord:
    """One recorded run; `.report` is its full `Report`."""
    from slimline.history.records import get_run

    return get_run(run_id, _history_path(history))


@public
def ship(run_id: int | str, *, history: PathLike | None = None, note: str = "") -> RunRecord:
    """Mark a recorded run as shipped: the reference of the profile's `regression_vs_shipped` budget."""
    from slimline.history.records import ship_run

    return ship_run(run_id, _history_path(history), note)


@public
def compare(run_a: int | str, run_b: int | str, *, history: PathLike | None = None,
            html: PathLike | None = None, force: bool = False, retime: bool = False,
            progress: ProgressLike = None) -> Comparison:
    """Two recorded runs side by side (latency CIs, accuracy with paired SE on the same examples, size,
    budgets); `html` also writes the comparison page (an existing file slimline did not write: with `force`).

    Each run's latency interval is within-run only (`Comparison.notes` says so): it does not cover the machine
    drifting between the runs. `retime` times both runs' artifacts again, side by side in one process, now
    (both must still be on this machine, unchanged, on a CPU runtime), and judges the difference on that."""
    from slimline.core.artifact import atomic_write_text
    from slimline.core.progress import reporter
    from slimline.history.compare import compare_runs, is_comparison_html
    from slimline.history.records import get_run

    if html is not None:  # before reading anything: the output rule (a file: replaced only when slimline's)
        check_output(Path(html), "file", force=force, inputs=_history_inputs(history), ours=is_comparison_html)
    a, b = get_run(run_a, _history_path(history)), get_run(run_b, _history_path(history))
    retimed = None
    if retime:
        from slimline.history.retime import retime_runs

        with reporter().step(f"compare: timing run #{a.id}'s and run #{b.id}'s artifacts side by side"):
            retimed = retime_runs(a, b)
    comparison = compare_runs(a, b, retimed)
    if html is not None:
        atomic_write_text(Path(html), comparison.html())
    return comparison


@public
def export_history(fmt: str = "csv", *, out: PathLike | None = None, history: PathLike | None = None,
                   force: bool = False) -> str | Path:
    """Every recorded figure with its spread as CSV (text, or a file) or Parquet (a file; needs pyarrow).
    An existing `out` slimline did not write is replaced only with `force`; never the history itself."""
    from slimline.history.export import export_history as export_rows
    from slimline.history.export import is_history_export

    if out is not None:
        check_output(Path(out), "file", force=force, inputs=_history_inputs(history), ours=is_history_export)
    return export_rows(fmt, _history_path(out), _history_path(history))


def _history_inputs(history: PathLike | None) -> list[Path]:
    from slimline.history.store import resolve_history_path

    return input_paths(resolve_history_path(_history_path(history)))


__all__ = ["as_dataset", "as_eval_data", "as_profile", "as_recipe", "bench", "check_history", "compare", "compress",
           "demo_checkpoint", "doctor", "export", "export_history", "history_run", "history_runs",
           "import_history_record", "keygen", "package", "public", "rerun", "run", "search", "ship", "verify"]
