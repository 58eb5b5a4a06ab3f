"""What installs: the wheel holds one top-level name, ships its profiles and recipes, and runs from any folder."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel, built as pip builds it on install, and the build's whole output (-v: setuptools' warnings).
    PYTHONDONTWRITEBYTECODE is left out: with it distutils says "byte-compiling is disabled", which is the
    environment's choice, not a packaging problem."""
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    completed = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v",
                                "-w", str(out), str(REPO)], capture_output=True, text=True, check=False, timeout=300,
                               env=env)
    assert completed.returncode == 0, completed.stderr
    return next(out.glob("slimline-*.whl")), completed.stdout + completed.stderr


@pytest.fixture(scope="module")
def wheel(built: tuple[Path, str]) -> Path:
    return built[0]


def test_building_the_wheel_prints_no_setuptools_warning(built: tuple[Path, str]) -> None:
    """Packages are discovered (pyproject's [tool.setuptools.packages.find]): none is missing from the
    configuration, so setuptools has nothing to warn about."""
    log = built[1]
    warnings = [line for line in log.splitlines() if re.search(r"warn|absent from", line, re.I)
                and "_BetaConfiguration" not in line and "warnings.warn(msg, _BetaConfiguration)" not in line]
    assert not warnings, "\n".join(warnings[:20])


def test_the_wheel_holds_every_package_data_folder_and_migration(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in REPO.glob("slimline/**/__init__.py"):
        relative = package.relative_to(REPO).as_posix()
        assert relative in names, relative
    assert {"slimline/history/migrations/env.py", "slimline/history/migrations/versions/0001_initial.py",
            "slimline/profiles/spaces/cpu.yaml", "slimline/profiles/recipes/cpu-int8-dynamic.yaml"} <= names
    assert not any("__pycache__" in name for name in names)


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
            "from slimline.compression.recipe import profile_recipe\n"
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
    imported = subprocess.run([sys.executable, "-c", "import slimline.pipeline.single, slimline.benchmarking.worker"],
                              cwd=work, capture_output=True, text=True, check=False, timeout=120)
    assert imported.returncode == 0, imported.stderr


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new virtual environment holding the built wheel (not an editable install). Its dependencies (torch and
    the rest: gigabytes) are not reinstalled: a .pth file puts this environment's site-packages after the
    venv's own, whose .pth files (the editable install's finder among them) are then not run."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dependencies = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "zz-dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return venv


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
def test_the_built_wheel_in_a_fresh_venv_runs_history_a_migration_and_a_tiny_run(wheel: Path, tiny_bert: Path,
                                                                                  fast_profile: Path,
                                                                                  tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path, wheel)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"

    def slimline(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "slimline"), *args], capture_output=True, text=True, cwd=tmp_path,
                              env=env, check=False, timeout=600)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import slimline; print(slimline.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout
    history = tmp_path / "old.sqlite"
    subprocess.run([str(venv / "bin" / "python"), "-c", "import sys; from pathlib import Path; from "
                    "slimline.history.store import open_history; open_history(Path(sys.argv[1]), revision='0001')",
                    str(history)], cwd=tmp_path, env=env, check=True, timeout=120)
    listed = slimline("history", "list", "--history", str(history), "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["items"] == []
    with sqlite3.connect(history) as connection:  # `history list` upgraded the first schema (Alembic, from the wheel)
        from slimline.history.store import HEAD_REVISION

        assert connection.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION
    ran = slimline("run", "--checkpoint", str(tiny_bert), "--profile", str(fast_profile), "--out", "run",
                   "--history", str(history))
    assert ran.returncode in (0, 1), ran.stdout + ran.stderr
    assert json.loads((tmp_path / "run" / "report.json").read_text())["verdict"] in ("pass", "fail", "incomplete")
    [run] = json.loads(slimline("history", "list", "--history", str(history), "--json").stdout)["items"]
    assert run["id"] == 1 and run["out_dir"] == str((tmp_path / "run").resolve())
