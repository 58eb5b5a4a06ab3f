"""Regenerate bench/results/quantization-cpu.{json,md}: every quantization recipe vs the peers, one run.

On the demo checkpoint with the `cpu` profile (batch 1, seq 128, 2 threads): torch fp32 eager
(baseline), ONNX Runtime fp32, the `cpu` profile's default as a run makes it (the runtime chosen by
measurement), each slimline quantization recipe (ONNX Runtime and OpenVINO), and what a user would pick
instead -- Optimum's ORTQuantizer dynamic presets for this CPU (`avx2`, plus `avx512_vnni` where the CPU
has VNNI), OpenVINO on the same export with its default precision, and OpenVINO + NNCF INT8 -- all
through the same harness, inputs and test split. Latency ratios come from one side-by-side timing of
every model in one process (round-robin); each model's own worker gives size, memory and accuracy.
Usage: python -m benchmarks.quantization_cpu [--work DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks import add_results_dir_argument
from benchmarks.openvino_peers import default_cpu_model, openvino_peers, quick
from slimline.benchmarking.benchmark import Candidate, measure
from slimline.benchmarking.eval_data import build_eval_npz
from slimline.benchmarking.interleaved import InterleavedSpec, InterleavedTiming, time_interleaved
from slimline.benchmarking.report import markdown_table, write_results
from slimline.benchmarking.results_model import CandidateResult
from slimline.compression.recipe import load_recipe, parse_recipe
from slimline.core.artifact import LineageStep, Manifest, ModelDir, atomic_directory, new_provenance, write_manifest
from slimline.core.machine import has_vnni, library_versions, machine_info
from slimline.core.progress import RichReporter, reporter, set_reporter
from slimline.pipeline.demo import ensure_demo_checkpoint
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.side_by_side import runner_spec
from slimline.pipeline.stages import run_stages
from slimline.profiles.schema import load_profile

NO_FALLBACK = {"fallback": {"enabled": False}}
ORT_DEFAULT = "slimline onnxruntime fused + int8 dynamic (cpu-int8-dynamic, fallback)"
#: name -> recipe, each run on the first `cpu` candidate runtime that can run it.
RECIPES: dict[str, list[dict[str, Any]] | str] = {
    ORT_DEFAULT: "cpu-int8-dynamic",
    "slimline openvino nncf int8 + precision (openvino-int8)": "openvino-int8",
    "slimline openvino float (bf16 where the CPU has it)": "openvino-float",
    "int8 dynamic, unfused graph": [{"pass": "quantize.ort-int8-dynamic", "with": NO_FALLBACK}],
    "fused fp32 (no quantization)": [{"pass": "optimize.ort-transformers"}],
    "int8 static QDQ, per-channel, minmax": [
        {"pass": "quantize.ort-int8-static", "with": {"format": "qdq", **NO_FALLBACK}}],
    "int4 weight-only (MatMul + embeddings)": [{"pass": "quantize.ort-int4-weight-only"}],
    "fused + int4 weight-only": [{"pass": "optimize.ort-transformers"}, {"pass": "quantize.ort-int4-weight-only"}],
}


def optimum_presets() -> list[str]:
    return ["avx2", "avx512_vnni"] if has_vnni() else ["avx2"]


def optimum_candidate(onnx_dir: ModelDir, preset: str, work: Path) -> Candidate:
    """Optimum's ORTQuantizer dynamic preset on the same fp32 export, wrapped as a model directory."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    final = work / f"optimum-{preset}"
    if not final.exists():
        with reporter().step(f"optimum ORTQuantizer {preset} preset"), atomic_directory(final) as tmp:
            quantizer = ORTQuantizer.from_pretrained(onnx_dir.path, file_name=onnx_dir.model_path.name)
            config = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=False)
            quantizer.quantize(save_dir=tmp, quantization_config=config)
            write_manifest(tmp, Manifest(
                format="onnx", task=onnx_dir.manifest.task, model_file="model_quantized.onnx",
                inputs=onnx_dir.manifest.inputs, outputs=onnx_dir.manifest.outputs,
                lineage=[*onnx_dir.manifest.lineage, LineageStep(kind="pass", name=f"optimum.ORTQuantizer.{preset}",
                                                                  config={"is_static": False, "per_channel": False},
                                                                  parent_manifest_sha256=onnx_dir.manifest_sha256)],
                provenance=new_provenance(), metadata=dict(onnx_dir.manifest.metadata)))
    return Candidate(f"optimum ORTQuantizer {preset} (dynamic)", ModelDir.open(final), "onnxruntime")


