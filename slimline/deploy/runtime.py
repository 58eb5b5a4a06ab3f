"""Which runtime a bundle's engine needs, and whether this machine has it: the version rule and a real load.

Each runtime states its own rule (slimline.runtimes.<name>: version_problem) and its own load. ONNX models
and OpenVINO IRs are forward compatible across releases, but an older release may lack the opset or
operators the packaging one wrote: the major version must match and the local minor must be at least the
recorded one. A TensorRT plan deserialises only with the release that built it ("expecting library
version 8.2.4 got 8.2.3, please rebuild"): major.minor.patch must match (the same rule as
slimline.engine_facts), and the plan only loads on the GPU architecture it was built for.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from slimline.core.artifact import ModelDir, TensorSpec
from slimline.core.errors import BundleError
from slimline.profiles.schema import Profile
from slimline.runtimes import all_runtimes, engine_runtime, get_runtime
from slimline.runtimes.base import Runtime


class RuntimeRequirement(BaseModel):
    """The runtime that loaded the engine when it was packaged (and, for a plan, built it)."""

    model_config = ConfigDict(extra="forbid")
    name: str  # a runtime in slimline.runtimes whose engines bundles hold
    version: str
    providers: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _deployable(cls, name: str) -> str:
        if get_runtime(name).engine_file_name is None:  # ValueError for an unknown name too
            raise ValueError(f"runtime {name!r} has no deployable engine")
        return name


def _release(version: str) -> tuple[int, ...] | None:
    """(major, minor, patch) of a version string, as far as it has them."""
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


def local_version(runtime: str) -> str:
    return get_runtime(runtime).installed_version()


def runtime_for(fmt: str, model: ModelDir, providers: list[str]) -> RuntimeRequirement:
    runtime = bundle_runtime(fmt)
    return RuntimeRequirement(name=runtime.name, version=runtime.bundle_version(model), providers=providers)


def bundle_runtime(fmt: str) -> Runtime:
    """The runtime whose engine a bundle of `fmt` holds; BundleError when none is deployable."""
    runtime = engine_runtime(fmt)
    if runtime is None:
        deployable = sorted(str(r.engine_format) for r in all_runtimes() if r.engine_file_name)
        raise BundleError(f"a bundle holds a deployable engine ({', '.join(deployable)}), not a {fmt} model.",
                          fix="package a run on an onnxruntime/openvino/tensorrt profile, or `slimline export` it "
                              "first.")
    return runtime


def check_runtime(requirement: RuntimeRequirement) -> str:
    """Raise BundleError when the local runtime cannot be trusted to load the engine; returns its version."""
    here = local_version(requirement.name)
    recorded, local = _release(requirement.version), _release(here)
    if recorded is None or local is None:
        raise BundleError(f"cannot compare {requirement.name} versions {requirement.version!r} (bundle) and "
                          f"{here!r} (here).", fix="repackage the bundle on this machine.")
    problem = get_runtime(requirement.name).version_problem(recorded, local, requirement.version, here)
    if problem is not None:
        message, fix = problem
        raise BundleError(f"{message}.", fix=fix)
    return here


def load_check(requirement: RuntimeRequirement, engine: Path, inputs: list[TensorSpec],
               profile: Profile) -> list[str]:
    """Load the engine as the runtime would; returns warnings (the target's providers missing here)."""
    return get_runtime(requirement.name).load_check(engine, inputs, profile.target)


def engine_outputs(fmt: str, engine: Path, model: ModelDir) -> list[TensorSpec]:
    """Output names, dtypes and shapes: read from the engine where the runtime can, else the classifier's logits."""
    return bundle_runtime(fmt).engine_outputs(engine, model)
