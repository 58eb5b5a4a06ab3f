"""Every command that writes, driven through the CLI's main() in this process, against the places a typo or
a careless --force points at: every byte of the user's files survives, and each command's output check
follows the one rule (slimline.core.outputs) for random paths too.

A cell the rule allows stops right after the command's output check passed (a sentinel raised from it), so
the whole sweep takes seconds; tests/e2e/test_output_rule_cli.py writes beside a user's files for real.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import slimline.core.outputs
from slimline.cli.main import main
from slimline.core.errors import EXIT_BAD_INPUT

FAST_PROFILE = Path(__file__).resolve().parents[1] / "fixtures" / "fast-cpu.yaml"
LOOK_ALIKES = {".bashrc.old-2023": "alias ll='ls -l'\n", ".thesis.tmp-final": "chapter 1\n",
               ".vim.old-backup/session.vim": "set nu\n"}


class Allowed(BaseException):
    """Raised by the spy once a command's output check passed: the command would write now."""


@dataclass(frozen=True)
class World:
    root: Path
    home: Path
    ancestor: Path  # of the working directory, inside $HOME
    cwd: Path
    dots: Path  # a directory of look-alike dot-files only
    checkpoint: Path
    model: Path  # a slimline model directory (an export)
    history: Path

    def snapshot(self) -> dict[str, str]:
        return {p.relative_to(self.root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.root.rglob("*")) if p.is_file() and not p.is_symlink()}


def make_world(root: Path) -> World:
    def files(directory: Path, entries: dict[str, str]) -> Path:
        for rel, text in entries.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_text(text)
        return directory

    home = files(root / "home", {".bashrc": "export PS1='$ '\n", **LOOK_ALIKES})
    ancestor = files(home / "work", {"notes.md": "plans\n"})
    cwd = files(ancestor / "project", {"thesis.tex": "years of work\n", "data/results.csv": "a,b\n", **LOOK_ALIKES})
    checkpoint = files(root / "inputs" / "ck", {"config.json": '{"model_type": "bert"}', "model.safetensors": "w"})
    model = files(root / "inputs" / "onnx", {"model.onnx": "onnx", "manifest.json": '{"schema_version": 1, '
                                             '"format": "onnx", "files": {"model.onnx": "x"}}'})
    history = files(root / "inputs", {"history.sqlite": "SQLite format 3\0"}) / "history.sqlite"
    links = root / "links"
    links.mkdir()
    for name, target in (("to-ck", checkpoint), ("to-home", home), ("to-cwd", cwd)):
        (links / name).symlink_to(target)
    return World(root, home, ancestor, cwd, files(root / "dots", dict(LOOK_ALIKES)), checkpoint, model, history)


@dataclass(frozen=True)
class Command:
    name: str
    kind: str  # "model", "run" or "file": what the rule expects of --out
    argv: Callable[[World, str], list[str]]
    inputs: Callable[[World], list[Path]]
    forceable: bool = True


COMMANDS = [
    Command("run", "run", lambda w, out: ["run", "--checkpoint", str(w.checkpoint), "--profile", str(FAST_PROFILE),
                                          "--out", out, "--no-history"], lambda w: [w.checkpoint, FAST_PROFILE]),
    Command("demo", "run", lambda w, out: ["demo", "--out", out, "--no-history"], lambda w: [], forceable=False),
    Command("search", "run", lambda w, out: ["search", "--checkpoint", str(w.checkpoint), "--profile",
                                             str(FAST_PROFILE), "--out", out, "--trials", "1", "--no-history"],
            lambda w: [w.checkpoint, FAST_PROFILE]),
    Command("export", "model", lambda w, out: ["export", "--checkpoint", str(w.checkpoint), "--out", out],
            lambda w: [w.checkpoint]),
    Command("compress", "model", lambda w, out: ["compress", "--model", str(w.model), "--recipe", "int4-weight-only",
                                                 "--out", out], lambda w: [w.model]),
    Command("bench", "run", lambda w, out: ["bench", "--model", str(w.model), "--profile", str(FAST_PROFILE),
                                            "--out", out, "--no-history"], lambda w: [w.model, FAST_PROFILE]),
    Command("package", "bundle", lambda w, out: ["package", str(w.model), "--out", out], lambda w: [w.model]),
    Command("package --tar", "bundle", lambda w, out: ["package", str(w.model), "--out", out, "--tar"],
            lambda w: [w.model]),
    Command("history export", "file", lambda w, out: ["history", "export", "--out", out, "--history",
                                                      str(w.history)], lambda w: [w.history]),
    Command("compare --html", "file", lambda w, out: ["compare", "1", "2", "--html", out, "--history",
                                                      str(w.history)], lambda w: [w.history]),
]
#: keygen writes PREFIX.key and PREFIX.pub beside PREFIX, new files only: in the sweep, not in the property.
KEYGEN = Command("keygen", "file", lambda w, out: ["keygen", "--out", out], lambda w: [], forceable=False)


