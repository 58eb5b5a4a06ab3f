"""The evaluator framework: registry, task defaults, image top-1, agreement with fp32, and the budgets they feed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slimline.benchmarking.budgets import evaluate_budgets
from slimline.benchmarking.evaluators.base import (
    EvalScore,
    EvalSource,
    evaluator_name_for,
    get_evaluator,
    parse_eval_arg,
)
from slimline.benchmarking.latency import summarize
from slimline.benchmarking.results_model import CandidateResult
from slimline.core.data import DatasetSpec
from slimline.core.errors import DataError
from slimline.profiles.schema import Budget, Profile


def test_each_task_gets_its_default_evaluator_and_unknown_tasks_get_agreement() -> None:
    assert evaluator_name_for("text-classification") == "text-classification"
    assert evaluator_name_for("image-classification") == "image-top1"
    assert evaluator_name_for("text-generation") == "perplexity"
    assert evaluator_name_for("tensor") == "agreement"
    assert evaluator_name_for("image-classification", EvalSource(source="pkg.inputs:make")) == "agreement"
    assert evaluator_name_for("image-classification", DatasetSpec(source="x.csv")) == "text-classification"


def test_an_unknown_evaluator_name_is_refused_with_the_known_names() -> None:
    with pytest.raises(DataError, match="image-top1"):
        get_evaluator("no-such-evaluator")


def test_eval_arguments_parse_to_text_datasets_or_eval_sources(tmp_path: Path) -> None:
    assert isinstance(parse_eval_arg("rotten-tomatoes:validation"), DatasetSpec)
    folder = parse_eval_arg(f"{tmp_path}:test")
    assert isinstance(folder, EvalSource) and folder.split == "test" and folder.source == str(tmp_path)
    assert parse_eval_arg("mypkg.data:inputs").kind() == "callable"
    assert parse_eval_arg("frames.npz").kind() == "npz"


def _forward_with(logits_by_row: np.ndarray):
    def forward(batch: dict[str, np.ndarray]) -> np.ndarray:
        rows = batch["x"][:, 0].astype(int)
        return logits_by_row[rows]
    return forward


def test_image_top1_scores_top1_and_top5_and_compares_drop_and_agreement(tmp_path: Path) -> None:
    npz = tmp_path / "eval.npz"
    labels = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    np.savez(npz, x=np.arange(8, dtype=np.float32)[:, None], labels=labels)
    evaluator = get_evaluator("image-top1")
    base_logits = np.eye(6, dtype=np.float32)[labels]  # all correct
    cand_logits = base_logits.copy()
    cand_logits[0] = np.eye(6)[3]  # one wrong
    base = evaluator.score(_forward_with(base_logits), npz, 3, None)
    cand = evaluator.score(_forward_with(cand_logits), npz, 3, None)
    assert base.metrics["top1_pct"] == 100.0 and cand.metrics["top1_pct"] == pytest.approx(87.5)
    compared = evaluator.compare(cand, base, npz)
    assert compared["top1_drop_pt"] == pytest.approx(12.5)
    assert compared["agreement_pct"] == pytest.approx(87.5)
    assert compared["top1_drop_se_pt"] > 0


def test_agreement_reports_max_error_and_top_k_agreement_from_raw_outputs(tmp_path: Path) -> None:
    npz = tmp_path / "inputs.npz"
    np.savez(npz, x=np.arange(4, dtype=np.float32)[:, None])
    evaluator = get_evaluator("agreement")
    reference = np.array([[3, 2, 1, 0], [0, 3, 2, 1], [1, 0, 3, 2], [2, 1, 0, 3]], dtype=np.float32)
    perturbed = reference.copy()
    perturbed[0] = [2.5, 2.9, 1, 0]  # top-1 flips, but the reference class stays in the top 2
    base = evaluator.score(_forward_with(reference), npz, 2, tmp_path / "base.npy")
    cand = evaluator.score(_forward_with(perturbed), npz, 2, tmp_path / "cand.npy")
    compared = evaluator.compare(cand, base, npz)
    assert compared["agreement_pct"] == pytest.approx(75.0)
    assert compared["top4_agreement_pct"] == pytest.approx(100.0)
    assert compared["max_abs_error"] == pytest.approx(0.9)


def _result(quality: dict[str, float], agreement: float | None = None) -> CandidateResult:
    return CandidateResult(label="c", runtime="onnxruntime", format="onnx", model_dir="m",
                           latency={"b1": summarize([1.0, 1.1, 0.9, 1.0, 1.05], 1)}, size_mb=1.0, peak_rss_mb=1.0,
                           load_s=0.1, quality=quality, agreement_with_baseline_pct=agreement)


def test_vision_budgets_judge_top1_drop_and_agreement_from_the_evaluator_metrics() -> None:
    budgets = {"top1_drop_pt": Budget(max=1.0), "agreement_pct": Budget(min=99.0), "max_abs_error": Budget(max=0.1)}
    good = _result({"top1_drop_pt": 0.5, "top1_drop_se_pt": 0.3, "max_abs_error": 0.01}, agreement=99.5)
    results, verdict = evaluate_budgets(budgets, good, None)
    assert verdict == "pass" and "paired SE" in (results[0].spread or "")
    bad = _result({"top1_drop_pt": 2.0, "max_abs_error": 0.01}, agreement=97.0)
    results, verdict = evaluate_budgets(budgets, bad, None)
    assert verdict == "fail" and [r.status for r in results] == ["fail", "fail", "pass"]
    _, verdict = evaluate_budgets(budgets, _result({}), None)
    assert verdict == "incomplete"


def test_profiles_accept_the_vision_budgets_with_their_limit_kinds() -> None:
    Profile(name="p", budgets={"top1_drop_pt": {"max": 1}, "agreement_pct": {"min": 99}})
    with pytest.raises(ValueError, match="agreement_pct takes min"):
        Profile(name="p", budgets={"agreement_pct": {"max": 99}})


def test_an_eval_score_round_trips_through_json() -> None:
    score = EvalScore(metrics={"top1_pct": 90.0}, predictions=[1, 2])
    assert EvalScore.model_validate_json(score.model_dump_json()) == score


def test_text_classification_reports_the_logits_error_where_accuracy_cannot_move(tmp_path: Path) -> None:
    """A random-init classifier predicts one class whatever INT8 does to it: accuracy drop 0.00, agreement 100%;
    the logits' relative and absolute error still show how far the candidate strays."""
    from slimline.benchmarking.evaluators.outputs import OUTPUT_KINDS_KEY, OUTPUT_NAMES_KEY

    npz = tmp_path / "eval.npz"
    np.savez(npz, x=np.arange(6, dtype=np.float32)[:, None], attention_mask=np.ones((6, 3), dtype=np.int64),
             labels=np.zeros(6, dtype=np.int64), **{OUTPUT_NAMES_KEY: np.array(["logits"]),
                                                    OUTPUT_KINDS_KEY: np.array(["class-logits"])})
    evaluator = get_evaluator("text-classification")
    reference = np.tile(np.array([[2.0, 0.0]], dtype=np.float32), (6, 1))
    damaged = reference * np.float32(1.6)
    base = evaluator.score(_forward_with(reference), npz, 4, tmp_path / "base.npz")
    cand = evaluator.score(_forward_with(damaged), npz, 4, tmp_path / "cand.npz")
    compared = evaluator.compare(cand, base, npz)
    assert compared["top1_drop_pt"] == 0.0 and compared["agreement_pct"] == 100.0
    assert compared["rel_error"] == pytest.approx(0.6) and compared["max_abs_error"] == pytest.approx(1.2)
    assert compared["rel_error@logits"] == compared["rel_error"]
