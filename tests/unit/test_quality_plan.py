"""The plan's quality decisions: the evaluator and output kinds, budgets refused when the model cannot measure
them, per-output budgets, and calibration data that never overlaps the examples the verdict is judged on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from plain_modules import DETECTOR_SPEC, EMBEDDER_SPEC, write_frames_npz, write_quality_model, write_tiny_cnn

from slimline.benchmarking.evaluators.base import EvalSource, evaluator_name_for, parse_eval_arg
from slimline.core.data import DatasetSpec, split_indices
from slimline.core.errors import DataError, ProfileError
from slimline.core.output_kinds import fitting_metrics, resolve_outputs
from slimline.core.quality import compare_outputs, vector_metrics
from slimline.formats.torch_module import load_input_spec, module_dir_for
from slimline.pipeline.quality_plan import check_calibration_disjoint, plan_quality
from slimline.profiles.schema import Profile


def _module(workdir: Path, factory: str, spec: str):
    weights = write_quality_model(workdir, factory, spec)
    return module_dir_for(f"quality_models:{factory}", weights, load_input_spec(workdir / f"{factory}.yaml"))


def _profile(budgets: dict, **extra) -> Profile:
    return Profile(name="p", budgets=budgets, **extra)


def test_a_causal_lm_scores_perplexity_on_any_text_data() -> None:
    """The README's `--profile llm-cpu --eval-data rotten-tomatoes:test` was scored as text classification."""
    for data in ("rotten-tomatoes:test", "notes.csv", "notes.jsonl", "notes.txt"):
        assert evaluator_name_for("text-generation", parse_eval_arg(data)) == "perplexity", data
    assert evaluator_name_for("text-classification", parse_eval_arg("rotten-tomatoes:test")) == "text-classification"
    assert evaluator_name_for("tensor", parse_eval_arg("x.npz"), "embedding") == "embedding"


def test_a_perplexity_budget_on_a_classifier_is_refused_naming_what_it_outputs_and_what_fits(workdir: Path) -> None:
    write_tiny_cnn(workdir)
    model = module_dir_for("tiny_cnn:build", workdir / "weights.pth", load_input_spec(workdir / "inputs.yaml"))
    with pytest.raises(ProfileError) as refused:
        plan_quality(model, _profile({"perplexity_increase_pct": {"max": 10}, "decode_tokens_per_s": {"min": 5},
                                      "agreement_pct": {"min": 99}}), EvalSource(source="images"), None)
    message = str(refused.value)
    assert "perplexity_increase_pct" in message and "decode_tokens_per_s" in message
    assert "logits (class-logits" in message and "agreement_pct" in message.split("fit:")[1]
    assert refused.value.exit_code == 2


def test_argmax_budgets_on_an_embedding_are_refused_and_cosine_fits(workdir: Path) -> None:
    model = _module(workdir, "build_embedder", EMBEDDER_SPEC)
    frames = EvalSource(source=str(write_frames_npz(workdir / "frames.npz")))
    with pytest.raises(ProfileError, match=r"agreement_pct \(no output measures it\).*cosine_mean"):
        plan_quality(model, _profile({"agreement_pct": {"min": 99}}), frames, None)
    plan = plan_quality(model, _profile({"cosine_min_mean": {"min": 0.99}, "cosine_p01": {"min": 0.9}}), frames, None)
    assert plan.evaluator == "agreement" and [(o.name, o.kind) for o in plan.outputs] == [("embedding", "vector")]


def test_per_output_budgets_name_an_existing_output_of_a_fitting_kind(workdir: Path) -> None:
    model = _module(workdir, "build_detector", DETECTOR_SPEC)
    data = EvalSource(source=str(workdir))
    plan = plan_quality(model, _profile({"rel_error@boxes": {"max": 0.1}, "cosine_mean@keypoints": {"min": 0.99},
                                         "agreement_pct@scores": {"min": 95}}), data, None)
    assert [(o.name, o.kind) for o in plan.outputs] == [("boxes", "vector"), ("keypoints", "vector"),
                                                        ("scores", "class-logits")]
    with pytest.raises(ProfileError, match=r"agreement_pct@boxes \(no output measures it\)"):
        plan_quality(model, _profile({"agreement_pct@boxes": {"min": 95}}), data, None)
    with pytest.raises(ProfileError, match="no output 'masks'"):
        plan_quality(model, _profile({"rel_error@masks": {"max": 0.1}}), data, None)
    warned = plan_quality(model, _profile({"rel_error@boxes": {"max": 0.1}}), data, None)
    assert any("output keypoints has no quality budget" in w for w in warned.warnings)


