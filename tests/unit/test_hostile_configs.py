"""Property tests: malformed recipes, profiles and bundle manifests are refused with exit 2, quickly, with
bounded memory, and nothing is written."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimline.cli.main import main
from slimline.core.errors import EXIT_BAD_INPUT, EXIT_OK

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=20)
step_like = st.fixed_dictionaries({"pass": st.one_of(st.sampled_from(["quantize.ort-int8-dynamic", "prune.layers",
                                                                       "distill.kd", "nope"]), scalars)},
                                  optional={"with": values, "extra": values})
recipes = st.one_of(values, st.lists(st.one_of(step_like, values), max_size=4),
                    st.dictionaries(st.sampled_from(["passes", "description", "steps"]), values, max_size=3))
profile_like = st.fixed_dictionaries(
    {"schema_version": st.one_of(st.just(1), scalars), "name": st.one_of(st.just("p"), scalars)},
    optional={"target": values, "shapes": values, "recipe": st.one_of(recipes, st.text(max_size=20)),
              "measurement": values,
              "budgets": st.dictionaries(st.sampled_from(["latency_p95_ms", "size_mb", "nope"]),
                                         st.dictionaries(st.sampled_from(["max", "min", "max_drop"]), scalars,
                                                         max_size=2), max_size=3)})


def _run(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(argv)


def _quietly_bounded(argv: list[str], workdir: Path) -> int:
    before = sorted(p.name for p in workdir.iterdir())
    tracemalloc.start()
    code = _run(argv)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB for {argv}"
    assert sorted(p.name for p in workdir.iterdir()) == before, "validation wrote something"
    return code


@SETTINGS
@given(data=recipes)
def test_any_recipe_is_valid_or_exit_2(data: object, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    assert _quietly_bounded(["recipes", "validate", str(path)], tmp_path) in (EXIT_OK, EXIT_BAD_INPUT)


@SETTINGS
@given(data=profile_like)
def test_any_profile_is_valid_or_exit_2(data: dict, tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    assert _quietly_bounded(["profiles", "validate", str(path)], tmp_path) in (EXIT_OK, EXIT_BAD_INPUT)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_as_a_profile_file_is_valid_or_exit_2(text: str, tmp_path: Path) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    assert _quietly_bounded(["profiles", "validate", str(path)], tmp_path) in (EXIT_OK, EXIT_BAD_INPUT)


@SETTINGS
@given(manifest=st.one_of(values, st.dictionaries(st.sampled_from(
    ["schema_version", "name", "engine", "format", "files", "inputs", "preprocessing", "triton_config"]),
    values, max_size=8)))
def test_any_bundle_manifest_fails_verification_with_exit_2(manifest: object, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert _quietly_bounded(["verify", str(bundle)], tmp_path) == EXIT_BAD_INPUT