def build_candidates(work: Path, only: list[str] | None,
                     short: bool = False) -> tuple[Candidate, list[Candidate], Any, Any, dict]:
    profile = quick(load_profile("cpu")) if short else load_profile("cpu")
    checkpoint = ensure_demo_checkpoint()
    candidates: list[Candidate] = []
    onnx_fp32: ModelDir | None = None
    for name, steps in RECIPES.items():
        if only and name not in only:
            continue
        request = RunRequest(checkpoint=checkpoint.path, profile=profile, out_dir=work / "stages",
                             recipe=load_recipe(steps) if isinstance(steps, str) else parse_recipe(steps, name))
        plan = plan_run(request)  # the first cpu candidate runtime that runs the recipe (request.profile)
        done = run_stages(request, plan)
        onnx_fp32 = done.onnx_stages[0]
        candidates.append(Candidate(name, done.final, request.profile.target.runtime))
    if onnx_fp32 is None:
        raise SystemExit("no recipe selected")
    default, choice = default_cpu_model(checkpoint.path, profile, work / "stages")
    candidates.insert(0, default)
    candidates.insert(0, Candidate("onnxruntime fp32 (export)", onnx_fp32, "onnxruntime"))
    candidates += [optimum_candidate(onnx_fp32, preset, work) for preset in optimum_presets()]
    candidates += openvino_peers(onnx_fp32, work)
    baseline = Candidate("torch fp32 eager (baseline)", ModelDir.open(checkpoint.path), "torch")
    return baseline, candidates, profile, checkpoint, choice


def side_by_side(baseline: Candidate, candidates: list[Candidate], profile: Any) -> dict[str, Any]:
    """Every model timed round-robin in one process: the ratios a busy neighbour cannot reorder."""
    models = [baseline, *candidates]
    timing = time_interleaved(InterleavedSpec(
        runners=[runner_spec(m.label, m.model, m.runtime, profile) for m in models], shape=profile.shapes[0],
        timing=InterleavedTiming.of(profile.measurement)))
    return {"rounds": timing.rounds, "seconds": timing.seconds,
            "p50_ms": {label: stats.p50_ms for label, stats in timing.latency_stats().items()}}


def is_peer(label: str) -> bool:
    return label.startswith(("optimum", "openvino (", "openvino +"))


