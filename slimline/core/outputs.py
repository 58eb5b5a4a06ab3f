"""Output paths: the one rule every command that writes follows, in one place.

**slimline deletes or overwrites only what it wrote.** An output path holding anything slimline did not
write is refused (exit 2) unless `--force`; with `--force` a run or model directory is written *beside*
the files already there (none of them is deleted or overwritten: a name slimline needs that is taken is
refused), a single-file output the user named is replaced, and a bundle, which must hold nothing else, is
never written there. `--force` never applies to `/`, `$HOME`, the working directory or one of its
ancestors, or an input of the command, and an output never equals, contains or sits inside an input,
with or without `--force` (resolved paths, symlinks followed).

`claimed_output` applies the rule and takes the output's lock (slimline.core.locks) *before* any heavy
import or pre-flight, so a refusal or a busy output answers in well under a second. Deeper layers call
it again (the lock is re-entrant in one thread), and `atomic_directory` replaces only the entries of an
existing directory that slimline wrote, so no caller can forget the rule.

Output kinds: "model" a directory replaced as a whole (export, compress, package's bundle); "run" a
directory written into, resumable (run, demo, search, bench); "file" one file (package --tar's archive,
history export --out, compare --html, keygen's keys).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

from slimline.core.errors import OutputError
from slimline.core.locks import (
    LOCK_SUFFIX,
    RUN_MARKER,
    ExclusiveLock,
    lock_path,
    normalised_path,
    output_lock,
    sweep_stale_temporaries,
    temporary_path,
)

OutputKind = Literal["model", "run", "file"]
MANIFEST = "manifest.json"
#: Top-level names slimline writes into a run directory (run, bench, search, demo). With --force into a
#: directory of the user's files none of them may already be there: slimline would overwrite it.
RUN_DIR_NAMES = frozenset({RUN_MARKER, "stages", "report.json", "report.md", "report.html", "report-tradeoff.svg",
                           "search", "search.db", "trials.json", "trials.md", "front.json", "front.svg", "best",
                           "bundle", "run.yaml", "history-record.json"})
FORCE_FIX = "choose a new or empty --out, or pass --force to write beside the files there (none is replaced)."
__all__ = [
    "LOCK_SUFFIX",
    "RUN_MARKER",
    "ExclusiveLock",
    "check_output",
    "check_writable",
    "claimed_output",
    "claimed_run_dir",
    "input_paths",
    "lock_path",
    "normalised_path",
    "output_lock",
    "owned_entries",
    "protected_reason",
    "sweep_stale_temporaries",
    "temporary_path",
]


def _read_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.loads(handle.read(64 << 20))
    except (OSError, ValueError):
        return None


def _manifest(directory: Path) -> dict | None:
    data = _read_json(directory / MANIFEST)
    if isinstance(data, dict) and {"schema_version", "format", "files"} <= set(data) and isinstance(data["files"],
                                                                                                  dict):
        return data
    return None


def _is_run_dir(path: Path) -> bool:
    if (path / RUN_MARKER).is_file() or (path / "stages").is_dir():
        return True
    report = _read_json(path / "report.json")
    return isinstance(report, dict) and {"schema_version", "verdict", "budgets"} <= set(report)


def _entries(directory: Path) -> list[str]:
    """What is in `directory`, slimline's lock files aside (a killed writer's lock is no one's content)."""
    return sorted(e.name for e in os.scandir(directory) if not e.name.endswith(LOCK_SUFFIX))


