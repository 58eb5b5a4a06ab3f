"""Early stopping of students in `slimline search`: the probe recipe, the calibration, the stop rule,
the space setting, the study's record of a stopped trial, and a real probe on a tiny model."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import make_tiny_bert
from hypothesis import given
from hypothesis import strategies as st

from slimline.compression.search_space import DEFAULT_PROBE_STEPS, EarlyStopping
from slimline.compression.search_space_files import load_search_space, parse_search_space
from slimline.core.errors import RecipeError
from slimline.pipeline.search.early_stop import Calibration, probe_recipe, stop_reason

STUDENT = [{"pass": "prune.layers", "with": {"keep_every": 2}},
           {"pass": "distill.kd", "with": {"max_steps": 800, "learning_rate": 0.0003}},
           {"pass": "quantize.ort-int8-dynamic", "with": {"per_channel": False}}]


def probe(drop: float, se: float = 0.5, steps: int = 96) -> dict[str, float]:
    return {"steps": float(steps), "drop_pt": drop, "drop_se_pt": se}


def test_the_probe_is_the_student_prefix_distilled_briefly_and_leaves_the_recipe_alone() -> None:
    recipe = copy.deepcopy(STUDENT)
    probed = probe_recipe(recipe, 96)
    assert probed == [STUDENT[0], {"pass": "distill.kd", "with": {"max_steps": 96, "learning_rate": 0.0003}}]
    assert recipe == STUDENT


@pytest.mark.parametrize("recipe", [
    STUDENT[2:],  # no student
    [STUDENT[0], {"pass": "distill.kd", "with": {"max_steps": 200}}, STUDENT[2]],  # too short to save anything
    [STUDENT[0], {"pass": "distill.kd", "with": {"epochs": 3}}, STUDENT[2]],  # an epoch budget: unknown length
])
def test_a_trial_without_a_long_enough_distillation_is_not_probed(recipe: list[dict[str, Any]]) -> None:
    assert probe_recipe(recipe, 96) is None


def test_calibration_is_the_largest_gain_of_finished_students_with_the_same_probe_length() -> None:
    finished = [(probe(6.0), {"drop_pt": 1.0}), (probe(4.0), {"drop_pt": 2.5}), (probe(30.0, steps=10), {"drop_pt": 0})]
    calibration = Calibration.of(finished, 96)
    assert (calibration.students, calibration.best_gain_pt) == (2, 5.0)
    assert Calibration.of([], 96).best_gain_pt is None


def test_a_student_is_stopped_only_when_its_best_case_cannot_meet_the_budget() -> None:
    calibration = Calibration(96, 2, 5.0)
    assert stop_reason(probe(6.4), calibration, 1.0) is None  # 6.4 - 5 - 0.5 = 0.9 <= 1
    reason = stop_reason(probe(6.6), calibration, 1.0)  # 6.6 - 5 - 0.5 = 1.1 > 1
    assert reason is not None and "cannot meet the 1 pt accuracy budget" in reason and "6.60" in reason


def test_nothing_is_stopped_before_a_student_finished_or_without_an_accuracy_budget() -> None:
    assert stop_reason(probe(90.0), Calibration(96, 0, None), 1.0) is None
    assert stop_reason(probe(90.0), Calibration(96, 1, 0.0), None) is None


def test_a_negative_gain_seen_is_not_used_to_stop_more() -> None:
    """A student that got worse after its probe (noise) must not make the rule stricter than 'no gain'."""
    assert stop_reason(probe(1.2), Calibration(96, 1, -3.0), 1.0) is None  # 1.2 - 0 - 0.5 <= 1


def test_the_shipped_spaces_probe_their_students() -> None:
    for name in ("cpu", "gpu"):
        assert load_search_space(name).early_stopping == EarlyStopping(probe_steps=DEFAULT_PROBE_STEPS)


@pytest.mark.parametrize(("raw", "expected"), [
    (None, EarlyStopping()), (True, EarlyStopping()), (False, EarlyStopping(enabled=False)),
    ({"probe_steps": 40}, EarlyStopping(probe_steps=40)),
])
def test_the_space_setting(raw: Any, expected: EarlyStopping) -> None:
    data = {"steps": [{"pass": "quantize.ort-int8-dynamic"}]}
    if raw is not None:
        data["early_stopping"] = raw
    assert parse_search_space(data, "test").early_stopping == expected


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=100_001), st.text(), st.floats(), st.booleans(),
                 st.lists(st.integers())))
def test_a_bad_probe_length_is_refused_with_the_fix(value: Any) -> None:
    with pytest.raises(RecipeError, match="probe_steps") as caught:
        parse_search_space({"steps": [{"pass": "quantize.ort-int8-dynamic"}],
                            "early_stopping": {"probe_steps": value}}, "test")
    assert caught.value.fix


def test_an_unknown_early_stopping_key_is_refused() -> None:
    with pytest.raises(RecipeError, match="early_stopping"):
        parse_search_space({"steps": [{"pass": "quantize.ort-int8-dynamic"}],
                            "early_stopping": {"patience": 3}}, "test")


def test_a_stopped_trial_is_pruned_infeasible_in_the_study_and_restored(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from slimline.pipeline.search import study as studies

    study, _ = studies.open_study(tmp_path, {"k": 1}, seed=0)
    trial = study.ask()
    trial.suggest_categorical("x", ["a", "b"])
    studies.prune(study, trial, studies.stopped_constraints(probe(6.0), 1.0), {"number": trial.number})
    finished = studies.finished_trials(study)
    assert [t.number for t in finished] == [trial.number]
    assert finished[0].state.name == "PRUNED"
    next_trial = study.ask()  # the sampler copes with a pruned, infeasible trial
    next_trial.suggest_categorical("x", ["a", "b"])


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory: pytest.TempPathFactory, labelled_csv: Path) -> dict[str, Any]:
    """A tiny BERT, its fp32 export and validation logits: what a trial needs from the search."""
    from slimline.core.data import DatasetSpec
    from slimline.pipeline.search.engine import SearchRequest, prepare
    from slimline.pipeline.stages import run_stages
    from slimline.profiles.schema import load_profile

    root = tmp_path_factory.mktemp("early-stop")
    make_tiny_bert(root / "model", initializer_range=0.2)
    (root / "space.yaml").write_text(yaml.safe_dump({"steps": [{"pass": "quantize.ort-int8-dynamic"}]}))
    profile = load_profile(Path(__file__).resolve().parents[1] / "fixtures" / "fast-cpu.yaml")
    data = DatasetSpec(source=str(labelled_csv))
    request = SearchRequest(checkpoint=root / "model", profile=profile, out_dir=root / "out",
                            space=root / "space.yaml", eval_data=data, trials=1)
    prepared = prepare(request)
    from slimline.benchmarking.screening import ValidationScreen
    from slimline.pipeline.plan import RunRequest

    reference = run_stages(RunRequest(checkpoint=root / "model", profile=profile, out_dir=root / "out", recipe=[],
                                      eval_data=prepared.eval_data), prepared.plan).final
    screen = ValidationScreen(prepared.eval_data, reference.path, 16, 1)
    np.save(root / "reference.npy", screen.logits(reference.model_path))
    return {"root": root, "profile": profile, "eval_data": prepared.eval_data, "reference": reference}


def trial_args(tiny: dict[str, Any], number: int, budget_pt: float) -> Any:
    from slimline.benchmarking.interleaved import InterleavedTiming
    from slimline.pipeline.search.trial import ProbePlan, TrialArgs

    recipe = [{"pass": "prune.structured", "with": {"heads_ratio": 0.5, "ffn_ratio": 0.5}},
              {"pass": "distill.kd", "with": {"max_steps": 6, "batch_size": 8}},
              {"pass": "quantize.ort-int8-dynamic", "with": {"fallback": {"enabled": False}}}]
    root = tiny["root"]
    return TrialArgs(number=number, recipe=recipe, checkpoint=str(root / "model"), profile=tiny["profile"],
                     out_dir=str(root / "out"), eval_data=tiny["eval_data"], reference_dir=str(tiny["reference"].path),
                     reference_logits=str(root / "reference.npy"), reference_p50_ms=1.0,
                     timing=InterleavedTiming(warmup_iters=1, min_iters=5, min_time_s=0.0, max_time_s=2.0),
                     probe=ProbePlan(steps=2, calibration_students=1, best_gain_pt=0.0, budget_pt=budget_pt))


def test_a_student_that_cannot_pass_is_stopped_after_its_probe_and_one_that_can_goes_on(
        tiny_search: dict[str, Any]) -> None:
    from slimline.pipeline.search.trial import run_trial

    going_on = run_trial(trial_args(tiny_search, 0, budget_pt=1000.0))
    assert going_on.ok, going_on.error
    assert going_on.probe is not None and going_on.probe["steps"] == 2 and "drop_pt" in going_on.probe
    assert not going_on.stopped_early and going_on.fidelity

    stopped = run_trial(trial_args(tiny_search, 1, budget_pt=-1000.0))  # no student can meet this
    assert stopped.stopped_early and not stopped.ok
    assert stopped.error is not None and "stopped early after" not in stopped.error
    assert "cannot meet the -1000 pt accuracy budget" in stopped.error
    assert stopped.model_dir is None and stopped.latency_p50_ms is None  # the full distillation never ran
    assert stopped.probe is not None and stopped.probe["drop_pt"] == going_on.probe["drop_pt"]  # the probe reused
