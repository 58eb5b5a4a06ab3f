"""run = check everything -> torch-level passes -> export -> ONNX-level passes -> bench -> report.

Each stage writes `OUT/stages/NN-<step>-<hash8>/`, named by the hash of its input manifest and
its config: a rerun reuses finished stages and never overwrites a good one. All checks that can
fail on bad input run before any heavy work (Olive's and llm-compressor's habit).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slimline.benchmarking.benchmark import Candidate, measure
from slimline.benchmarking.budgets import evaluate_budgets
from slimline.benchmarking.evaluators.base import EvalContext, evaluator_name_for, get_evaluator
from slimline.benchmarking.report import Report, StageRecord, write_report
from slimline.benchmarking.runners.base import torch_baseline_precision
from slimline.compression.recipe import recipe_as_data, recipe_with_skipped
from slimline.core.artifact import (
    ModelDir,
)
from slimline.core.errors import OutputError
from slimline.core.invocation import command_line
from slimline.core.machine import library_versions, machine_info
from slimline.core.outputs import claimed_output, claimed_run_dir
from slimline.core.progress import reporter
from slimline.core.scratch import scratch_directory
from slimline.exporters.openvino import OPENVINO_EXPORT_STEP
from slimline.exporters.tensorrt import TENSORRT_EXPORT_STEP
from slimline.formats.inputs import default_input_specs
from slimline.pipeline.plan import Plan, RunRequest, plan_run, run_inputs
from slimline.pipeline.run_config import RUN_CONFIG_NAME, write_run_config
from slimline.pipeline.side_by_side import (
    attach,
    busy_machine_warning,
    disagreements,
    load_average,
    model_inputs_label,
    summary,
    time_side_by_side,
)
from slimline.pipeline.stages import run_stages
from slimline.runtimes import runtime_for_format


def execute(request: RunRequest, plan: Plan) -> Report:
    if plan.choice is not None:  # target.runtime auto: every candidate built and timed, the chosen one benched
        from slimline.pipeline.runtime_choice import execute_choice

        return execute_choice(request, plan)
    done = run_stages(request, plan)
    intermediates = done.onnx_stages[:1] if request.bench_export and len(done.onnx_stages) > 1 else []
    return bench_and_report(request, plan, done.final, intermediates, done.records)


def _label(model: ModelDir) -> str:
    """Short name for tables: the last step that made the model (the export alone means fp32 ONNX)."""
    steps = [s.name for s in model.manifest.lineage if s.kind != "source"]
    if not steps:
        return "source"
    if steps[-1] == TENSORRT_EXPORT_STEP:
        return f"{steps[-1]} ({model.manifest.metadata.get('tensorrt', {}).get('precision', '?')})"
    if steps[-1] == OPENVINO_EXPORT_STEP and len(steps) > 2:  # the IR of the passes before it
        return f"{steps[-2]} ({steps[-1]})"
    return f"{steps[-1]} (fp32)" if steps[-1].startswith("export.") else steps[-1]


def _source_name(model: ModelDir) -> str:
    """The file a model arrived as (an ONNX file's cached directory is named by a hash), else its directory."""
    source = next((s for s in model.manifest.lineage if s.kind == "source"), None)
    path = source.config.get("path") if source is not None and source.name == "onnx-file" else None
    return Path(str(path)).name if path else model.path.name


def bench_and_report(request: RunRequest, plan: Plan, final: ModelDir, intermediates: list[ModelDir],
                     records: list[StageRecord]) -> Report:
    profile = request.profile
    runtime = profile.target.runtime
    inputs = final.manifest.inputs or default_input_specs(final.manifest.task)
    with scratch_directory("slimline-eval-") as scratch:
        eval_facts, eval_npz = None, None
        evaluator = plan.evaluator or evaluator_name_for(plan.source.manifest.task, plan.eval_data)
        if plan.eval_data is not None:
            spec = plan.eval_data
            eval_npz = Path(scratch) / "eval.npz"
            with reporter().step(f"bench: preparing {spec.source} for the {evaluator} evaluator"):
                context = EvalContext(plan.source, inputs, profile.shapes[0], profile.measurement.eval_max_samples,
                                      outputs=plan.outputs)
                eval_facts = {**get_evaluator(evaluator).prepare(spec, context, eval_npz), "evaluator": evaluator}
        baseline_precision = torch_baseline_precision(profile.target.device, profile.target.precision)
        baseline = Candidate(f"torch {baseline_precision} eager (baseline)", plan.source, "torch")
        if plan.source.manifest.format == "onnx":  # an ONNX file given as it is, or `bench --baseline ONNX_DIR`
            baseline = Candidate(f"{_source_name(plan.source)} onnxruntime (baseline)", plan.source,
                                 runtime_for_format("onnx").name)
        # ONNX intermediates of a TensorRT run are measured on ONNX Runtime (the profile's CUDA providers)
        candidates = [Candidate(_label(m), m, runtime_for_format(m.manifest.format, runtime).name)
                      for m in intermediates]
        candidates.append(Candidate(_label(final), final, runtime))
        load_before = load_average()
        baseline_result, results = measure(candidates, baseline, profile, inputs, eval_npz, evaluator)
    timing, why_not = time_side_by_side(profile, baseline, candidates, request.seed)
    load_after = load_average()
    if timing is not None:  # every timing budget is judged on these (bench.figures)
        baseline_result, results = attach(timing, baseline_result, results, request.seed)
    side_by_side = {**summary(timing, why_not, profile, [baseline_result, *results],
                              model_inputs_label(final, profile)), "load_average_1min": [load_before, load_after]}
    final_result = results[-1]
    budgets, verdict = evaluate_budgets(profile.budgets, final_result, baseline_result)
    busy = busy_machine_warning(load_before, load_after, os.cpu_count())
    warnings = [*plan.warnings, *([busy] if busy else []), *baseline_result.warnings, *final_result.warnings,
                *disagreements(results)]
    coverage = final.manifest.metadata.get("quantization", {}).get("coverage", {})
    if coverage.get("warning"):  # e.g. "only 1 of 53 weight ops quantized": a CNN given text defaults
        warnings.append(coverage["warning"])
    if plan.eval_data is None:
        warnings.append("no labelled eval data: accuracy was not measured (pass --eval-data)")
    return Report(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=machine_info(),
        versions=library_versions(), profile=profile.model_dump(mode="json"),
        recipe=recipe_as_data(recipe_with_skipped(plan.steps, plan.skipped)), checkpoint=str(plan.source.path),
        skipped_steps=[skipped.as_data() for skipped in plan.skipped],
        stages=records, eval_data=eval_facts, baseline=baseline_result, measurements=final_result,
        intermediates=results[:-1], speedup_vs_baseline=final_result.speedup_vs_baseline,
        accuracy_drop_pt=final_result.accuracy_drop_pt, budgets=budgets, verdict=verdict, warnings=warnings,
        accuracy_fallback=final.manifest.metadata.get("accuracy_fallback"), side_by_side=side_by_side,
        command_line=command_line(),
        calibration=final.manifest.metadata.get("quantization", {}).get("calibration"),
    )


def run(request: RunRequest) -> Report:
    """Claim --out (the output rule and its lock, before anything heavy), plan (all cheap checks), execute the
    stages, benchmark, and write report.json/report.md and run.yaml."""
    with claimed_output(request.out_dir, "run", force=request.force, inputs=run_inputs(request)):
        plan = plan_run(request)
        with claimed_run_dir(request.out_dir):
            report = execute(request, plan)
            check_stages_on_disk(report)
            write_run_config(request, recipe_as_data(plan.steps), report.command_line)
            report = report.model_copy(update={"run_config": RUN_CONFIG_NAME})
            write_report(report, request.out_dir)
    return report


def check_stages_on_disk(report: Report) -> None:
    """The report names each stage by its manifest's sha256: those must be the manifests on disk."""
    for stage in report.stages:
        on_disk = ModelDir.open(Path(stage.directory), verify=False).manifest_sha256
        if on_disk != stage.manifest_sha256:
            raise OutputError(f"stage {stage.directory} changed while the run was writing it (manifest sha256 "
                              f"{on_disk[:12]} on disk, {stage.manifest_sha256[:12]} recorded).",
                              fix="make sure no other process writes this --out, then rerun.")


def load_report(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "report.json"
    if not path.is_file():
        raise OutputError(f"{path} does not exist.", fix="run `slimline run` first.")
    return json.loads(path.read_text())
