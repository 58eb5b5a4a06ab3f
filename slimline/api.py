"""The public Python API: the CLI's commands as functions, with typed results.

Every function takes `str | Path` for paths, a profile as a shipped name, a YAML path or a `Profile`,
a recipe as a shipped name, a YAML path, a list of `{pass, with}` dicts or a list of pass config
objects, and eval data as `rotten-tomatoes[:split]`, a .csv/.jsonl path or a `DatasetSpec`. Bad input
raises a `slimline.SlimlineError` subclass whose message says how to fix it. The CLI (slimline.cli)
only parses arguments and calls these.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimline.compress.base import PassConfig, registered_passes
from slimline.compress.recipe import RecipeStep, build_step, load_recipe
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec, parse_dataset_arg
from slimline.core.errors import RecipeError
from slimline.profiles.schema import Profile, load_profile

if TYPE_CHECKING:  # the result types live in modules that import numpy and the runtimes' glue
    from slimline.bench.report import Report
    from slimline.deploy.bundle import PackagedBundle
    from slimline.deploy.manifest import VerifyResult

PathLike = str | Path
ProfileLike = str | Path | Profile
RecipeLike = str | Path | Sequence[dict[str, Any] | PassConfig | RecipeStep]
DataLike = str | Path | DatasetSpec


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
            steps.append(RecipeStep(index, item.pass_))
        elif isinstance(item, PassConfig):
            steps.append(_step_for_config(index, item))
        else:
            steps.append(build_step(index, item, "recipe"))
    return steps


def as_dataset(data: DataLike | None) -> DatasetSpec | None:
    return parse_dataset_arg(str(data) if isinstance(data, Path) else data)


def run(checkpoint: PathLike, *, out: PathLike, profile: ProfileLike = "cpu", recipe: RecipeLike | None = None,
        task: str | None = None, eval_data: DataLike | None = None, bench_export: bool = False,
        seed: int = 0, force: bool = False) -> Report:
    """Compress -> export -> bench -> verdict; writes OUT/stages, report.json and report.md.

    Returns the `Report` (its `.verdict` is "pass", "fail" or "incomplete"); bad input raises before
    any stage runs. An `out` holding files slimline did not write is refused unless `force`.
    """
    from slimline.pipeline.plan import RunRequest
    from slimline.pipeline.run import run as run_pipeline

    return run_pipeline(RunRequest(
        checkpoint=Path(checkpoint), profile=as_profile(profile), out_dir=Path(out),
        recipe=None if recipe is None else as_recipe(recipe), task=task, eval_data=as_dataset(eval_data),
        bench_export=bench_export, seed=seed, force=force))


def compress(model: PathLike, *, recipe: RecipeLike, out: PathLike, profile: ProfileLike = "cpu",
             eval_data: DataLike | None = None, force: bool = False) -> ModelDir:
    """Apply a recipe's passes to a model directory; returns the new model directory at `out`."""
    from slimline.pipeline.single import compress_to

    return compress_to(Path(model), Path(out), as_recipe(recipe), as_profile(profile),
                       tuning_data=as_dataset(eval_data), force=force)


def export(checkpoint: PathLike, *, out: PathLike, task: str | None = None, opset: int = 18,
           exporter: str = "auto", force: bool = False) -> ModelDir:
    """Export a Hugging Face checkpoint to an ONNX model directory (with a parity check)."""
    from slimline.pipeline.single import export_to

    return export_to(Path(checkpoint), Path(out), task=task, opset=opset, exporter=exporter, force=force)


def bench(model: PathLike, *, out: PathLike, profile: ProfileLike = "cpu", baseline: PathLike | None = None,
          eval_data: DataLike | None = None, force: bool = False) -> Report:
    """Benchmark a model directory against its fp32 source on a profile; returns the `Report`."""
    from slimline.pipeline.single import bench_model

    return bench_model(Path(model), as_profile(profile), Path(out),
                       baseline=Path(baseline) if baseline is not None else None, eval_data=as_dataset(eval_data),
                       force=force)


def package(source: PathLike, *, out: PathLike, name: str | None = None, profile: ProfileLike | None = None,
            force: bool = False, tar: bool = False, sign_key: PathLike | None = None) -> PackagedBundle:
    """Build a verified deployment bundle from a run or model directory; returns the `PackagedBundle`.

    `sign_key`: an Ed25519 PEM private key (`slimline keygen`); signature.json then signs the manifest.
    """
    from slimline.deploy.bundle import package as package_bundle

    return package_bundle(Path(source), Path(out), name=name,
                          profile=None if profile is None else as_profile(profile), replace=force, archive=tar,
                          sign_key=None if sign_key is None else Path(sign_key))


def verify(bundle: PathLike, *, key: PathLike | None = None, expect_sha256: str | None = None) -> VerifyResult:
    """Check a bundle's hashes, layout and that this machine can load it; returns the `VerifyResult`.

    Hashes only show the files match the manifest, which anyone can rewrite; for trust pass `key` (the
    publisher's Ed25519 PEM public key: a valid signature is required) and/or `expect_sha256` (the
    manifest's pinned sha256).
    """
    from slimline.deploy.manifest import verify_bundle

    return verify_bundle(Path(bundle), key=None if key is None else Path(key), expect_sha256=expect_sha256)


def demo_checkpoint() -> ModelDir:
    """The offline demo checkpoint (built once, a few minutes on 2 cores, then cached)."""
    from slimline.pipeline.demo import ensure_demo_checkpoint

    return ensure_demo_checkpoint()


__all__ = ["as_dataset", "as_profile", "as_recipe", "bench", "compress", "demo_checkpoint", "export", "package", "run",
           "verify"]