#: Every module that binds check_output, imported now: one first imported under the spy would keep it.
WRITERS = ("slimline.api", "slimline.deploy.bundle", "slimline.deploy.signing", "slimline.history.export",
           "slimline.pipeline.plan", "slimline.pipeline.run", "slimline.pipeline.single", "slimline.pipeline.search")
for _name in WRITERS:
    importlib.import_module(_name)


@contextlib.contextmanager
def spied_checks(checked: list[tuple[Path, list[Path]]]) -> Iterator[None]:
    """Every output check runs for real; the first one a command passes raises Allowed instead of returning."""
    real = slimline.core.outputs.check_output

    def spy(out: Path, kind: str, **options: object) -> None:
        checked.append((Path(out), [Path(p) for p in options.get("inputs") or ()]))  # type: ignore[union-attr]
        real(out, kind, **options)  # type: ignore[arg-type]
        raise Allowed

    with pytest.MonkeyPatch.context() as patch:
        for module in [m for name, m in sys.modules.items() if name.startswith("slimline")]:
            if getattr(module, "check_output", None) is real:
                patch.setattr(module, "check_output", spy)
        yield


@contextlib.contextmanager
def place(world: World) -> Iterator[None]:
    """The user's session: HOME and the working directory (restored after, also inside a hypothesis run)."""
    cwd, home = os.getcwd(), os.environ.get("HOME")
    os.environ["HOME"] = str(world.home)
    os.chdir(world.cwd)
    try:
        yield
    finally:
        os.chdir(cwd)
        if home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = home


def outcome(command: Command, world: World, out: str, force: bool) -> tuple[str, list[tuple[Path, list[Path]]]]:
    """"refused" (exit 2) or "allowed" (the rule passed), and every output check the command made."""
    checked: list[tuple[Path, list[Path]]] = []
    argv = command.argv(world, out) + (["--force"] if force else [])
    with place(world), spied_checks(checked):
        try:
            rc = main(argv)
        except Allowed:
            return "allowed", checked
        except SystemExit as exit_:  # argparse: a usage error
            rc = exit_.code  # type: ignore[assignment]
    assert rc == EXIT_BAD_INPUT, f"{argv}: exit {rc}"
    return "refused", checked


TARGETS = ["$HOME", "cwd (.)", "cwd (absolute)", "ancestor of cwd", "the input", "look-alike dot-files"]


def target_path(world: World, command: Command, target: str) -> str | None:
    return {"$HOME": str(world.home), "cwd (.)": ".", "cwd (absolute)": str(world.cwd),
            "ancestor of cwd": str(world.ancestor), "look-alike dot-files": str(world.dots),
            "the input": str(command.inputs(world)[0]) if command.inputs(world) else None}[target]


