"""OpenVINO as the benchmarks' peer, built the way a user's two-line script builds it, and slimline's default.

Peers (no slimline pass involved, only openvino / nncf on the same fp32 ONNX export):
- "openvino (default precision)": `ov.convert_model` + `ov.save_model`, compiled with OpenVINO's defaults
  (bf16 on AMX and, in 2026.4, on AVX-512-BF16 CPUs; f32 elsewhere);
- "openvino + nncf int8": `nncf.quantize(model, 300 calibration texts of the train split, model_type=TRANSFORMER)`.
Each is wrapped as a model directory (format openvino) so the same harness, inputs and test split measure it.

`default_cpu_model` runs the `cpu` profile's own choice (target.runtime auto: every candidate built, timed
side by side, the fastest within the budgets kept), so the benchmarks compare slimline's default as a user
gets it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimline.benchmarking.benchmark import Candidate
from slimline.compression.calibration import CalibrationSpec, TextCalibrationReader
from slimline.core.artifact import LineageStep, Manifest, ModelDir, atomic_directory, new_provenance, write_manifest
from slimline.core.progress import reporter
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.runtime_choice import build_and_choose
from slimline.profiles.schema import Profile
from slimline.runtimes.openvino.ir import IR_XML, copy_side_files

CALIBRATION_TEXTS = 300
OPENVINO_DEFAULT = "openvino (default precision)"
OPENVINO_NNCF = f"openvino + nncf int8 ({CALIBRATION_TEXTS} calibration texts)"


def openvino_peer(onnx_dir: ModelDir, work: Path, int8: bool) -> Candidate:
    """The fp32 export through OpenVINO (and NNCF INT8), as a user would script it; built once under `work`."""
    import nncf
    import openvino as ov

    label = OPENVINO_NNCF if int8 else OPENVINO_DEFAULT
    final = work / ("openvino-nncf-int8" if int8 else "openvino-default")
    if not final.exists():
        with reporter().step(f"peer: {label}"), atomic_directory(final) as tmp:
            model = ov.convert_model(str(onnx_dir.model_path))
            facts: dict[str, Any] = {"openvino_version": ov.__version__}
            if int8:
                names = {port.get_any_name() for port in model.inputs}
                reader = TextCalibrationReader(CalibrationSpec(source="rotten-tomatoes", split="train",
                                                               num_samples=CALIBRATION_TEXTS),
                                               onnx_dir.path, names)
                examples = reader._examples
                model = nncf.quantize(model, nncf.Dataset(examples), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(examples))
                facts.update(calibration_examples=len(examples), calibration_sha256=reader.sha256)
            ov.save_model(model, str(tmp / IR_XML))  # OpenVINO's defaults: fp16-compressed float weights
            copy_side_files(onnx_dir.path, tmp)
            write_manifest(tmp, Manifest(
                format="openvino", task=onnx_dir.manifest.task, model_file=IR_XML, inputs=onnx_dir.manifest.inputs,
                outputs=onnx_dir.manifest.outputs,
                lineage=[*onnx_dir.manifest.lineage, LineageStep(kind="pass", name=f"peer.{final.name}",
                                                                  config={"int8": int8},
                                                                  parent_manifest_sha256=onnx_dir.manifest_sha256)],
                provenance=new_provenance(), metadata={**onnx_dir.manifest.metadata, "peer": facts}))
    return Candidate(label, ModelDir.open(final), "openvino")


def openvino_peers(onnx_dir: ModelDir, work: Path) -> list[Candidate]:
    return [openvino_peer(onnx_dir, work, int8=False), openvino_peer(onnx_dir, work, int8=True)]


#: `--quick`: a short measurement to validate a benchmark script end to end (numbers not for committing).
QUICK_MEASUREMENT = {"warmup_iters": 2, "min_iters": 10, "min_time_s": 0.5, "max_time_s": 3.0, "eval_max_samples": 200}


def quick(profile: Profile) -> Profile:
    return profile.model_copy(update={"measurement": profile.measurement.model_copy(update=QUICK_MEASUREMENT)})


def default_cpu_model(checkpoint: Path, profile: Profile, out: Path) -> tuple[Candidate, dict[str, Any]]:
    """The `cpu` profile's default as a run makes it: the runtime chosen by measurement, and why."""
    request = RunRequest(checkpoint=checkpoint, profile=profile, out_dir=out)
    plan = plan_run(request)
    if plan.choice is None:  # a profile with a fixed runtime
        from slimline.pipeline.stages import run_stages

        done = run_stages(request, plan)
        return Candidate(f"slimline {profile.name} default", done.final, profile.target.runtime), {}
    item, done, summary = build_and_choose(plan)
    label = f"slimline {profile.name} default (runtime auto: {item.candidate.name()})"
    return Candidate(label, done.final, item.candidate.runtime), summary
