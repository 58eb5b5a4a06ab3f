"""Regenerate bench/results/refusal-cases.{json,md}: issue 18's data-loss and refusal cases, as a user meets them.

Each case runs the installed `slimline` console script under `/usr/bin/time -v` and records the exit code,
the wall time, the peak RSS and whether every byte of the user's files survived (sha256 of the tree before
and after). The cases that write onto a full filesystem mount a small tmpfs (root only; skipped otherwise).
Run it on two checkouts to compare code before and after a change: numbers from a busy machine are noisy,
the exit codes and the user's files are not.
Usage: python -m benchmarks.refusal_cases [--name refusal-cases] [--work DIR] [--only CASE ...] [--script PATH]
       [--before-script PATH]
(--script: the `slimline` executable to measure; --before-script: another checkout's, e.g. a wrapper that runs
`python -m slimline.cli.main` with PYTHONPATH at an unpacked `git archive` of the base commit).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import add_results_dir_argument

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("slimline")
FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"
LOOK_ALIKES = {".bashrc.old-2023": "alias ll='ls -l'\n", ".thesis.tmp-final": "chapter 1\n",
               ".vim.old-backup/session.vim": "set nu\n"}


@dataclass
class Case:
    name: str
    what: str
    argv: list[str]
    cwd: Path
    watched: Path  # every file below it is the user's and must survive
    env: dict[str, str] = field(default_factory=dict)
    holder: subprocess.Popen | None = None  # a process holding --out's lock (the "first writer")


@dataclass
class Fixtures:
    work: Path
    checkpoint: Path
    exported: Path
    run_dir: Path
    data: Path


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file below root: the user's files survive when each is still there, byte for byte
    (slimline may add its own beside them, e.g. a run directory written with --force)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _user_files(directory: Path, files: dict[str, str] | None = None) -> Path:
    for rel, text in (files or {"thesis.tex": "years of work\n", "data/results.csv": "a,b\n1,2\n",
                                **LOOK_ALIKES}).items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_text(text)
    return directory


def _cli(script: Path, *args: str) -> None:
    completed = subprocess.run([str(script), *args], capture_output=True, text=True, check=False)
    if completed.returncode not in (0, 1):
        raise SystemExit(f"fixture `slimline {' '.join(args)}` failed:\n{completed.stderr}")


def fixtures(work: Path, script: Path) -> Fixtures:
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import WORDS, make_tiny_bert

    checkpoint = work / "fixtures" / "tiny-bert"
    if not (checkpoint / "config.json").is_file():
        make_tiny_bert(checkpoint)
    exported, run_dir = work / "fixtures" / "exported", work / "fixtures" / "run"
    if not (exported / "manifest.json").is_file():
        _cli(script, "export", "--checkpoint", str(checkpoint), "--out", str(exported))
    if not (run_dir / "report.json").is_file():
        _cli(script, "run", "--checkpoint", str(checkpoint), "--profile", str(FAST_PROFILE), "--out", str(run_dir),
             "--no-history")
    data = work / "fixtures" / "reviews.csv"
    rows = [f"{' '.join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 9))},{('neg', 'pos')[i % 2]}"
            for i in range(60)]
    data.write_text("text,label\n" + "\n".join(rows) + "\n")
    return Fixtures(work, checkpoint, exported, run_dir, data)


def _hold_lock(lock_file: Path) -> subprocess.Popen:
    """A process that holds `lock_file` the way a running slimline writer does, until killed."""
    code = ("import sys, time\nfrom slimline.core.outputs import ExclusiveLock\n"
            f"lock = ExclusiveLock({str(lock_file)!r})\nassert lock.acquire()\nlock.write_owner()\n"
            "print('held', flush=True)\ntime.sleep(600)\n")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def cases(fx: Fixtures, root: Path, tmpfs: Path | None) -> Iterator[Callable[[], Case]]:
    """Each yields a factory: the case's directories are made fresh just before it runs."""
    ck, exported, run_dir, prof = str(fx.checkpoint), str(fx.exported), str(fx.run_dir), str(FAST_PROFILE)
    search = ["--checkpoint", ck, "--profile", prof, "--eval-data", str(fx.data), "--trials", "1", "--no-history"]
    home = root / "home"

    def fresh(name: str) -> Path:
        path = root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def make_home() -> Path:
        shutil.rmtree(home, ignore_errors=True)
        return _user_files(home, {".bashrc": "export PS1='$ '\n", **LOOK_ALIKES})

    yield lambda: Case("0-help", "--help (the floor: interpreter and the CLI's imports)", ["--help"], root, fresh("h"))

    yield lambda: Case("1-package-home", "package --out $HOME --force", ["package", run_dir, "--out", str(home),
                       "--force"], make_home(), home, {"HOME": str(home)})

    def package_cwd() -> Case:
        cwd = _user_files(fresh("cwd"))
        return Case("1-package-cwd-abs", "package --out $PWD --force (absolute)",
                    ["package", run_dir, "--out", str(cwd), "--force"], cwd, cwd)
    yield package_cwd

    def package_user_dir() -> Case:
        mine = _user_files(fresh("mine") / "models")
        return Case("1-package-user-dir", "package --out DIR_OF_USER_FILES --force",
                    ["package", run_dir, "--out", str(mine), "--force"], mine.parent, mine)
    yield package_user_dir

    def run_dot_files() -> Case:
        dots = _user_files(fresh("dots"), dict(LOOK_ALIKES))
        return Case("2-run-dot-files", "run --out DIR_OF_LOOK_ALIKE_DOT_FILES --force",
                    ["run", "--checkpoint", ck, "--profile", prof, "--out", str(dots), "--force", "--no-history"],
                    root, dots)
    yield run_dot_files

    yield lambda: Case("2-run-home", "run --out $HOME --force",
                       ["run", "--checkpoint", ck, "--profile", prof, "--out", str(home), "--force", "--no-history"],
                       make_home(), home, {"HOME": str(home)})

    def export_onto_checkpoint() -> Case:
        copy = fresh("ck") / "model"
        shutil.copytree(fx.checkpoint, copy)
        return Case("3-export-onto-checkpoint", "export --checkpoint CK --out CK --force",
                    ["export", "--checkpoint", str(copy), "--out", str(copy), "--force"], root, copy)
    yield export_onto_checkpoint

    def package_tar() -> Case:
        where = fresh("tar")
        (where / "bundle.tar.gz").write_text("my own archive\n")
        return Case("4-package-tar", "package --out B --tar, B.tar.gz is the user's",
                    ["package", run_dir, "--out", str(where / "bundle"), "--tar"], where, where)
    yield package_tar

    if tmpfs is not None:
        def export_full_disk() -> Case:
            for entry in tmpfs.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            return Case("12-export-full-disk", "export --out ON_A_FULL_FILESYSTEM",
                        ["export", "--checkpoint", ck, "--out", str(tmpfs / "onnx")], root, tmpfs)
        yield export_full_disk

    def refused(command: str, args: list[str]) -> Callable[[], Case]:
        def make() -> Case:
            mine = _user_files(fresh(f"refuse-{command}") / "mine")
            return Case(f"14-{command}-refused", f"{command} --out DIR_OF_USER_FILES (no --force)",
                        [command, *args, "--out", str(mine)], root, mine)
        return make

    yield refused("run", ["--checkpoint", ck, "--profile", prof, "--no-history"])
    yield refused("search", search)
    yield refused("export", ["--checkpoint", ck])
    yield refused("compress", ["--model", exported, "--recipe", "int4-weight-only"])
    yield refused("bench", ["--model", exported, "--profile", prof, "--no-history"])
    yield refused("package", [run_dir])

    def locked(command: str, args: list[str]) -> Callable[[], Case]:
        def make() -> Case:
            out = fresh(f"locked-{command}") / "out"
            out.mkdir()
            (out / ".slimline-run.json").write_text('{"schema_version": 1, "written_by": "slimline"}\n')
            case = Case(f"14-{command}-second-writer", f"{command} while another writer holds --out's lock",
                        [command, *args, "--out", str(out)], root, out)
            case.holder = _hold_lock(out / ".slimline.lock")
            return case
        return make

    yield locked("run", ["--checkpoint", ck, "--profile", prof, "--no-history"])
    yield locked("search", search)

    def package_dot() -> Case:
        cwd = _user_files(fresh("dotcwd") / "work")
        return Case("16-package-dot", "package ../run --out . --force",
                    ["package", os.path.relpath(fx.run_dir, cwd), "--out", ".", "--force"], cwd, cwd)
    yield package_dot

    yield lambda: Case("16-negative-time-budget", "search --time-budget -5m",
                       ["search", "--checkpoint", ck, "--out", str(root / "neg"), "--time-budget", "-5m"],
                       fresh("neg-cwd"), fresh("neg-cwd"))


