"""The package's shape: one namespace, layers that point down, lean imports, the callable facade."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnxruntime", "transformers", "tensorrt", "bitsandbytes", "optimum", "onnx", "fastapi")


def _modules_after(code: str, cwd: Path = REPO) -> list[str]:
    """Run `code` in a fresh interpreter and return which heavy modules it imported."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True,
                               check=False, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_import_slimline_pulls_in_no_heavy_library() -> None:
    assert _modules_after("import slimline, slimline.api; slimline.run; slimline.verify") == []


@pytest.mark.parametrize("argv", [["passes", "list"], ["profiles", "list"], ["recipes", "list"],
                                  ["profiles", "validate", str(REPO / "profiles" / "cpu-fast.yaml")],
                                  ["recipes", "validate", str(REPO / "profiles" / "recipes" / "cpu-small.yaml")]])
def test_catalogue_commands_import_no_heavy_library(argv: list[str]) -> None:
    code = ("import contextlib, io\nfrom slimline.cli.main import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main({argv!r}) == 0")
    assert _modules_after(code) == []


def test_validating_every_shipped_recipe_imports_no_heavy_library() -> None:
    code = ("from slimline.compression.recipe import load_recipe\nfrom slimline.profiles.schema import list_recipes\n"
            "assert len([load_recipe(name) for name in list_recipes()]) >= 9")
    assert _modules_after(code) == []


def test_the_catalogue_names_exactly_the_registered_passes() -> None:
    from slimline.compression.base import registered_passes
    from slimline.compression.catalogue import catalogue, registry

    classes = registry()
    assert set(catalogue()) <= set(classes)
    assert all(classes[name].__module__ == entry.module for name, entry in catalogue().items())
    assert set(catalogue()) == {n for n, cls in registered_passes().items() if cls.__module__.startswith("slimline.")}
    assert catalogue()["quantize.bnb-nf4"].extra == "bnb"


def test_the_api_functions_stay_functions_after_the_layer_packages_are_imported() -> None:
    import inspect

    import slimline
    import slimline.benchmarking.report
    import slimline.compression.base
    import slimline.exporters.parity
    from slimline import api

    for name in ("compress", "export", "bench"):
        exposed = getattr(slimline, name)
        assert callable(exposed)
        assert exposed is getattr(api, name) and inspect.isfunction(exposed) and exposed.__name__ == name
    assert slimline.run is api.run and slimline.package is api.package and slimline.verify is api.verify
    with pytest.raises(AttributeError):
        slimline.no_such_function  # noqa: B018


def test_the_layer_contract_holds() -> None:
    """import-linter's layers contract (pyproject.toml): a wrong-way import fails here and in CI."""
    completed = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO,
                               capture_output=True, text=True, check=False, timeout=300)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    assert "1 kept, 0 broken" in completed.stdout
