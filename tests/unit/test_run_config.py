"""run.yaml: what a run was asked to do, written so that `slimline run --config run.yaml` plans the same run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from slimline import api
from slimline.compression.recipe import recipe_as_data
from slimline.core.errors import RecipeError
from slimline.pipeline.plan import RunRequest, plan_run
from slimline.pipeline.run_config import load_run_config, write_run_config

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"


def plan_facts(request: RunRequest) -> dict:
    plan = plan_run(request)
    return {"source": plan.source.manifest_sha256, "steps": recipe_as_data(plan.steps),
            "needs_export": plan.needs_export, "eval_data": plan.eval_data,
            "profile": request.profile.model_dump(), "seed": request.seed, "export": request.export,
            "bench_export": request.bench_export, "task": request.task}


@pytest.mark.parametrize("recipe", [None, "cpu-int8-dynamic"])
def test_a_run_config_plans_the_same_run_again(tiny_bert: Path, labelled_csv: Path, tmp_path: Path,
                                               recipe: str | None) -> None:
    request = RunRequest(checkpoint=tiny_bert, profile=api.as_profile(FAST_PROFILE), out_dir=tmp_path / "run",
                         recipe=None if recipe is None else api.as_recipe(recipe),
                         eval_data=api.as_eval_data(str(labelled_csv)), bench_export=True, seed=3)
    original = plan_facts(request)
    (tmp_path / "run").mkdir()
    path = tmp_path / "run.yaml"  # taken out of the run directory, which holds nothing else of a run here
    write_run_config(request, original["steps"], "slimline run --checkpoint x").rename(path)
    (tmp_path / "run").rmdir()
    again = load_run_config(path)
    assert again.out_dir == (tmp_path / "run").resolve()
    assert plan_facts(again) == original
    elsewhere = load_run_config(path, out=tmp_path / "elsewhere")
    assert elsewhere.out_dir == tmp_path / "elsewhere" and plan_facts(elsewhere) == original


def test_a_damaged_run_config_is_bad_input_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("schema_version: 1\ncheckpoint: /x\nout: /y\nprofile: {name: p}\nrecipe: []\nbogus: 1\n")
    with pytest.raises(RecipeError, match="bogus"):
        load_run_config(path)