def measure(case: Case, script: Path) -> dict:
    before = _digests(case.watched)
    env = {**os.environ, "COLUMNS": "200", **case.env}
    started = time.monotonic()
    completed = subprocess.run(["/usr/bin/time", "-v", str(script), *case.argv], capture_output=True, text=True,
                               cwd=case.cwd, env=env, check=False, timeout=1800)
    wall_s = time.monotonic() - started
    if case.holder is not None:
        case.holder.kill()
        case.holder.wait()
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", completed.stderr)
    lines = completed.stderr.splitlines()
    message = next((line.strip() for line in lines if line.startswith(("error", "unexpected")) or ": error:" in line),
                   "")
    return {"case": case.name, "what": case.what, "exit_code": completed.returncode, "wall_s": round(wall_s, 2),
            "max_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
            "user_files_intact": case.watched.exists() and before.items() <= _digests(case.watched).items(),
            "message": message[:240]}


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path | None]:
    mount_point = Path(tempfile.mkdtemp(prefix="slimline-full-"))
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                                    str(mount_point)], capture_output=True, check=False).returncode == 0
    try:
        yield mount_point if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(mount_point)], check=False)
        mount_point.rmdir()


def _cell(r: dict) -> str:
    return (f"{r['exit_code']} | {r['wall_s']} | {r['max_rss_mb']} | "
            f"{'yes' if r['user_files_intact'] else '**NO**'}")


