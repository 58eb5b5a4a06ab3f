"""What installs: the wheel holds one top-level name, ships its profiles and recipes, and runs from any folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    completed = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                                "-w", str(out), str(REPO)], capture_output=True, text=True, check=False, timeout=300)
    assert completed.returncode == 0, completed.stderr
    return next(out.glob("slimline-*.whl"))


def test_the_wheel_installs_only_the_slimline_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert top_level == {"slimline", next(n for n in top_level if n.endswith(".dist-info"))}
    assert not any(name.startswith(("slimline/benchmarks", "benchmarks/", "tests/")) for name in names)
    assert "slimline/profiles/recipes/cpu-fast.yaml" in names and "slimline/profiles/cpu.yaml" in names
    assert not any("/results/" in name for name in names)


def test_every_shipped_profile_resolves_its_recipe_from_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import slimline, sys\n"
            "from slimline.compress.recipe import profile_recipe\n"
            "from slimline.profiles.schema import list_profiles, load_profile\n"
            f"assert slimline.__file__.startswith({str(target)!r}), slimline.__file__\n"
            "names = list_profiles()\n"
            "assert len(names) >= 8, names\n"
            "for name in names:\n"
            "    profile_recipe(load_profile(name))\n"
            "print(len(names))\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                               check=False, timeout=300)
    assert completed.returncode == 0, completed.stderr


def test_run_works_from_a_folder_holding_an_export_py_and_a_bench_package(tiny_bert: Path, fast_profile: Path,
                                                                           tmp_path: Path) -> None:
    """A user's own `export.py` or `bench/` must never shadow slimline's layers (the benchmark worker runs
    with `python -m`, which puts the working directory first on sys.path)."""
    work = tmp_path / "project"
    (work / "bench").mkdir(parents=True)
    poison = "raise RuntimeError('the user module was imported instead of slimline')\n"
    (work / "export.py").write_text(poison)
    (work / "compress.py").write_text(poison)
    (work / "bench" / "__init__.py").write_text(poison)
    (work / "bench" / "worker.py").write_text(poison)
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(fast_profile), "--out", "out",
                        cwd=work)
    assert completed.returncode in (0, 1), completed.stdout + completed.stderr
    assert (work / "out" / "report.json").is_file()
    imported = subprocess.run([sys.executable, "-c", "import slimline.pipeline.single, slimline.bench.worker"],
                              cwd=work, capture_output=True, text=True, check=False, timeout=120)
    assert imported.returncode == 0, imported.stderr
