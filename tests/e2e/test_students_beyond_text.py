"""`slimline run` with prune -> distill -> quantize for a vision transformer on an image folder and for a sentence
encoder on a CSV of texts: the student is pruned, distilled on the user's own data (train split), quantized, and
judged against the fp32 model with the metric that fits it (top-1 / agreement, cosine of the pooled embeddings).

Each run takes about 30 s on an idle 2-core machine (a minute when busy), so both are slow-marked; the passes
they chain are covered in the default suite by tests/unit/test_distill_beyond_text.py and
tests/unit/test_pruning_families.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import WORDS, run_cli
from model_zoo import build
from plain_modules import write_image_folder
from sentence_encoder import make_sentence_encoder

pytestmark = pytest.mark.slow

MEASUREMENT = "measurement: {warmup_iters: 1, min_iters: 5, min_time_s: 0.0, max_time_s: 5.0}\n"
# The shipped cpu-vision-student / cpu-embedding-student recipes, with a training budget of seconds.
VISION_PROFILE = """\
schema_version: 1
name: vision-student
target: {device: cpu, runtime: onnxruntime, threads: 1, precision: int8}
shapes: [{batch_size: 1}]
recipe:
  - pass: prune.structured
    with: {heads_ratio: 0.5, ffn_ratio: 0.5, preflight: {iters: 5, refuse_if_slower: false}}
  - pass: distill.kd
    with: {max_steps: 20, epochs: 100, batch_size: 8, alpha_label: 0.0}
  - pass: quantize.ort-int8-static
    with: {format: qdq, per_channel: true, calibration_method: minmax, op_types: [Conv, MatMul, Gemm],
           calibration: {source: eval-data, split: train, num_samples: 32, min_samples: 16}}
budgets:
  latency_p95_ms: {max: 10000}
  top1_drop_pt: {max: 100}
  agreement_pct: {min: 0}
""" + MEASUREMENT
EMBEDDING_PROFILE = """\
schema_version: 1
name: embedding-student
target: {device: cpu, runtime: onnxruntime, threads: 1, precision: int8}
shapes: [{batch_size: 1, sequence_length: 16}]
recipe:
  - pass: prune.structured
    with: {heads_ratio: 0.5, ffn_ratio: 0.5, preflight: {iters: 5, refuse_if_slower: false}}
  - pass: distill.kd
    with: {max_steps: 20, epochs: 100, batch_size: 8}
  - pass: quantize.ort-int8-dynamic
budgets:
  latency_p95_ms: {max: 10000}
  cosine_mean: {min: 0.3}
  cosine_p01: {min: 0.0}
""" + MEASUREMENT


def _run(workdir: Path, checkpoint: Path, profile: str, eval_data: str) -> dict:
    (workdir / "profile.yaml").write_text(profile)
    result = run_cli("run", "--checkpoint", str(checkpoint), "--profile", "profile.yaml", "--eval-data", eval_data,
                     "--out", "run", cwd=workdir, env={"SLIMLINE_CACHE_DIR": str(workdir / "cache")}, timeout_s=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((workdir / "run" / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["prune.structured", "distill.kd", "export.onnx",
                                                     report["stages"][-1]["name"]]
    distilled = workdir / report["stages"][1]["directory"]  # relative to where the run was started
    facts = json.loads((distilled / "manifest.json").read_text())["metadata"]["distillation"]
    assert facts["steps"] == 20 and facts["data"]["split"] == "train" and (distilled / "distill_loss.json").is_file()
    pruned = json.loads((workdir / report["stages"][0]["directory"] / "manifest.json").read_text())["metadata"]
    assert pruned["pruning"]["preflight_estimate"]["rounds"] >= 5
    return report


def test_a_vision_transformer_is_pruned_distilled_on_its_images_and_quantized(tmp_path: Path) -> None:
    checkpoint = build("vit", tmp_path / "vit")
    write_image_folder(tmp_path / "images", per_class=20, size=32)
    report = _run(tmp_path, checkpoint, VISION_PROFILE, "images:test")
    assert report["stages"][-1]["name"] == "quantize.ort-int8-static" and report["verdict"] == "pass"
    assert {"top1_drop_pt", "agreement_pct"} <= {b["name"] for b in report["budgets"] if b["status"] == "pass"}


def test_a_sentence_encoder_is_pruned_distilled_on_its_texts_and_judged_by_cosine(tmp_path: Path) -> None:
    checkpoint = make_sentence_encoder(tmp_path / "encoder", family="bert")
    rng = random.Random(1)
    (tmp_path / "texts.csv").write_text("text\n" + "\n".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(80)) + "\n")
    report = _run(tmp_path, checkpoint, EMBEDDING_PROFILE, "texts.csv")
    quality = report["measurements"]["quality"]
    assert 0.3 < quality["cosine_mean"] <= 1.0 and quality["cosine_p01"] <= quality["cosine_mean"]
    assert report["verdict"] == "pass" and report["eval_data"]
