"""Regenerate bench/results/vision-int8-fallback.{json,md}: static INT8 of an ImageNet-style CNN on the cpu-vision
profile, with the quality fallback searching the INT8 settings (then float nodes) for 99% top-1 agreement with fp32.

Model: a torchvision-style ResNet-18 built from code (benchmarks/resnet.py): seeded weights, BatchNorm statistics
and the fc's centring and scale estimated on photos, because no PyPI wheel ships ImageNet ResNet weights and torchvision
is never installed. Images: random crops (scale 8-100% of the area, flips) of the photos that ship in the
matplotlib (grace_hopper.jpg) and scikit-learn 1.9.1 (china.jpg, flower.jpg; read from the wheel, nothing
installed) packages, 224x224, as an unlabelled .npz: the seeded train split fits the BatchNorm statistics and
calibrates static INT8, the validation split is where the fallback judges candidates, the test split the verdict.
Not ImageNet, and not trained: the question is how faithfully INT8 follows this fp32 network (agreement), which
a random-but-realistically-scaled network answers honestly; accuracy against ImageNet labels it cannot.
Usage: python -m benchmarks.vision_int8_fallback [--work DIR] [--crops 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks import add_results_dir_argument
from benchmarks.pypi_assets import wheel_member
from slimline import api
from slimline.bench.report import markdown_table, write_results
from slimline.core.data import split_indices
from slimline.core.machine import cpu_flags, has_vnni
from slimline.core.progress import RichReporter, set_reporter
from slimline.profiles.schema import load_profile

SIZE = 224
IMAGENET = {"crop_size": SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
INPUT_SPEC = {"inputs": [{"name": "pixels", "dtype": "float32", "shape": ["batch", 3, SIZE, SIZE]}],
              "outputs": ["logits"], "task": "image-classification", "image_preprocess": IMAGENET}


def photos() -> list[np.ndarray]:
    import matplotlib
    from PIL import Image

    paths = [Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg",
             wheel_member("scikit-learn==1.9.1", "sklearn/datasets/images/china.jpg"),
             wheel_member("scikit-learn==1.9.1", "sklearn/datasets/images/flower.jpg")]
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def random_crops(images: list[np.ndarray], count: int, seed: int = 0) -> np.ndarray:
    """torchvision-style RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3) + horizontal flip, to SIZE x SIZE uint8."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((count, SIZE, SIZE, 3), dtype=np.uint8)
    for index in range(count):
        image = images[index % len(images)]
        height, width = image.shape[:2]
        for _ in range(20):
            area = height * width * rng.uniform(0.08, 1.0)
            ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w, h = round(float(np.sqrt(area * ratio))), round(float(np.sqrt(area / ratio)))
            if 0 < w <= width and 0 < h <= height:
                break
        else:
            w, h = min(width, height), min(width, height)
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = Image.fromarray(image[top:top + h, left:left + w]).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(crop)
        out[index] = pixels[:, ::-1] if rng.random() < 0.5 else pixels
    return out