def resolved(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise OutputError(f"cannot resolve {path}: {err}.", fix="choose another path.") from err


def protected_reason(path: Path) -> str | None:
    """Why `path` (resolved) is a place --force never applies to, or None."""
    path = resolved(path)
    home = resolved(Path(os.environ.get("HOME") or Path.home()))
    cwd = resolved(Path.cwd())
    if path == Path(path.anchor):
        return "the filesystem root"
    if path == home or home.is_relative_to(path):
        return "your home directory" if path == home else "a directory that contains your home directory"
    if path == cwd or cwd.is_relative_to(path):
        return "the working directory" if path == cwd else "a directory that contains the working directory"
    return None


def input_paths(*candidates: object) -> list[Path]:
    """The command arguments that name existing paths: `data.csv:validation` counts as `data.csv`; shipped
    names (`cpu`, `rotten-tomatoes`) and `pkg.module:function` name nothing and are skipped."""
    found = []
    for candidate in candidates:
        candidate = getattr(candidate, "source", candidate)  # a DatasetSpec or EvalSource: its file or folder
        if not isinstance(candidate, (str, Path)) or not str(candidate):
            continue
        text = str(candidate)
        for option in (text, text.rsplit(":", 1)[0] if ":" in text else None):
            if option and os.path.lexists(option):
                found.append(Path(option))
                break
    return found


def _input_clash(out: Path, inputs: Iterable[Path]) -> str | None:
    target = resolved(out)
    for given in inputs:
        source = resolved(given)
        if target == source:
            return f"is the command's input {given}"
        if source.is_relative_to(target):
            return f"contains the command's input {given}"
        if target.is_relative_to(source):
            return f"lies inside the command's input {given}"
    return None


def _slimlines(out: Path, kind: OutputKind, ours: Callable[[Path], bool] | None) -> bool:
    if kind == "file":
        return ours is not None and ours(out)
    if not _entries(out):
        return True
    return _manifest(out) is not None if kind == "model" else _is_run_dir(out)


def check_output(out: Path, kind: OutputKind, *, force: bool = False, inputs: Iterable[Path] = (),
                 ours: Callable[[Path], bool] | None = None, exclusive: bool = False) -> None:
    """Apply the rule to `out` (see the module docstring); creates nothing, raises OutputError (exit 2).

    `inputs`: every path the command reads. `ours`: for a "file", whether an existing file is slimline's.
    `exclusive`: the directory may hold nothing else (a bundle: verify refuses files its manifest does not
    list), so --force cannot write it beside the user's files either.
    """
    out = normalised_path(out)  # judged where it will be written
    _check_rule(out, kind, force, list(inputs), ours, exclusive)
    check_writable(out)


def _check_rule(out: Path, kind: OutputKind, force: bool, inputs: list[Path], ours: Callable[[Path], bool] | None,
                exclusive: bool) -> None:
    clash = _input_clash(out, inputs)
    if clash is not None:
        raise OutputError(f"--out {out} {clash}; an output never replaces, holds or sits inside an input, even "
                          "with --force.", fix="choose an --out outside every input of the command.")
    if not os.path.lexists(out):
        return
    wanted = "a file" if kind == "file" else "a directory"
    if out.is_symlink():
        raise OutputError(f"--out {out} is a link; slimline neither writes through nor replaces it.",
                          fix="choose another --out (the link's target, if that is what you meant).")
    if out.is_dir() != (kind != "file"):
        what = "a directory" if out.is_dir() else "a file"
        raise OutputError(f"--out {out} is {what}, not {wanted}; slimline will not replace it, even with --force.",
                          fix="choose another --out.")
    if _slimlines(out, kind, ours):
        return
    what = {"model": "a slimline model directory", "run": "a slimline run directory",
            "file": "a file slimline wrote"}[kind]
    held = "already holds files and is not" if kind != "file" else "exists and is not"
    if not force:
        fix = "choose another path, or pass --force to replace it." if kind == "file" else \
            "choose a new or empty --out (a bundle holds nothing else)." if exclusive else FORCE_FIX
        raise OutputError(f"--out {out} {held} {what}; writing there could destroy them.", fix=fix)
    reason = protected_reason(out)
    if reason is not None:
        raise OutputError(f"--out {out} is {reason}; --force never applies there.", fix="choose a new directory "
                          "for --out.")
    if exclusive:
        raise OutputError(f"--out {out} holds files slimline did not write, and a bundle directory holds nothing "
                          "else (verify refuses any file its manifest does not list); --force cannot help here.",
                          fix="choose a new or empty --out.")
    taken = sorted(RUN_DIR_NAMES & set(_entries(out))) if kind == "run" else \
        [MANIFEST] if kind == "model" and (out / MANIFEST).exists() else []
    if taken:
        raise OutputError(f"--out {out} holds {', '.join(taken)}, which slimline did not write and would overwrite; "
                          "--force writes beside your files, never over them.",
                          fix="move them away, or choose a new --out.")


def check_writable(out: Path) -> None:
    """`out` can be created (or written) here: checked on the nearest existing ancestor, creating nothing."""
    probe = Path(os.path.abspath(out))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() and probe != Path(os.path.abspath(out)):
        raise OutputError(f"cannot create --out {out}: {probe} is not a directory.", fix="choose another --out.")
    directory = probe if probe.is_dir() else probe.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {directory} (for --out {out}): permission denied.",
                          fix="choose a writable --out directory or fix its permissions.")