def summarise(baseline: CandidateResult, results: list[CandidateResult], fp32_onnx_mb: float,
              timed: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, computed from this run's numbers: speed ratios from the side-by-side timing."""
    p50 = timed["p50_ms"]
    peers = [r for r in results if is_peer(r.label)]
    default = next((r for r in results if r.label.startswith("slimline cpu default")), None)
    summary: dict[str, Any] = {}
    if peers and default:
        fastest = min(peers, key=lambda r: p50[r.label])
        ratio = p50[fastest.label] / p50[default.label]
        summary["default_vs_fastest_peer"] = {
            "default": default.label, "fastest_peer": fastest.label, "speedup": ratio, "target": 1.0, "aim": 1.3,
            "met": ratio >= 1.0, "default_accuracy_drop_pt": default.accuracy_drop_pt,
            "fastest_peer_accuracy_drop_pt": fastest.accuracy_drop_pt,
            "accuracy_target_met": default.accuracy_drop_pt is not None and default.accuracy_drop_pt <= 1.0,
        }
        summary["default_speedup_vs_torch_fp32"] = p50[baseline.label] / p50[default.label]
    int4 = [r for r in results if "int4" in r.label]
    if int4:
        smallest = min(int4, key=lambda r: r.size_mb)
        summary["int4_size_vs_fp32"] = {"label": smallest.label, "size_mb": smallest.size_mb,
                                        "fp32_onnx_size_mb": fp32_onnx_mb, "fraction": smallest.size_mb / fp32_onnx_mb,
                                        "target": 0.30, "met": smallest.size_mb / fp32_onnx_mb <= 0.30}
    return summary


def render(payload: dict[str, Any]) -> str:
    machine = payload["machine"]
    rows = []
    timed = payload["side_by_side"]["p50_ms"]
    base_p50 = timed[payload["baseline"]["label"]]
    for r in [payload["baseline"], *payload["candidates"]]:
        stats = next(iter(r["latency"].values()))
        low, high = stats["p50_ci95_ms"]
        rows.append([r["label"], r["runtime"], f"{timed[r['label']]:.2f}", f"{base_p50 / timed[r['label']]:.2f}",
                     f"{stats['p50_ms']:.2f}", f"[{low:.2f}, {high:.2f}]", f"{stats['p95_ms']:.2f}",
                     f"{stats['cv']:.2f}", f"{r['size_mb']:.1f}", f"{r['peak_rss_mb']:.0f}",
                     "-" if r["accuracy_pct"] is None else f"{r['accuracy_pct']:.2f}",
                     "-" if r.get("accuracy_drop_pt") is None else f"{r['accuracy_drop_pt']:.2f}",
                     "1.00" if r is payload["baseline"] else f"{r['speedup_vs_baseline']:.2f}"])
    lines = [
        "# Quantization on CPU: slimline recipes vs Optimum presets and OpenVINO (one run)", "",
        f"- created: {payload['created_at']}; command: `python -m benchmarks.quantization_cpu`",
        f"- machine: {machine['cpu_model']}, {machine['cpu_count']} cores, instruction sets: "
        f"{', '.join(machine['cpu_flags'])} (VNNI: {payload['has_vnni']}); CPU class "
        f"{machine['cpu_capabilities']['kind']}, bf16 {machine['cpu_capabilities']['bf16']}, AMX "
        f"{machine['cpu_capabilities']['amx']}",
        f"- side by side: {payload['side_by_side']['rounds']} rounds, every model in one process (round-robin); "
        "the worker columns time each model alone",
        f"- profile `cpu`: batch 1, sequence 128, {payload['threads']} threads; accuracy on "
        f"{payload['eval_data']['examples']} test examples of Rotten Tomatoes, each model run as exported",
        f"- versions: {', '.join(f'{k} {v}' for k, v in payload['versions'].items())}", "",
        markdown_table(["model", "runtime", "side-by-side p50 ms", "side-by-side speed-up vs torch", "alone p50 ms",
                         "alone p50 95% CI", "alone p95 ms", "cv", "size MB", "peak RSS MB", "accuracy %", "drop pt",
                         "alone speed-up vs torch"], rows), "",
        "## Targets", "", "```json", json.dumps(payload["summary"], indent=2), "```", "",
        "## The default's runtime choice", "", "```json", json.dumps(payload["runtime_choice"], indent=2), "```", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="runs/bench-quantization-cpu")
    parser.add_argument("--only", nargs="*", help="recipe names to include (default: all)")
    parser.add_argument("--name", default="quantization-cpu")
    parser.add_argument("--quick", action="store_true", help="a short measurement: validates the script, "
                                                             "numbers not for committing")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    set_reporter(RichReporter())
    work = Path(args.work)
    baseline, candidates, profile, checkpoint, choice = build_candidates(work, args.only, args.quick)
    eval_npz = work / "eval.npz"
    eval_spec = plan_run(RunRequest(checkpoint=checkpoint.path, profile=profile, out_dir=work)).eval_data
    eval_facts = build_eval_npz(eval_spec, checkpoint.path, profile.shapes[0].sequence_length, eval_npz)
    inputs = candidates[0].model.manifest.inputs
    base_result, results = measure(candidates, baseline, profile, inputs, eval_npz)
    timed = side_by_side(baseline, candidates, profile)
    payload = {
        "schema_version": 1, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "has_vnni": has_vnni(), "versions": library_versions(),
        "threads": profile.target.threads, "shape": profile.shapes[0].model_dump(), "eval_data": eval_facts,
        "baseline": base_result.model_dump(), "candidates": [r.model_dump() for r in results],
        "side_by_side": timed, "runtime_choice": choice,
        "summary": summarise(base_result, results, candidates[0].model.size_mb(), timed),
    }
    write_results(args.results_dir, args.name, json.dumps(payload, indent=2) + "\n", render(payload))
    print(render(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