def render_markdown(rows: list[dict], title: str) -> str:
    sides = [side for side in ("before", "after") if side in rows[0]]
    head = " | ".join(f"{side}: exit | wall s | peak RSS MB | files intact" for side in sides)
    lines = [f"# {title}", "", "Each case runs `slimline` under `/usr/bin/time -v`; with two checkouts, the same "
             "case runs on each back to back (a busy machine's load hits both alike).", "",
             f"| case | what | {head} | message ({sides[-1]}) |", "|---|---|" + "---|" * (4 * len(sides) + 1)]
    for r in rows:
        cells = " | ".join(_cell(r[side]) for side in sides)
        lines.append(f"| {r['case']} | `{r['what']}` | {cells} | {r[sides[-1]]['message'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="refusal-cases")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "slimline-refusal-cases")
    parser.add_argument("--only", nargs="*", help="case name prefixes to run (default: all)")
    parser.add_argument("--script", type=Path, default=SCRIPT, help=f"slimline executable (default: {SCRIPT})")
    parser.add_argument("--before-script", type=Path, help="another checkout's slimline: each case runs on it "
                        "first, then on --script, and the table shows both")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    scripts = {"before": args.before_script, "after": args.script} if args.before_script else {"after": args.script}
    fx = fixtures(args.work, args.before_script or args.script)
    rows = []
    with small_tmpfs("96k") as tmpfs:
        for make in cases(fx, args.work / "cases", tmpfs):
            row: dict = {}
            for side, script in scripts.items():
                case = make()
                if args.only and not case.name.startswith(tuple(args.only)):
                    if case.holder is not None:
                        case.holder.kill()
                    break
                row.update(case=case.name, what=case.what)
                row[side] = measure(case, script)
            if row:
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{args.name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.results_dir / f"{args.name}.md").write_text(render_markdown(rows, f"slimline: {args.name}"))
    print(f"wrote {args.results_dir / args.name}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
