"""The model directory: model files plus a manifest that says what they are and how they were made.

Every stage reads one and writes one. Writes go to a temporary sibling directory that is
fsynced and renamed into place only when complete, so a crash or a full disk never leaves a
half-written directory under the final name and never touches a previous good result.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slimline.core.errors import CheckpointError, OutputError
from slimline.core.locks import LOCK_SUFFIX, normalised_path, temporary_path
from slimline.core.machine import library_versions, machine_info
from slimline.core.outputs import owned_entries, protected_reason

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
#: torch-module: a plain nn.Module from a factory + a state dict (slimline.formats.torch_module)
ModelFormat = Literal["hf", "onnx", "openvino", "tensorrt", "torch-quantized", "torch-module"]


class TensorSpec(BaseModel):
    """One model input: its name, dtype, and shape with dynamic axes named (e.g. ["batch", "sequence"])."""

    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: str
    shape: list[int | str]


class LineageStep(BaseModel):
    """One step that produced a model directory from its parent."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["source", "pass", "exporter"]
    name: str
    config: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] | None = None  # target, shape, budget or data a pass also depended on
    parent_manifest_sha256: str | None = None


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    created_at: str
    versions: dict[str, str]
    machine: dict[str, Any]
    seeds: dict[str, int] = Field(default_factory=dict)
    data_sha256: dict[str, str] = Field(default_factory=dict)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = MANIFEST_SCHEMA_VERSION
    format: ModelFormat
    task: str
    model_file: str | None = None
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[str] = Field(default_factory=list)
    lineage: list[LineageStep] = Field(default_factory=list)
    provenance: Provenance
    metadata: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    """Hash of a JSON-able value in canonical form: the key for stage caches and lineage."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file below root, keyed by POSIX relative path (manifest excluded)."""
    hashes: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_NAME:
            hashes[path.relative_to(root).as_posix()] = sha256_file(path)
    return hashes


def new_provenance(seeds: dict[str, int] | None = None, data_sha256: dict[str, str] | None = None) -> Provenance:
    return Provenance(
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=library_versions(),
        machine=machine_info(),
        seeds=seeds or {},
        data_sha256=data_sha256 or {},
    )


class ModelDir:
    """A verified model directory: its path and its manifest."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest

    @property
    def manifest_sha256(self) -> str:
        """Hash of manifest.json; for an in-memory manifest (a plain HF checkpoint), of its content."""
        manifest_path = self.path / MANIFEST_NAME
        if manifest_path.is_file():
            return sha256_file(manifest_path)
        return sha256_json(self.manifest.model_dump(exclude={"provenance"}))

    @property
    def model_path(self) -> Path:
        if self.manifest.model_file is None:
            return self.path
        return self.path / self.manifest.model_file

    def size_mb(self) -> float:
        """Size on disk of the model's weights/engine files (not tokenizer or manifest)."""
        weight_suffixes = (".onnx", ".onnx_data", ".data", ".safetensors", ".bin", ".plan", ".engine", ".pt")
        total = sum(
            (self.path / rel).stat().st_size for rel in self.manifest.files if rel.endswith(weight_suffixes)
        )
        return total / 1e6

    @classmethod
    def open(cls, path: Path | str, *, verify: bool = True) -> ModelDir:
        """Load a model directory and check every recorded file's sha256 (a mismatch is an error)."""
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            raise CheckpointError(
                f"{path} has no {MANIFEST_NAME}: it is not a slimline model directory.",
                fix="pass a directory written by slimline, or a Hugging Face checkpoint to `slimline run`.",
            )
        try:
            manifest = Manifest.model_validate_json(manifest_path.read_text(encoding="utf-8"))
        except (ValidationError, ValueError) as err:
            raise CheckpointError(
                f"{manifest_path} is corrupt or from an incompatible slimline version: {err}",
                fix="delete the directory and rerun the stage that produced it.",
            ) from err
        model_dir = cls(path, manifest)
        if verify:
            model_dir.verify()
        return model_dir

    def verify(self) -> None:
        problems = []
        for rel, expected in self.manifest.files.items():
            file_path = self.path / rel
            if not file_path.is_file():
                problems.append(f"missing file {rel}")
            elif sha256_file(file_path) != expected:
                problems.append(f"sha256 mismatch for {rel}")
        if problems:
            raise CheckpointError(
                f"{self.path} failed verification: {'; '.join(problems)}.",
                fix="the directory was modified or damaged after it was written; delete it and rerun.",
            )


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    dir_fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _in_temp_dir(path: Path) -> bool:
    try:
        return Path(path).absolute().is_relative_to(Path(tempfile.gettempdir()).absolute())
    except (OSError, ValueError):
        return False


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"  # pragma: no cover


def disk_facts(where: Path) -> str:
    """'the filesystem mounted at /data (12.0 KiB free of 96.0 KiB)' for the disk holding `where`."""
    probe = Path(os.path.abspath(where))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    mount = probe
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        usage = shutil.disk_usage(probe)
    except OSError:
        return f"the filesystem mounted at {mount}"
    return f"the filesystem mounted at {mount} ({_size(usage.free)} free of {_size(usage.total)})"


FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def full_disk_cause(err: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `err`, however a library wrapped it (an exporter's or a pass's own
    error type): a full disk is the machine's problem (exit 2, naming the disk), never a stage failure."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and all(current is not s for s in seen):
        if isinstance(current, OSError) and current.errno in FULL_DISK_ERRNOS:
            return current
        seen.append(current)
        current = current.__cause__ or current.__context__
    return None


def describe_os_error(err: OSError, where: Path) -> OutputError:
    """An OSError as an OutputError whose fix names the real culprit: --out, or the temporary directory
    (scratch files such as the tokenised eval set go to TMPDIR, not to --out)."""
    failed = Path(err.filename) if err.filename else Path(where)
    near_out = failed.absolute().is_relative_to(Path(where).absolute().parent)  # --out may lie under /tmp too
    if err.errno in FULL_DISK_ERRNOS and _in_temp_dir(failed) and not near_out:
        return OutputError(f"no space left in the temporary directory {tempfile.gettempdir()} while writing "
                           f"{failed}: {disk_facts(failed)}.",
                           fix="free space there, or point TMPDIR at a filesystem with room "
                               "(TMPDIR=/path/with/space slimline ...); --out is not the problem.")
    if err.errno in FULL_DISK_ERRNOS:
        return OutputError(f"no space left on the device while writing {where}: {disk_facts(where)}.",
                           fix="free disk space there, or choose another --out on a disk with room; nothing was "
                               "moved into place and the partial output was removed.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write to {where}: {err.strerror}.",
                           fix="choose a writable --out directory or fix its permissions.")
    return OutputError(f"writing {where} failed: {err}.", fix="check the output location and retry.")


def _swap(tmp: Path, final: Path) -> None:
    backup = temporary_path(final.parent, final.name, "old")
    os.replace(final, backup)
    os.replace(tmp, final)
    shutil.rmtree(backup, ignore_errors=True)


def _publish(tmp: Path, final: Path, replace: bool, exclusive: bool) -> None:
    """Move the complete `tmp` to `final`. An existing `final` is replaced only where slimline wrote it: a
    directory wholly slimline's is swapped (two renames); one holding anything else (a forced --out beside
    the user's files), or the working/home directory, is updated in place, its other entries untouched."""
    if not os.path.lexists(final):
        os.replace(tmp, final)
        return
    if not replace:
        raise OutputError(f"{final} already exists.", fix="remove it or write elsewhere.")
    if final.is_symlink() or not final.is_dir():
        raise OutputError(f"{final} is not a directory slimline wrote; it is not replaced.",
                          fix="choose another output path.")
    present = {e.name for e in os.scandir(final) if not e.name.endswith(LOCK_SUFFIX)}
    ownership = owned_entries(final)
    owned, strangers = ownership if ownership is not None else (present, [])
    if strangers:
        raise OutputError(f"{final} holds {', '.join(strangers[:5])}, which slimline did not write, inside what it "
                          "did; it is not replaced.", fix="move those files out of it, or choose a new --out.")
    if present <= owned and protected_reason(final) is None:
        _swap(tmp, final)
        return
    if exclusive and present - owned:
        raise OutputError(f"{final} holds {', '.join(sorted(present - owned)[:5])}, which slimline did not write, "
                          "and it may hold nothing else; it is not replaced.",
                          fix="move those files out of it, or choose a new --out.")
    clash = sorted((present - owned) & set(os.listdir(tmp)))
    if clash:
        raise OutputError(f"{final} holds {', '.join(clash[:5])}, which slimline did not write and would replace.",
                          fix="move them away, or choose a new --out.")
    for name in sorted(present & owned, key=lambda n: n != MANIFEST_NAME):  # the manifest first, and in last:
        _remove_entry(final / name)  # half-way, the directory is no complete slimline model
    for name in sorted(os.listdir(tmp), key=lambda n: n == MANIFEST_NAME):
        os.replace(tmp / name, final / name)
    tmp.rmdir()


def _remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(final: Path, *, replace: bool = False, exclusive: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; on success fsync it and move it to `final`.

    On any error the temporary directory is removed and `final` is left exactly as it was. With
    replace=True an existing `final` is replaced once the new one is complete, and only what slimline
    wrote there: entries it did not write are kept (see _publish), so no caller can delete a user's files;
    with exclusive=True (a bundle, which may hold nothing else) such entries refuse the replacement.
    """
    final = normalised_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(final.parent, final.name, "tmp")
        tmp.mkdir(mode=0o700)
    except OSError as err:
        raise describe_os_error(err, final) from err
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # published results follow the umask
        _fsync_tree(tmp)
        _publish(tmp, final, replace, exclusive)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise describe_os_error(err, final) from err
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        full = full_disk_cause(err)
        if full is not None:
            raise describe_os_error(full, final) from err
        raise


def write_manifest(directory: Path, manifest: Manifest) -> Manifest:
    """Hash every file in `directory` into the manifest and write manifest.json there."""
    manifest = manifest.model_copy(update={"files": hash_tree(directory)})
    (directory / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return manifest


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file via a temporary sibling + rename, so readers never see half of it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(path.parent, path.name, "tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(Exception):
            os.unlink(tmp)  # type: ignore[possibly-undefined]
        raise describe_os_error(err, path) from err
