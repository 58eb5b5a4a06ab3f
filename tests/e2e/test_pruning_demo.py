"""The cpu-fast profile (structured pruning -> distillation -> fused INT8) on the real demo checkpoint (slow).

Runs the real CLI end to end; checks that the student was distilled within the demo's 10-minute
limit, that the pruned + distilled checkpoint reloads from safetensors alone, and that the shipped
artifact keeps its accuracy within the budget (judged against the drop's paired standard error).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_quantization_demo import assert_within_accuracy_budget, quick_profile

pytestmark = pytest.mark.slow
DISTILL_LIMIT_S = 600


@pytest.fixture(scope="module")
def demo_checkpoint() -> Path:
    from slimline.pipeline.demo import ensure_demo_checkpoint

    return ensure_demo_checkpoint().path


def test_cpu_fast_profile_on_the_demo(demo_checkpoint: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "fast"
    profile = quick_profile("cpu-fast", tmp_path)
    result = run_cli("run", "--checkpoint", str(demo_checkpoint), "--profile", str(profile), "--out", str(out),
                     timeout_s=3600)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]][:2] == ["prune.structured", "distill.kd"]
    assert_within_accuracy_budget(report)
    pruned = Path(report["stages"][0]["directory"])
    estimate = json.loads((pruned / "manifest.json").read_text())["metadata"]["pruning"]["preflight_estimate"]
    assert estimate["p50_ms_after"] > 0 and estimate["estimated_speedup"] > 0

    distilled = Path(next(s["directory"] for s in report["stages"] if s["name"] == "distill.kd"))
    manifest = json.loads((distilled / "manifest.json").read_text())
    assert manifest["metadata"]["distillation"]["seconds"] <= DISTILL_LIMIT_S
    assert (distilled / "distill_loss.json").is_file()
    assert {p.suffix for p in distilled.iterdir()}.isdisjoint({".bin", ".pt", ".pkl"})
    student = AutoModelForSequenceClassification.from_pretrained(distilled).eval()
    assert student.config.intermediate_size == 768  # half of 1536
    assert student.bert.encoder.layer[0].attention.self.query.out_features == 192  # 6 of 12 heads of 32
    ids = torch.tensor([[101, 2023, 3185, 2001, 2307, 102]])
    with torch.inference_mode():
        assert student(input_ids=ids).logits.shape == (1, 2)