def normalised(images: np.ndarray) -> np.ndarray:
    mean, std = np.asarray(IMAGENET["mean"]), np.asarray(IMAGENET["std"])
    return ((images / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def write_inputs(work: Path, crops: int) -> tuple[Path, Path, dict[str, object]]:
    """The photo crops (.npz), the fitted ResNet-18's state dict and facts about both."""
    import torch

    from benchmarks.resnet import resnet18_fitted

    images = random_crops(photos(), crops)
    npz = work / "crops.npz"
    np.savez(npz, images=images)
    train = split_indices(crops, "train", 0)  # the split slimline calibrates on: BatchNorm statistics come from it
    model = resnet18_fitted(torch.from_numpy(normalised(images[train[:256]])))
    weights = work / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    with torch.no_grad():
        test = split_indices(crops, "test", 0)
        predicted = model(torch.from_numpy(normalised(images[test]))).argmax(-1)
    facts = {"crops": crops, "bn_statistics_from": "256 crops of the train split",
             "distinct_test_predictions": len(set(predicted.tolist())), "test_examples": len(test)}
    return npz, weights, facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="runs/bench-vision-int8-fallback")
    parser.add_argument("--crops", type=int, default=1000)
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    set_reporter(RichReporter())
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "inputs.yaml").write_text(json.dumps(INPUT_SPEC))
    npz, weights, facts = write_inputs(work, args.crops)
    shipped = load_profile("cpu-vision")  # its budgets and recipe as shipped; a shorter timing for a shared machine
    profile = shipped.model_copy(update={"measurement": shipped.measurement.model_copy(
        update={"min_iters": 30, "min_time_s": 2.0, "max_time_s": 15.0})})
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    report = api.run(model_factory="benchmarks.resnet:resnet18", weights=weights, inputs=work / "inputs.yaml",
                     profile=profile, eval_data=f"{npz}:test", out=work / "run", force=True, history=False)
    fallback = report.accuracy_fallback or {}
    candidates = fallback.get("candidates", [])
    rows = [[f"{i}{' (chosen)' if i == fallback.get('chosen') else ''}", c["variant"], str(len(c["excluded"])),
             f"{c['metrics'].get('agreement_pct', float('nan')):.1f}", "yes" if not c["failing"] else "no",
             f"{c['latency_p50_ms']:.2f}", f"{c['size_mb']:.1f}"] for i, c in enumerate(candidates)]
    quality = report.measurements.quality
    side = report.side_by_side or {}
    verdicts = [f"| {b.name} | {b.kind} {b.limit:g} | {b.measured if b.measured is None else round(b.measured, 3)} | "
                f"{b.status} |" for b in report.budgets]
    lines = [
        "# Static INT8 on a ResNet-18 with the quality fallback (cpu-vision)",
        "",
        f"Machine: {report.machine.get('cpu_model')}, {profile.target.threads} threads, VNNI: {has_vnni()} "
        f"({', '.join(sorted(cpu_flags()))}). Shared machine: latency figures are noisy; ratios are side by side.",
        f"Model: seeded torchvision-style ResNet-18 (benchmarks/resnet.py), BatchNorm statistics from "
        f"{facts['bn_statistics_from']}; {facts['distinct_test_predictions']} distinct top-1 classes over the "
        f"{facts['test_examples']} test crops. Data: {facts['crops']} photo crops (224x224), unlabelled.",
        "",
        f"**Verdict {report.verdict.upper()}**; on the test split the chosen INT8 model agrees with fp32 on "
        f"{quality.get('agreement_pct', float('nan')):.1f}% of top-1 predictions (top-5: "
        f"{quality.get('top5_agreement_pct', float('nan')):.1f}%, logits' relative error "
        f"{quality.get('rel_error', float('nan')):.3f}); speed-up vs torch fp32 "
        f"{report.speedup_vs_baseline or float('nan'):.2f}x"
        + (f" (side by side: {side.get('speedup_vs_baseline', {})})" if side else "") + ".",
        "",
        "## Fallback candidates (validation split; every INT8 setting before float nodes)",
        "",
        f"{fallback.get('selection', fallback.get('skipped', ''))}; stopped: {fallback.get('stopped_by', '-')}; "
        f"{fallback.get('resolution', '')}",
        "",
        markdown_table(["candidate", "setting", "nodes in float", "agreement %", "meets budgets", "p50 ms (quick)",
                        "size MB"], rows),
        "",
        "## Budgets (cpu-vision)",
        "",
        "| budget | limit | measured | status |", "|---|---|---|---|", *verdicts,
        "",
        "Reproduce: `python -m benchmarks.vision_int8_fallback`.",
    ]
    payload = {"facts": facts, "verdict": report.verdict, "quality": quality, "fallback": fallback,
               "budgets": [b.model_dump() for b in report.budgets], "speedup_vs_baseline": report.speedup_vs_baseline,
               "side_by_side": side, "calibration": report.calibration, "machine": report.machine}
    json_path, md_path = write_results(args.results_dir, "vision-int8-fallback", json.dumps(payload, indent=2,
                                                                                             default=str) + "\n",
                                       "\n".join(lines) + "\n")
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