def test_the_profile_eval_section_and_the_evaluator_override_set_the_output_kinds(workdir: Path) -> None:
    model = _module(workdir, "build_detector", DETECTOR_SPEC)
    data = EvalSource(source=str(workdir))
    as_logits = plan_quality(model, _profile({"agreement_pct@boxes": {"min": 95}},
                                             eval={"outputs": {"boxes": "class-logits"}}), data, None)
    assert as_logits.outputs[0].kind == "class-logits"
    every_vector = plan_quality(model, _profile({"cosine_mean@scores": {"min": 0.9}}), data, "embedding")
    assert {o.kind for o in every_vector.outputs} == {"vector"} and every_vector.evaluator == "embedding"
    with pytest.raises(DataError, match="no evaluator named"):
        plan_quality(model, _profile({"rel_error": {"max": 1}}), data, "nope")
    with pytest.raises(ProfileError, match=r"eval\.outputs names"):
        plan_quality(model, _profile({"rel_error": {"max": 1}}, eval={"outputs": {"masks": "vector"}}), data, None)


def test_unlabelled_data_judge_top1_drop_by_its_bound_but_refuse_absolute_accuracy(workdir: Path) -> None:
    write_tiny_cnn(workdir)
    model = module_dir_for("tiny_cnn:build", workdir / "weights.pth", load_input_spec(workdir / "inputs.yaml"))
    arrays = workdir / "pixels.npz"
    np.savez(arrays, pixels=np.zeros((10, 3, 16, 16), dtype=np.float32))
    plan_quality(model, _profile({"top1_drop_pt": {"max": 1}, "agreement_pct": {"min": 99}}), EvalSource(
        source=str(arrays)), None)
    with pytest.raises(ProfileError, match=r"accuracy_pct \(these eval data have no labels\)"):
        plan_quality(model, _profile({"accuracy_pct": {"min": 50}}), EvalSource(source=str(arrays)), None)


def test_calibrating_on_the_split_the_verdict_is_judged_on_is_refused(tiny_bert: Path) -> None:
    from slimline.api import as_recipe

    steps = as_recipe("cpu-int8-static")
    check_calibration_disjoint(steps, DatasetSpec(source="rotten-tomatoes", split="test"))
    for split in ("all", "train"):
        with pytest.raises(DataError, match="the same examples would calibrate and judge"):
            check_calibration_disjoint(steps, DatasetSpec(source="rotten-tomatoes", split=split))  # type: ignore[arg-type]


def test_the_python_api_callable_and_the_cli_reference_split_the_same_data_the_same_way(workdir: Path) -> None:
    """Both become the same cached .npz, judged on its test split; calibration reads the train split of the same
    rows under the same seed, so no example both calibrates and judges."""
    from slimline.compression.calibration import CalibrationSpec
    from slimline.pipeline.module_source import eval_from_callable, materialised

    (workdir / "my_inputs.py").write_text(
        "import numpy as np\n\ndef make():\n    rng = np.random.default_rng(0)\n"
        "    return {'frames': rng.standard_normal((50, 8, 4)).astype(np.float32)}\n")
    import my_inputs  # type: ignore[import-not-found]

    from_api = eval_from_callable(my_inputs.make)
    from_cli = materialised(parse_eval_arg("my_inputs:make"))
    assert from_api == from_cli and from_api.split == "test" and from_api.source.endswith(".npz")
    calibration = CalibrationSpec().resolved(from_api)
    assert calibration.source == from_api.source and calibration.split == "train" and calibration.seed == from_api.seed
    calibrated = set(split_indices(50, "train", calibration.seed).tolist())
    judged = set(split_indices(50, "test", from_api.seed).tolist())
    tuned = set(split_indices(50, "validation", from_api.seed).tolist())
    assert calibrated and judged and not calibrated & judged and not tuned & judged and not calibrated & tuned


@given(st.lists(st.floats(-10, 10), min_size=2, max_size=20).map(lambda v: v + v[::-1]), st.floats(0.01, 3))
def test_cosine_is_one_for_a_scaled_copy_and_relative_error_counts_the_scale(values, scale) -> None:
    reference = np.asarray(values, dtype=np.float64).reshape(2, -1)
    if np.linalg.norm(reference, axis=1).min() < 1e-6:
        return
    metrics = vector_metrics(reference * scale, reference)
    assert metrics["cosine_mean"] == pytest.approx(1.0) and metrics["cosine_p01"] == pytest.approx(1.0)
    assert metrics["rel_error"] == pytest.approx(abs(scale - 1), abs=1e-9)


