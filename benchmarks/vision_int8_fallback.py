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
from slimline.benchmarking.report import markdown_table, write_results
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


def render(payload: dict) -> str:
    """The results page, from the JSON alone (`--render-only` rewrites it without measuring again)."""
    facts, fallback, quality = payload["facts"], payload["fallback"], payload["quality"]
    rows = [[f"{i}{' (chosen)' if i == fallback.get('chosen') else ''}", c["variant"], str(len(c["excluded"])),
             f"{c['metrics'].get('agreement_pct', float('nan')):.1f}", "yes" if not c["failing"] else "no",
             f"{c['latency_p50_ms']:.2f}", f"{c['size_mb']:.1f}"]
            for i, c in enumerate(fallback.get("candidates", []))]
    full_int8 = [c for c in fallback.get("candidates", []) if not c["excluded"] and
                 not c["overrides"].get("exclude_first_last")]
    best_int8 = max(full_int8, key=lambda c: c["metrics"].get("agreement_pct", 0), default=None)
    side = payload["side_by_side"].get("speedup_vs_baseline", {}) if payload["side_by_side"] else {}
    budgets = [[b["name"], f"{b['kind']} {b['limit']:g}", "-" if b["measured"] is None else f"{b['measured']:.3f}",
                b["status"]] for b in payload["budgets"]]
    calibration = payload["calibration"] or {}
    machine = payload["machine"]
    chosen = fallback["candidates"][fallback["chosen"]]
    nodes = len(fallback.get("sensitivity") or {})
    in_float = len(chosen["excluded"]) + (2 if chosen["overrides"].get("exclude_first_last") else 0)
    everything = nodes and in_float >= nodes
    within = [c for c in fallback["candidates"] if c["metrics"].get("agreement_pct", 0) >= 95]
    smallest_95 = min(within, key=lambda c: c["size_mb"], default=None)
    return "\n".join([
        "# Static INT8 on a ResNet-18 with the quality fallback (cpu-vision)",
        "",
        f"Machine: {machine.get('cpu_model')}, {payload['threads']} threads, VNNI: {payload['vnni']}; a shared, "
        "heavily loaded machine: the quick p50 column is noise-prone (the side-by-side ratio is the one to read).",
        f"Model: seeded torchvision-style ResNet-18 (benchmarks/resnet.py; no trained ImageNet weights ship in a "
        f"PyPI wheel), BatchNorm statistics from {facts['bn_statistics_from']}, {facts['distinct_test_predictions']} "
        f"distinct top-1 classes over the {facts['test_examples']} test crops. Data: {facts['crops']} unlabelled "
        f"224x224 crops of the photos in matplotlib and scikit-learn; calibrated on {calibration.get('examples')} "
        f"of the train split (sha256 {str(calibration.get('sha256', ''))[:12]}), candidates judged on the "
        f"{fallback.get('examples')} of the validation split, the verdict on the test split.",
        "",
        f"**Result.** No setting that keeps every node in INT8 reaches the 99% agreement budget: the best, "
        f"{best_int8['variant'] if best_int8 else '-'}, agrees with fp32 on "
        f"{best_int8['metrics'].get('agreement_pct', float('nan')) if best_int8 else float('nan'):.0f}% of the "
        f"validation crops (as configured: {fallback['candidates'][0]['metrics'].get('agreement_pct', 0):.0f}%). "
        "The fallback then leaves the most sensitive nodes in float one at a time; the first candidate that meets "
        f"the budget (agreement - 1 SE >= 99%) is chosen: {fallback.get('selection', '')}, with {in_float} of the "
        f"{nodes} quantizable nodes in float"
        + (" - every one: on this untrained network INT8 anywhere costs more than 1% agreement, and the "
           "fallback's honest answer to a 99% budget is the fp32 graph" if everything else "")
        + (f" (>= 95% as measured needs {len(smallest_95['excluded'])} float nodes and "
           f"{smallest_95['size_mb']:.1f} MB instead of {chosen['size_mb']:.1f})" if smallest_95 else "")
        + ". The same shape was seen on a real ImageNet CNN in issue 19 (58-78% agreement, 86.5% with "
        "percentile calibration by hand). On the test split it "
        f"agrees on {quality.get('agreement_pct', float('nan')):.1f}% (top-5 "
        f"{quality.get('top5_agreement_pct', float('nan')):.1f}%, logits' relative error "
        f"{quality.get('rel_error', float('nan')):.4f}); side by side it runs "
        f"{next(iter(side.values()), float('nan')):.2f}x as fast as torch fp32 eager. The table is the trade-off: "
        "each float node buys agreement with size and speed, so a profile that accepts, say, 95% agreement "
        "gets a far smaller and faster model. Verdict: "
        f"**{payload['verdict'].upper()}** (its latency budget is judged on this loaded machine).",
        "",
        "## Fallback candidates (validation split; every INT8 setting before float nodes)",
        "",
        f"Stopped: {fallback.get('stopped_by', '-')}; {fallback.get('resolution', '')}.",
        "",
        markdown_table(["candidate", "setting", "nodes in float", "agreement %", "meets budgets", "p50 ms (quick)",
                        "size MB"], rows),
        "",
        "## Budgets (cpu-vision)",
        "",
        markdown_table(["budget", "limit", "measured", "status"], budgets),
        "",
        "Reproduce: `python -m benchmarks.vision_int8_fallback`.",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="runs/bench-vision-int8-fallback")
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing .json")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    if args.render_only:
        payload = json.loads((args.results_dir / "vision-int8-fallback.json").read_text())
        (args.results_dir / "vision-int8-fallback.md").write_text(render(payload))
        return 0
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
    payload = {"facts": facts, "verdict": report.verdict, "quality": report.measurements.quality,
               "fallback": report.accuracy_fallback or {}, "budgets": [b.model_dump() for b in report.budgets],
               "speedup_vs_baseline": report.speedup_vs_baseline, "side_by_side": report.side_by_side or {},
               "calibration": report.calibration, "machine": report.machine, "threads": profile.target.threads,
               "vnni": has_vnni(), "cpu_flags": sorted(cpu_flags())}
    json_path, md_path = write_results(args.results_dir, "vision-int8-fallback",
                                       json.dumps(payload, indent=2, default=str) + "\n", render(payload))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
