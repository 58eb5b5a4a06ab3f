"""A trained student is queued under the space's other schemes, the fastest measured on this machine first."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from slimline.compression.search_space_files import load_search_space
from slimline.pipeline.search import study as studies
from slimline.pipeline.search.engine import Driver
from slimline.pipeline.search.trial import TrialOutcome

VNNI_BF16 = ("avx2", "avx512_vnni", "avx512_bf16")
STUDENT = {"student": True, "student/shrink": "depth", "student/distill.kd:max_steps": 800}


SPACE = load_search_space("cpu")


def finished(study: Any, params: dict[str, Any], p50: float | None) -> TrialOutcome:
    """A trial sampled with these parameters, recorded as finished with this latency (None: it failed)."""
    study.enqueue_trial(SPACE.encode_params(params))
    trial = study.ask()
    SPACE.sample(trial, VNNI_BF16)
    outcome = TrialOutcome(number=trial.number, recipe=[], ok=p50 is not None, latency_p50_ms=p50,
                           fidelity={"drop_pt": 0.0, "drop_se_pt": 0.5} if p50 else {})
    studies.tell(study, trial, (p50, 0.0, 1.0) if p50 else None, {}, outcome.model_dump(mode="json"))
    return outcome


def test_the_student_tries_the_schemes_fastest_here_first_then_the_unmeasured(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    study, _ = studies.open_study(tmp_path, {"k": 1}, seed=0)
    outcomes = [finished(study, {"student": False, "quantization": "fused-dynamic"}, 9.0),
                finished(study, {"student": False, "quantization": "openvino-int8"}, 4.0),
                finished(study, {"student": False, "quantization": "static-qdq"}, None),
                finished(study, {**STUDENT, "quantization": "fused-dynamic"}, 6.0)]
    driver = Driver.__new__(Driver)
    driver.prepared = SimpleNamespace(space=SPACE, flags=VNNI_BF16)
    driver.study, driver.state, driver.reused = study, SimpleNamespace(outcomes=outcomes), set()
    student_trial = study.get_trials()[-1]
    driver.reuse_student(student_trial)
    queued = [t.system_attrs["fixed_params"] | {"student_of": t.user_attrs["student_of"]}
              for t in study.get_trials() if t.state.name == "WAITING"]
    assert [t["quantization"] for t in queued] == [
        "openvino-int8", "static-qdq", "static-qoperator", "fused-int4", "openvino-bf16"]
    assert all(t["student_of"] == student_trial.number for t in queued)
    assert all({k: t[k] for k in STUDENT} == STUDENT for t in queued)
    driver.reuse_student(student_trial)  # a student is queued under each scheme once
    assert len([t for t in study.get_trials() if t.state.name == "WAITING"]) == len(queued)


def test_exploring_samples_at_random_inside_and_gives_the_study_its_sampler_back(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna")
    study, _ = studies.open_study(tmp_path, {"k": 1}, seed=0)
    tpe = study.sampler
    with studies.exploring(study, True, seed=3):
        assert isinstance(study.sampler, optuna.samplers.RandomSampler)
        trial = study.ask()
        SPACE.sample(trial, VNNI_BF16)  # sampled by the random sampler: Optuna samples at suggest time
    assert study.sampler is tpe
    with studies.exploring(study, False, seed=3):
        assert study.sampler is tpe


def test_a_trial_refused_before_building_teaches_the_sampler_its_region_is_infeasible(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    study, _ = studies.open_study(tmp_path, {"k": 1}, seed=0)
    trial = study.ask()
    SPACE.sample(trial, VNNI_BF16)
    studies.prune(study, trial, {"known_before_building": 1.0}, {"number": trial.number})
    (recorded,) = studies.finished_trials(study)
    assert recorded.state.name == "PRUNED" and recorded.constraints == {"known_before_building": 1.0}
