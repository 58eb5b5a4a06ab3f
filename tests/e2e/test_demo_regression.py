"""The regression gate on the real demo: the default recipe is shipped, then the same checkpoint with a recipe
that neither fuses nor quantizes (the plain fp32 export: about twice as slow on purpose) exits 1 on
`regression_vs_shipped`, and `compare` reads both runs back. (Unfused INT8 alone was only ~5% slower than
the shipped artifact on an AVX-512 VNNI CPU: within the spread, so not a regression.)

Slow: two runs of the demo checkpoint (cached by the demo step in CI). Run with `pytest --slow`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

pytestmark = pytest.mark.slow

UNFUSED_FP32: list[dict] = []  # export only: no graph fusion, no INT8


def test_an_unfused_fp32_rerun_of_the_demo_regresses_against_the_shipped_run_and_exits_1(tmp_path: Path) -> None:
    from slimline.pipeline.demo import ensure_demo_checkpoint

    checkpoint = str(ensure_demo_checkpoint().path)
    profile = yaml.safe_load((REPO / "profiles" / "cpu.yaml").read_text())
    profile["name"] = "cpu-gated"
    profile["regression_vs_shipped"] = {"latency_p50_pct": {"max": 5}, "accuracy_drop_pt": {"max": 0.3}}
    (tmp_path / "gated.yaml").write_text(yaml.safe_dump(profile))
    (tmp_path / "unfused.yaml").write_text(yaml.safe_dump(UNFUSED_FP32))
    history = str(tmp_path / "history.sqlite")
    common = ["--checkpoint", checkpoint, "--profile", str(tmp_path / "gated.yaml"), "--history", history]

    shipped = run_cli("run", *common, "--out", str(tmp_path / "shipped"), timeout_s=1800)
    assert shipped.returncode in (0, 1), shipped.stdout + shipped.stderr
    assert run_cli("history", "ship", "1", "--history", history).returncode == 0

    slowed = run_cli("run", *common, "--recipe", str(tmp_path / "unfused.yaml"), "--out", str(tmp_path / "slowed"),
                     timeout_s=1800)
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    report = json.loads((tmp_path / "slowed" / "report.json").read_text())
    rows = {b["name"]: b for b in report["budgets"]}
    assert rows["latency_p50_pct_vs_shipped"]["status"] == "fail", rows["latency_p50_pct_vs_shipped"]
    assert "shipped run #1" in rows["latency_p50_pct_vs_shipped"]["note"]

    compared = run_cli("compare", "1", "2", "--history", history)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "p50" in compared.stdout and "paired" in compared.stdout  # the same test examples: a paired SE
    print(compared.stdout)  # the closing note quotes it (pytest -s)