def _make_parents(directory: Path) -> list[Path]:
    """Create `directory` and its missing parents; return those created, deepest first."""
    missing = []
    probe = directory
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            pass
        except OSError as err:
            from slimline.core.artifact import describe_os_error

            _remove_empty(missing)
            raise describe_os_error(err, path) from err
    return missing


def _remove_empty(directories: list[Path]) -> None:
    for path in directories:
        with contextlib.suppress(OSError):
            path.rmdir()


@contextlib.contextmanager
def claimed_output(out: Path, kind: OutputKind, *, force: bool = False, inputs: Iterable[Path] = (),
                   ours: Callable[[Path], bool] | None = None, exclusive: bool = False) -> Iterator[Path]:
    """The rule, then the output's lock, held for the block: call it first, before any heavy import.

    Yields `out` as an absolute path. Creates only what the lock needs (a run directory holds its own
    lock, so it is created now; for the other kinds the parent); if the block fails, what this created
    is removed again while still empty, so bad input leaves nothing behind. A "file" output takes no lock.
    """
    out = normalised_path(out)
    inputs = list(inputs)
    check_output(out, kind, force=force, inputs=inputs, ours=ours, exclusive=exclusive)
    if kind == "file":
        yield out
        return
    created = _make_parents(out if kind == "run" else out.parent)
    try:
        with output_lock(out, kind):
            yield out
    except BaseException:
        _remove_empty(created)
        raise


def _managed(directory: Path) -> bool:
    """A directory only slimline creates: a stage or best/ of a run directory (those names are refused in a
    user's directory, see RUN_DIR_NAMES), or anything in slimline's cache."""
    from slimline.core.paths import cache_root

    path = resolved(directory)
    if path.name == "best" and (path.parent / RUN_MARKER).is_file():
        return True
    if path.parent.name == "stages" and (path.parent.parent / RUN_MARKER).is_file():
        return True
    return path.is_relative_to(resolved(cache_root()))


def owned_entries(directory: Path) -> tuple[set[str], list[str]] | None:
    """The top-level entries of an existing output directory that slimline wrote, and any file it did not
    write inside them; None when it owns all of it (a run directory's stages/NN-* and best/, the cache).

    A model directory or bundle names its files in manifest.json (+ the manifest and a bundle's
    signature.json); anything else beside them is someone else's.
    """
    if _managed(directory):
        return None
    manifest = _manifest(directory)
    if manifest is None:
        return set(), []
    listed = {str(rel) for rel in manifest["files"]}
    owned = {MANIFEST} | {rel.split("/", 1)[0] for rel in listed}
    if manifest.get("kind") == "slimline-bundle" and (directory / "signature.json").is_file():
        owned.add("signature.json")
    strangers = []
    for name in sorted(owned - {MANIFEST, "signature.json"}):
        if (directory / name).is_dir() and not (directory / name).is_symlink():
            for root, _, files in os.walk(directory / name):
                strangers += [rel for f in files
                              if (rel := (Path(root) / f).relative_to(directory).as_posix()) not in listed]
    return owned, strangers


@contextlib.contextmanager
def claimed_run_dir(out: Path) -> Iterator[Path]:
    """The run directory once the pre-flight passed (the caller applied the rule: `claimed_output`):
    created, locked (re-entrant: the caller's lock) and marked as slimline's."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        from slimline.core.artifact import describe_os_error

        raise describe_os_error(err, out) from err
    with output_lock(out, "run"):
        marker = out / RUN_MARKER
        if not marker.is_file():
            marker.write_text(json.dumps({"schema_version": 1, "written_by": "slimline"}) + "\n", encoding="utf-8")
        yield out