def test_every_output_is_named_and_the_plain_metric_is_the_worst_over_outputs() -> None:
    outputs = resolve_outputs("detection", ["boxes", "scores"], {"scores": "class-logits"})
    rng = np.random.default_rng(0)
    boxes, scores = rng.standard_normal((20, 4)), rng.standard_normal((20, 3))
    noisy = scores + np.where(np.arange(20)[:, None] < 5, 10 * rng.standard_normal((20, 3)), 0)
    compared = compare_outputs(outputs, [boxes * 0.5, noisy], [boxes, scores])
    assert compared["rel_error"] == max(compared["rel_error@boxes"], compared["rel_error@scores"])
    assert "cosine_mean@boxes" in compared and "cosine_mean@scores" not in compared
    assert compared["agreement_pct"] == compared["agreement_pct@scores"] < 100
    assert fitting_metrics(outputs, has_labels=False)[:2] == ["cosine_mean@boxes", "cosine_p01@boxes"]


def test_the_readme_llm_command_plans_and_prepares_perplexity_on_rotten_tomatoes(tiny_llama: Path,
                                                                                  tmp_path: Path) -> None:
    """`run --profile llm-cpu --eval-data rotten-tomatoes:test` on a causal LM: the perplexity evaluator, token
    windows of the test split's texts (labels unread), and every llm-cpu budget accepted."""
    from slimline.api import as_eval_data, as_profile
    from slimline.benchmarking.evaluators.base import EvalContext, get_evaluator
    from slimline.pipeline.plan import RunRequest, plan_run

    plan = plan_run(RunRequest(checkpoint=tiny_llama, profile=as_profile("llm-cpu"), out_dir=tmp_path / "out",
                               eval_data=as_eval_data("rotten-tomatoes:test")))
    assert plan.evaluator == "perplexity" and [o.kind for o in plan.outputs] == ["token-logits"]
    context = EvalContext(plan.source, plan.source.manifest.inputs, as_profile("llm-cpu").shapes[0], 4,
                          outputs=plan.outputs)
    facts = get_evaluator("perplexity").prepare(plan.eval_data, context, tmp_path / "eval.npz")
    assert facts["dataset"] == {"source": "rotten-tomatoes", "split": "test"} and facts["windows"] == 4


def test_the_default_profile_on_a_causal_lm_is_refused_naming_the_shipped_profile_that_fits(tiny_llama: Path,
                                                                                            tmp_path: Path) -> None:
    """`run` without --profile (cpu: an accuracy budget) on a causal LM: the refusal names llm-cpu, whose budgets it
    can be judged on, before saying what to edit (found by the coverage matrix: the fix only said "edit")."""
    from slimline.api import as_profile
    from slimline.pipeline.plan import RunRequest, plan_run

    with pytest.raises(ProfileError) as refused:
        plan_run(RunRequest(checkpoint=tiny_llama, profile=as_profile("cpu"), out_dir=tmp_path / "out"))
    assert "accuracy_drop_pt (no output measures it)" in str(refused.value)
    assert refused.value.fix.startswith("use --profile llm-cpu (shipped for this target")
    plan_run(RunRequest(checkpoint=tiny_llama, profile=as_profile("llm-cpu"), out_dir=tmp_path / "out"))  # the fix


@given(st.sampled_from(sorted(__import__("slimline.core.output_kinds", fromlist=["x"]).QUALITY_METRICS)),
       st.text(st.characters(blacklist_characters="@", blacklist_categories=("Cs",)), min_size=1, max_size=12),
       st.sampled_from(["", "cosine_min_mean", "latency_p50_ms"]))
def test_budget_names_per_output_validate_and_aliases_become_the_metric(metric, output, other) -> None:
    from slimline.profiles.schema import BUDGET_METRICS

    kind = BUDGET_METRICS[metric][0]
    budgets = {f"{metric}@{output}": {kind: 1.0}}
    if other == "latency_p50_ms":
        with pytest.raises(ValueError, match="only quality metrics are per output"):
            Profile(name="p", budgets={**budgets, f"{other}@{output}": {"max": 1.0}})
        return
    if other:
        budgets[f"{other}@{output}"] = {"min": 0.5}
    if other and metric == "cosine_mean":  # the alias names the same budget twice
        with pytest.raises(ValueError, match="repeats"):
            Profile(name="p", budgets=budgets)
        return
    profile = Profile(name="p", budgets=budgets)
    assert set(profile.budgets) == {f"{metric}@{output}", *([f"cosine_mean@{output}"] if other else [])}


def test_too_few_calibration_examples_in_the_eval_data_are_refused_in_the_plan(workdir: Path) -> None:
    from plain_modules import write_image_folder

    from slimline.api import as_recipe

    steps = as_recipe("cpu-vision-int8-static")
    few = write_image_folder(workdir / "few", per_class=4, size=16)  # 12 images: 10 in the train split
    with pytest.raises(DataError, match="fewer than the 16 needed"):
        check_calibration_disjoint(steps, EvalSource(source=str(few)))
    check_calibration_disjoint(steps, EvalSource(source=str(write_image_folder(workdir / "more", per_class=10,
                                                                               size=16))))
