"""`slimline run` end to end on a tiny Llama without a pad token: export with the KV cache, the llm-cpu recipe,
prefill and decode measured apart, and a verdict on perplexity, through the installed console script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import REPO, WORDS, run_cli

FAST_LLM_PROFILE = REPO / "tests" / "fixtures" / "fast-llm-cpu.yaml"


def test_run_on_a_padless_llama_reports_prefill_decode_and_perplexity(tiny_llama: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(np.random.default_rng(0).choice(WORDS, size=400)), encoding="utf-8")
    completed = run_cli("run", "--checkpoint", str(tiny_llama), "--profile", str(FAST_LLM_PROFILE),
                        "--out", str(tmp_path / "run"), "--eval-data", str(corpus))
    assert completed.returncode in (0, 1), completed.stderr[-3000:]  # a verdict, not a crash
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    budgets = {b["name"]: b for b in report["budgets"]}
    assert all(b["status"] in ("pass", "fail", "inconclusive") for b in budgets.values()), budgets  # all measured
    decode = next(iter(report["measurements"]["decode"].values()))
    assert decode["new_tokens"] == 6 and decode["decode_tokens_per_s"] > 0 and decode["prefill_p50_ms"] > 0
    assert report["baseline"]["decode"] is not None  # torch eager with its own cache, measured the same way
    assert "perplexity" in report["measurements"]["quality"]
    assert "Prefill and decode (KV cache, timed alone)" in (tmp_path / "run" / "report.md").read_text()
    # prefill and decode were also timed side by side with the torch baseline, and the budgets read those
    for name in ("prefill_p50_ms", "decode_tokens_per_s"):
        assert budgets[name]["measurement"] == "side_by_side", budgets[name]
    side_by_side = report["side_by_side"]
    assert side_by_side["measured"] and side_by_side["decode_rounds"] >= 5
    assert set(side_by_side["decode"]) == {report["baseline"]["label"], report["measurements"]["label"]}
    assert report["measurements"]["side_by_side"]["decode_speedup_vs_baseline"]["ci95"] is not None
