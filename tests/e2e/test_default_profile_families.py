"""Every common architecture reaches a verdict through the default profile's recipe (issue 20).

`run` with the `cpu` profile's own recipe (cpu-int8-dynamic: optional fusion, then dynamic INT8) on tiny
random-init checkpoints of each text-classifier family and ViT. Before, DeBERTa-v2, ALBERT and ModernBERT
exited 2 ("no fusion rules") and MPNet and ViT exited 3 after the export ("0 attention blocks fused"). Now
the fusion step runs where ONNX Runtime fuses the family's attention (checked here: the stage is in the
report) and is skipped with a line on the console and in the report everywhere else.

The default suite runs three representatives, one per path: DeBERTa-v2 (no fusion rules: skipped at plan
time), ALBERT (shared layer, fused) and ViT (ORT has a vit type but fuses no attention of today's export:
skipped at run time). The full sweep is marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from family_runs import FUSED_FAMILIES, default_profile_run
from model_zoo import TEXT_CLASSIFIERS

FAMILIES = (*TEXT_CLASSIFIERS, "vit")
REPRESENTATIVES = ("deberta-v2", "albert", "vit")
FUSION = "optimize.ort-transformers"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


def _check_verdict_and_fusion(family: str, workdir: Path) -> None:
    run = default_profile_run(family, workdir)
    assert run.exit_code in (0, 1), run.output[-3000:]
    assert run.report is not None and run.report["verdict"] in ("pass", "fail", "incomplete")
    ran = [stage["name"] for stage in run.report["stages"]]
    skipped = [s for s in run.report["skipped_steps"] if s["pass"] == FUSION]
    assert "quantize.ort-int8-dynamic" in ran
    if family in FUSED_FAMILIES:  # the mapping is checked by what ORT fused: the stage needs >= 1 attention block
        assert FUSION in ran and not skipped, run.report["skipped_steps"]
    else:
        assert FUSION not in ran and len(skipped) == 1, ran
        line = skipped[0]["line"]
        assert line.startswith(f"fusion: not available for {family}") and "continuing unfused" in line
        assert line in " ".join(run.output.split())  # said on the console as well as in report.json
        assert f"skipped: {line}" in (workdir / "runs" / family / "report.md").read_text()
    assert run.report["recipe"][0] == {"pass": FUSION, "with": run.report["recipe"][0]["with"], "optional": True}


@pytest.mark.parametrize("family", REPRESENTATIVES)
def test_default_profile_recipe_reaches_a_verdict(family: str, workdir: Path) -> None:
    _check_verdict_and_fusion(family, workdir)


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in REPRESENTATIVES])
def test_default_profile_recipe_reaches_a_verdict_for_every_family(family: str, workdir: Path) -> None:
    _check_verdict_and_fusion(family, workdir)
