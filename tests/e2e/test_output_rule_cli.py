"""Issue 18, through the installed console script: `--force` never deletes what slimline did not write, an
output never touches an input, a full disk is exit 2 with nothing left, and refusals come before torch."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run_cli, slimline_script

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"
LOOK_ALIKES = {".bashrc.old-2023": "alias ll='ls -l'\n", ".thesis.tmp-final": "chapter 1\n",
               ".vim.old-backup/session.vim": "set nu\n"}
USER_FILES = {"thesis.tex": "years of work\n", "data/results.csv": "a,b\n1,2\n", **LOOK_ALIKES}


def user_files(directory: Path, files: dict[str, str] | None = None) -> Path:
    for rel, text in (USER_FILES if files is None else files).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file below root (dot-files included), by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def survived(before: dict[str, str], root: Path) -> bool:
    after = tree(root)
    return all(after.get(rel) == digest for rel, digest in before.items())


def said(completed: subprocess.CompletedProcess) -> str:
    return " ".join(completed.stderr.split())


@pytest.fixture(scope="module")
def exported(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rule-exported") / "onnx"
    completed = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    return out


# --- case 1: package --force deleted $HOME, the working directory, or any directory of the user's ------------


@pytest.mark.parametrize("where", ["home", "cwd-absolute", "user-directory"])
def test_package_force_never_deletes_home_the_cwd_or_a_users_directory(where: str, exported: Path,
                                                                       tmp_path: Path) -> None:
    home = user_files(tmp_path / "home", {".bashrc": "export PS1='$ '\n", **LOOK_ALIKES})
    cwd = user_files(tmp_path / "work")
    out = {"home": home, "cwd-absolute": cwd, "user-directory": user_files(tmp_path / "models")}[where]
    before = {root: tree(root) for root in (home, cwd, out)}
    completed = run_cli("package", str(exported), "--out", str(out), "--force", cwd=cwd, env={"HOME": str(home)})
    assert all(survived(digests, root) for root, digests in before.items())
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert tree(out) == before[out]  # not even a file added
    if where == "user-directory":  # a bundle holds nothing else (verify refuses unlisted files): never beside
        assert "a bundle directory holds nothing else" in said(completed)
    else:
        assert "--force never applies there" in said(completed)


# --- case 2: run --force swept the user's look-alike dot-files, also in $HOME ----------------------------------


def test_run_force_into_home_is_refused_and_its_look_alike_dot_files_survive(tiny_bert: Path, tmp_path: Path) -> None:
    home = user_files(tmp_path / "home", {".bashrc": "export PS1='$ '\n", **LOOK_ALIKES})
    before = tree(home)
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out", str(home),
                        "--force", "--no-history", env={"HOME": str(home)})
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "your home directory" in said(completed)
    assert tree(home) == before


@pytest.mark.slow
def test_run_force_beside_look_alike_dot_files_keeps_every_byte_and_resumes(tiny_bert: Path, tmp_path: Path) -> None:
    dots = user_files(tmp_path / "dots", dict(LOOK_ALIKES))
    before = tree(dots)
    for force in (["--force"], []):  # the second run resumes slimline's own run directory: no flag needed
        completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out",
                            str(dots), *force, "--no-history")
        assert completed.returncode in (0, 1), completed.stdout + completed.stderr
        assert survived(before, dots) and (dots / "report.json").is_file()


# --- case 3: export --out CK --force replaced the checkpoint it read -----------------------------------------


def test_an_output_never_equals_holds_or_sits_inside_an_input(tiny_bert: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "inputs" / "ck"
    shutil.copytree(tiny_bert, checkpoint)
    (tmp_path / "inputs" / "link").symlink_to(checkpoint)
    before = tree(tmp_path)
    for out, why in ((checkpoint, "is the command's input"), (tmp_path / "inputs" / "link", "is the command's input"),
                     (checkpoint / "onnx", "lies inside the command's input"),
                     (tmp_path / "inputs", "contains the command's input")):
        completed = run_cli("export", "--checkpoint", str(checkpoint), "--out", str(out), "--force")
        assert completed.returncode == 2, completed.stdout + completed.stderr
        assert why in said(completed)
    assert tree(tmp_path) == before


# --- case 4: package --tar overwrote an archive slimline did not write -----------------------------------------


def test_package_tar_never_overwrites_an_archive_slimline_did_not_write(exported: Path, tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    archive.write_text("my own archive\n")
    completed = run_cli("package", str(exported), "--out", str(tmp_path / "bundle"), "--tar")
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "bundle.tar.gz exists and is not a file slimline wrote" in said(completed)
    assert archive.read_text() == "my own archive\n" and not (tmp_path / "bundle").exists()
    forced = run_cli("package", str(exported), "--out", str(tmp_path / "bundle"), "--tar", "--force")
    assert forced.returncode == 0, forced.stderr
    again = run_cli("package", str(exported), "--out", str(tmp_path / "bundle"), "--tar")  # its own: replaced
    assert again.returncode == 0, again.stderr
    assert run_cli("verify", str(archive)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "bundle.tar.gz"]


# --- case 12: export onto a full filesystem --------------------------------------------------------------------


@pytest.fixture
def full_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs: the export's files do not fit. Mounting needs root (CAP_SYS_ADMIN), as CI has."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root; tests/unit/test_output_rule.py injects ENOSPC instead")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the unit test injects ENOSPC instead")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_export_onto_a_full_filesystem_exits_2_naming_the_disk_and_leaves_nothing(tiny_bert: Path,
                                                                                   full_filesystem: Path) -> None:
    out = full_filesystem / "onnx"
    completed = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(out))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    message = said(completed)
    assert "no space left" in message and f"filesystem mounted at {full_filesystem}" in message
    assert "free of 96.0 KiB" in message
    assert list(full_filesystem.iterdir()) == []  # no work directory, no temporary, no lock


# --- case 14: refusals answer before torch, transformers or onnxruntime is imported ----------------------------


HEAVY = ("torch", "transformers", "onnxruntime", "optimum")
PROBE = ("import json, sys\nfrom slimline.cli.main import main\nresults = []\n"
         "for argv in json.loads(sys.argv[1]):\n"
         "    rc = main(argv)\n"
         f"    results.append([argv[0], rc, sorted(m for m in {HEAVY!r} if m in sys.modules)])\n"
         "print(json.dumps(results))\n")


def test_refusals_and_a_busy_out_answer_before_torch_is_imported(tiny_bert: Path, exported: Path,
                                                               labelled_csv: Path, tmp_path: Path) -> None:
    """In one fresh interpreter (the console script's main): each refused command leaves torch, transformers,
    onnxruntime and optimum unimported. Timing is measured by benchmarks/refusal_cases.py, not here."""
    from slimline.core.outputs import ExclusiveLock, lock_path

    mine = user_files(tmp_path / "mine")
    busy_run, busy_model = tmp_path / "busy-run", tmp_path / "busy-model"
    busy_run.mkdir()
    holders = [ExclusiveLock(lock_path(busy_run, "run")), ExclusiveLock(lock_path(busy_model, "model"))]
    for holder in holders:
        assert holder.acquire()
        holder.write_owner()
    ck, onnx, prof = str(tiny_bert), str(exported), str(FAST_PROFILE)
    search = ["--checkpoint", ck, "--profile", prof, "--eval-data", str(labelled_csv), "--trials", "1"]
    cases = [["run", "--checkpoint", ck, "--profile", prof, "--out", str(mine)],
             ["search", *search, "--out", str(mine)],
             ["export", "--checkpoint", ck, "--out", str(mine)],
             ["compress", "--model", onnx, "--recipe", "int4-weight-only", "--out", str(mine)],
             ["bench", "--model", onnx, "--profile", prof, "--out", str(mine)],
             ["package", onnx, "--out", str(mine)],
             ["demo", "--out", str(mine)],
             ["run", "--checkpoint", ck, "--profile", prof, "--out", str(busy_run)],
             ["search", *search, "--out", str(busy_run)],
             ["bench", "--model", onnx, "--profile", prof, "--out", str(busy_run)],
             ["export", "--checkpoint", ck, "--out", str(busy_model)],
             ["package", onnx, "--out", str(busy_model)]]
    try:
        python = Path(slimline_script()).with_name("python")
        completed = subprocess.run([str(python), "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                                   cwd=tmp_path, timeout=300, check=False)
    finally:
        for holder in holders:
            holder.release()
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert [rc for _, rc, _ in results] == [2] * len(cases), completed.stderr
    assert [heavy for _, _, heavy in results] == [[]] * len(cases), results
    assert said(completed).count("already holds files") == 7
    assert said(completed).count(f"being written by pid {os.getpid()}") == 5
    assert tree(mine) == tree(user_files(tmp_path / "reference"))


# --- case 16: argument crashes ----------------------------------------------------------------------------------


def test_package_dot_is_the_working_directory_refused_with_force_and_filled_when_empty(exported: Path,
                                                                                       tmp_path: Path) -> None:
    cwd = user_files(tmp_path / "work")
    before = tree(cwd)
    forced = run_cli("package", os.path.relpath(exported, cwd), "--out", ".", "--force", cwd=cwd)
    assert forced.returncode == 2, forced.stdout + forced.stderr
    assert "is the working directory; --force never applies there" in said(forced)
    assert tree(cwd) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino
    written = run_cli("package", os.path.relpath(exported, empty), "--out", ".", cwd=empty)
    assert written.returncode == 0, written.stderr
    assert empty.stat().st_ino == inode and run_cli("verify", str(empty)).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "work"]