@pytest.mark.parametrize("command", [*COMMANDS, KEYGEN], ids=[c.name for c in [*COMMANDS, KEYGEN]])
def test_no_writing_command_loses_a_byte_of_the_users_files(command: Command, tmp_path: Path) -> None:
    """The data-loss sweep: $HOME, the cwd (relative and absolute), its ancestor, the command's input and a
    directory of look-alike dot-files, each with and without --force. Only the dot-files directory with
    --force may be written (beside the files, for a run or model directory); a bundle or a file never there."""
    world = make_world(tmp_path)
    before = world.snapshot()
    for target in TARGETS:
        out = target_path(world, command, target)
        for force in (False, True) if command.forceable else (False,):
            if out is None:
                continue
            verdict, checked = outcome(command, world, out, force)
            may_write = target == "look-alike dot-files" and force and command.kind in ("run", "model")
            if command is KEYGEN:  # DIR.key and DIR.pub beside DIR; `.` names no file
                may_write = target != "cwd (.)"
            assert verdict == ("allowed" if may_write else "refused"), (command.name, target, force)
            assert verdict == "refused" or checked[0][0].name == Path(out).name or command is KEYGEN
            assert world.snapshot() == before, (command.name, target, force)


# --- the property: random paths through every command's output check ---------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("rule-world"))


BASES = ["{cwd}", ".", "..", "../..", "{home}", "{root}/links/to-ck", "{root}/links/to-home", "{root}/links/to-cwd",
         "{root}/inputs/ck", "{root}/inputs/onnx", "{root}/inputs/history.sqlite", "{root}/dots", "{root}/new",
         "{root}", "/"]
SEGMENTS = ["..", ".", "sub", "project", "work", "ck", "onnx", "data", "new", "results.csv", "thesis.tex"]


def _resolved(path: str) -> Path:
    return Path(os.path.realpath(path))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or child.is_relative_to(parent)


def expected(command: Command, world: World, out: str, force: bool) -> str:
    """The rule as the README states it, evaluated on the filesystem without slimline's code, for the place
    the kernel would write: the parent's real path and the final name. The path is read as the CLI reads it
    (a pathlib.Path drops "." segments and a trailing "/"), so `LINK/.` names the link, which is refused."""
    out = str(Path(out))
    out = os.path.realpath(out) if os.path.basename(out) in ("", ".", "..") else os.path.join(
        os.path.realpath(os.path.dirname(out) or "."), os.path.basename(out))
    target = _resolved(out)
    if any(_inside(target, _resolved(str(i))) or _inside(_resolved(str(i)), target) for i in command.inputs(world)):
        return "refused"  # an output never equals, holds or sits inside an input
    if not os.path.lexists(out):
        ancestor = Path(os.path.abspath(out))
        while not ancestor.exists():
            ancestor = ancestor.parent
        return "allowed" if ancestor.is_dir() else "refused"
    if os.path.islink(out):
        return "refused"
    wants_dir = command.kind != "file"
    if os.path.isdir(out) != wants_dir:
        return "refused"
    if not wants_dir:
        return "allowed" if force else "refused"  # no file in the world was written by slimline
    entries = [e for e in os.listdir(out) if not e.endswith(".slimline.lock")]
    slimlines = not entries or (command.kind in ("model", "bundle") and Path(out, "manifest.json").is_file()
                                and _resolved(out) == world.model)
    if slimlines:
        return "allowed"
    home, cwd = _resolved(str(world.home)), _resolved(str(world.cwd))
    protected = target == Path("/") or _inside(home, target) or _inside(cwd, target)
    return "allowed" if force and not protected and command.kind in ("run", "model") else "refused"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(COMMANDS), base=st.sampled_from(BASES),
       segments=st.lists(st.sampled_from(SEGMENTS), max_size=3), force=st.booleans())
def test_every_commands_output_check_follows_the_rule_for_random_paths(world: World, command: Command, base: str,
                                                                       segments: list[str], force: bool) -> None:
    out = os.path.join(base.format(cwd=world.cwd, home=world.home, root=world.root), *segments)
    force = force and command.forceable
    with place(world):
        want = expected(command, world, out, force)
    got, checked = outcome(command, world, out, force)
    assert got == want, (command.name, out, force)
    if checked:  # the command named its inputs to the check (not only in the expected verdict)
        named = {_resolved(str(p)) for p in checked[0][1]}
        assert {_resolved(str(p)) for p in command.inputs(world)} <= named, (command.name, checked[0])
