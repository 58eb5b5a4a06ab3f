"""Regenerate bench/results/vision-cpu.{json,md}: a CNN with real weights on real images, side by side in one run.

Model: SVHNNet (6 conv layers, 0.8M parameters) with the trained weights that ship in the `ccexam` 1.0.0 wheel
(MIT), ported in benchmarks/ported_models.py (ccexam needs torchvision, which slimline never installs). Images:
scikit-learn 1.9.1's handwritten digits (BSD-3, 1,797 8x8 greyscale scans, `sklearn/datasets/data/digits.csv.gz`),
written as an ImageFolder tree and preprocessed the model's way (32x32 RGB, SVHN mean/std). 200 images calibrate;
the other 1,597 are the eval set. SVHN (street-number photos) is not this domain, so top-1 is low; the target is
agreement with fp32 and speed. The `run` is the plain-module path (--model-factory + weights + input spec), then
round-robin latency rounds: the user's module on torch eager, ONNX Runtime fp32, static INT8 (QDQ per-channel),
and dynamic INT8 with Conv (what the pre-flight warns against).
Usage: python -m benchmarks.vision_cpu [--work DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys

import numpy as np

from benchmarks import add_results_dir_argument
from benchmarks.pypi_assets import wheel_member
from benchmarks.side_by_side import candidates_of, machine_note, ratio, render, results_payload, rounds, work_path
from slimline import api
from slimline.benchmarking.benchmark import Candidate, measure
from slimline.benchmarking.evaluators.base import EvalContext, EvalSource, get_evaluator
from slimline.benchmarking.report import write_results
from slimline.core.progress import RichReporter, set_reporter
from slimline.profiles.schema import load_profile

SVHN_MEAN, SVHN_STD = [0.4377, 0.4438, 0.4728], [0.1980, 0.2010, 0.1970]
INPUT_SPEC = {"inputs": [{"name": "pixels", "dtype": "float32", "shape": ["batch", 3, 32, 32]}],
              "outputs": ["logits"], "task": "image-classification", "label_names": [str(d) for d in range(10)],
              "image_preprocess": {"crop_size": 32, "channels": 3, "mean": SVHN_MEAN, "std": SVHN_STD}}
CALIBRATION_IMAGES = 200


def digits_folders(work) -> tuple[str, str]:
    """scikit-learn's digits as two ImageFolder trees: calibration (200) and evaluation (the rest), seeded."""
    from PIL import Image

    with gzip.open(wheel_member("scikit-learn==1.9.1", "sklearn/datasets/data/digits.csv.gz")) as handle:
        rows = np.loadtxt(handle, delimiter=",")
    pixels = (rows[:, :64].reshape(-1, 8, 8) * 255 / 16).round().astype(np.uint8)
    labels = rows[:, 64].astype(int)
    order = np.random.default_rng(0).permutation(len(labels))
    for name, chosen in (("calibration", order[:CALIBRATION_IMAGES]), ("eval", order[CALIBRATION_IMAGES:])):
        for row in chosen:
            folder = work / "digits" / name / str(labels[row])
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[row]).save(folder / f"{row:04d}.png")
    return str(work / "digits" / "calibration"), str(work / "digits" / "eval")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="runs/bench-vision-cpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="vision-cpu")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    set_reporter(RichReporter())
    work = work_path(args.work)
    calibration, evaluation = digits_folders(work)
    profile = load_profile("cpu-vision")
    recipe = [{"pass": "quantize.ort-int8-static",
               "with": {"format": "qdq", "per_channel": True, "op_types": ["Conv", "MatMul", "Gemm"],
                        "calibration": {"source": calibration, "split": "all", "num_samples": CALIBRATION_IMAGES}}}]
    report = api.run(out=work / "run", profile=profile, recipe=recipe, eval_data=f"{evaluation}:all", bench_export=True,
                     force=True, model_factory="benchmarks.ported_models:svhn_net",
                     weights=wheel_member("ccexam==1.0.0", "ccexam/weights/svhn.pth"), inputs=INPUT_SPEC)
    baseline, candidates = candidates_of(report)
    fp32 = candidates[0]
    dynamic = api.compress(fp32.model.path, out=work / "dynamic-int8-conv", profile=profile, force=True,
                           recipe=[{"pass": "quantize.ort-int8-dynamic",
                                    "with": {"op_types": ["Conv", "MatMul", "Gemm"]}}])
    candidates.append(Candidate("dynamic int8 incl. Conv (pre-flight warns)", dynamic, "onnxruntime"))
    eval_npz = work / "eval.npz"
    get_evaluator("image-top1").prepare(EvalSource(source=evaluation, split="all"), EvalContext(
        baseline.model, baseline.model.manifest.inputs, profile.shapes[0]), eval_npz)
    _, quality = measure(candidates[2:], baseline, profile, baseline.model.manifest.inputs, eval_npz, "image-top1")
    measured = rounds(baseline, candidates, profile, args.rounds)
    static = candidates[1].label
    speed = {"static_int8_vs_ort_fp32": ratio(measured, fp32.label, static),
             "static_int8_vs_torch_eager": ratio(measured, baseline.label, static),
             "ort_fp32_vs_torch_eager": ratio(measured, baseline.label, fp32.label),
             "dynamic_int8_conv_slowdown_vs_ort_fp32": ratio(measured, candidates[-1].label, fp32.label)}
    flips = flip_margins(fp32.model.model_path, candidates[1].model.model_path, eval_npz)
    final = report.measurements
    summary = [
        f"static INT8 (QDQ per-channel) vs ONNX Runtime fp32: {speed['static_int8_vs_ort_fp32']['median']:.2f}x "
        f"(target >= 1.5x); vs the user's module on torch eager: {speed['static_int8_vs_torch_eager']['median']:.2f}x",
        f"top-1 agreement with fp32 on {report.eval_data['examples']} real images: "
        f"{final.quality.get('agreement_pct', float('nan')):.2f}% (target >= 99%); top-1 "
        f"{report.baseline.quality['top1_pct']:.2f}% (torch fp32) -> {final.quality['top1_pct']:.2f}% (INT8)",
        f"the {flips['flipped']} flipped images are near-ties: median fp32 top-1 margin "
        f"{flips['median_margin_flipped']:.3f} logits vs {flips['median_margin_all']:.3f} over all images; agreement "
        f"on the {flips['confident']} images with a margin >= 1 logit: {flips['agreement_confident_pct']:.2f}%",
        f"dynamic INT8 with Conv (ConvInteger): {speed['dynamic_int8_conv_slowdown_vs_ort_fp32']['median']:.1f}x "
        f"slower than ORT fp32, agreement {quality[0].quality.get('agreement_pct', float('nan')):.2f}% - what the "
        "pre-flight warns about",
        f"verdict of the run on profile cpu-vision: {report.verdict}", machine_note()]
    payload = results_payload(report, measured, {"speed": speed, "dynamic_int8_conv": quality[0].model_dump(),
                                                 "flips": flips,
                                                 "summary": summary})
    markdown = render("Vision on CPU: a real CNN (ccexam SVHNNet) on real images (scikit-learn digits)",
                      [__doc__.split("Usage:")[0].strip()], report, measured, summary)
    write_results(args.results_dir, args.name, json.dumps(payload, indent=2) + "\n", markdown)
    print("\n".join(summary))
    return 0


def flip_margins(fp32_path, int8_path, eval_npz) -> dict[str, float]:
    """Which images change class under INT8, and how close fp32 itself was to a tie on them."""
    import onnxruntime as ort

    with np.load(eval_npz) as data:
        pixels = data["pixels"]
    outputs = []
    for path in (fp32_path, int8_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs.append(np.concatenate([session.run(None, {"pixels": pixels[i : i + 64]})[0]
                                       for i in range(0, len(pixels), 64)]))
    reference, quantized = outputs
    top2 = np.sort(reference, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    flipped = reference.argmax(-1) != quantized.argmax(-1)
    confident = margin >= 1.0
    return {"flipped": int(flipped.sum()), "median_margin_flipped": float(np.median(margin[flipped])) if flipped.any()
            else 0.0, "median_margin_all": float(np.median(margin)), "confident": int(confident.sum()),
            "agreement_confident_pct": 100.0 * float(np.mean(~flipped[confident]))}


if __name__ == "__main__":
    sys.exit(main())
