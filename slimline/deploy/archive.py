"""A bundle as one .tar.gz: written reproducibly, extracted defensively.

The archive holds the top-level directory, then manifest.json (and signature.json), then the rest in
sorted order. Extraction streams the members and decides on each one at its header, before writing
it: it refuses absolute paths, `..` components, anything landing outside the destination, links,
sparse and special files, a second top-level entry, and repeated names. It also bounds sizes, because
a few MB of gzip can declare GBs of zeros (a gzip bomb): before manifest.json only a little may be
written; once it is read, every member's declared size must equal the size the manifest records and
the total may not pass their sum; and no archive writes more than SLIMLINE_MAX_BUNDLE_MB (4 GiB by
default). The decompressed stream itself is metered, so oversized tar headers (PAX records, GNU long
names, which tarfile reads into memory) are refused too. tarfile's "data" filter (PEP 706) runs as a
second guard on each member; a Python without it (before 3.10.12 / 3.11.4) is refused rather than
falling back to an unfiltered extraction. On any refusal, what was extracted is removed.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from slimline.core.artifact import describe_os_error
from slimline.core.errors import BundleError
from slimline.core.locks import temporary_path
from slimline.deploy.manifest import (
    BUNDLE_MANIFEST,
    BUNDLE_SIGNATURE,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    BundleManifest,
    path_problem,
    read_manifest,
)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
MAX_BUNDLE_MB_ENV = "SLIMLINE_MAX_BUNDLE_MB"
DEFAULT_MAX_BUNDLE_MB = 4096
#: What may be extracted before manifest.json: slimline writes it first, and older slimline archives
#: (sorted members) put only README.md before it.
PRE_MANIFEST_BYTES = 64 << 20
#: Tar headers (and the read-ahead of the next one) decompressed between two members.
HEADER_SLACK_BYTES = 1 << 20
MAX_MEMBERS = 100_000
_REFUSED_FIX = "this archive was not written by `slimline package`; do not use it."


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def _normalised(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_archive(bundle_dir: Path, archive: Path) -> Path:
    """Write `archive` (a temporary sibling, then renamed): fixed owner, mode and times; the top directory,
    manifest.json and signature.json first (extraction derives its size limits from the manifest), then
    the rest sorted."""
    mtime = int(os.stat(bundle_dir / BUNDLE_MANIFEST).st_mtime)
    tmp = temporary_path(archive.parent, archive.name, "tmp")  # swept, if we are killed, by the next packager
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            first = [bundle_dir / name for name in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE) if (bundle_dir / name).exists()]
            paths = [bundle_dir, *first, *sorted(p for p in bundle_dir.rglob("*") if p not in first)]
            for path in paths:
                arcname = PurePosixPath(bundle_dir.name, *path.relative_to(bundle_dir).parts).as_posix()
                info = _normalised(tar.gettarinfo(str(path), arcname=arcname), mtime)
                if info.isfile():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                elif info.isdir():
                    tar.addfile(info)
            raw.flush()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, archive)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise describe_os_error(err, archive) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive


def is_bundle_archive(path: Path) -> bool:
    """`path` is an archive `slimline package --tar` wrote: its first file member is TOP/manifest.json of a
    bundle. Reads a few headers and the manifest (bounded), nothing else."""
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for _, member in zip(range(3), tar, strict=False):
                parts = PurePosixPath(member.name).parts
                if member.isfile() and len(parts) == 2 and parts[1] == BUNDLE_MANIFEST:
                    handle = tar.extractfile(member) if member.size <= MAX_MANIFEST_BYTES else None
                    data = json.loads(handle.read()) if handle is not None else None
                    return isinstance(data, dict) and data.get("kind") == "slimline-bundle"
    except (OSError, tarfile.TarError, EOFError, zlib.error, ValueError):
        return False
    return False


def _refusal(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why `member` must not be extracted into `dest`, or None when it is a plain file or directory inside."""
    name = member.name
    problem = path_problem(dest, name)
    if problem is not None:
        return problem
    root = dest.resolve()
    if member.issym() or member.islnk():
        base = (dest / name).parent if member.issym() else dest
        target = (base / member.linkname).resolve()
        if member.linkname.startswith("/") or not target.is_relative_to(root):
            return f"is a link to {member.linkname!r}, outside the bundle"
        return f"is a link (to {member.linkname!r}); a bundle holds only regular files"
    if member.issparse():
        return "is a sparse file; a bundle holds only regular files"
    if not (member.isfile() or member.isdir()):
        return "is a device, FIFO or other special file"
    return None


def require_data_filter() -> None:
    if not hasattr(tarfile, "data_filter"):
        raise BundleError("this Python's tarfile has no 'data' extraction filter (PEP 706), which slimline "
                          "requires to unpack a bundle archive safely.",
                          fix="use Python 3.10.12+, 3.11.4+ or 3.12+, or unpack the bundle with a tool you trust "
                              "and pass the directory.")


def max_bundle_bytes() -> int:
    """The absolute cap on what one archive may write: SLIMLINE_MAX_BUNDLE_MB MiB, 4 GiB by default."""
    raw = os.environ.get(MAX_BUNDLE_MB_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_BUNDLE_MB << 20
    try:
        mb = int(raw)
    except ValueError:
        mb = 0
    if mb <= 0:
        raise BundleError(f"{MAX_BUNDLE_MB_ENV}={raw!r} is not a positive whole number of MiB.",
                          fix=f"set it to e.g. {DEFAULT_MAX_BUNDLE_MB} (MiB), or unset it for the default.")
    return mb << 20


class _MeteredReader:
    """The decompressed tar stream, refusing to hand out more bytes than the current allowance.

    tarfile reads a PAX record or GNU long name into memory whole, before any member is seen; the
    allowance (reset between headers and for each member's data) bounds those reads as well."""

    def __init__(self, raw: BinaryIO, archive: Path) -> None:
        self._raw, self._archive, self._left = raw, archive, HEADER_SLACK_BYTES  # tarfile.open reads a header

    def allow(self, nbytes: int) -> None:
        self._left = nbytes

    def read(self, size: int = -1) -> bytes:
        want = self._left + 1 if size < 0 else min(size, self._left + 1)
        data = self._raw.read(want)
        self._left -= len(data)
        if self._left < 0:
            raise BundleError(f"refusing to extract {self._archive}: a tar header or member holds more data than "
                              "it declares or than a bundle's headers need.", fix=_REFUSED_FIX)
        return data


@dataclass
class _Budget:
    """Running sizes of one extraction, and the limits the manifest (once read) sets."""

    cap_bytes: int
    limit_bytes: int
    recorded: dict[str, int] | None = None
    root: str | None = None  #: the top-level entry, once this extraction created it
    total_bytes: int = 0
    seen: set[str] = field(default_factory=set)

    def refusal(self, rel: str, member: tarfile.TarInfo) -> str | None:
        size = member.size if member.isfile() else 0
        if rel == BUNDLE_MANIFEST and size > MAX_MANIFEST_BYTES:
            return f"declares {size} bytes; a manifest is at most {MAX_MANIFEST_BYTES >> 20} MiB"
        if rel == BUNDLE_SIGNATURE and size > MAX_SIGNATURE_BYTES:
            return f"declares {size} bytes; a signature is at most {MAX_SIGNATURE_BYTES >> 10} KiB"
        if self.recorded is not None and member.isfile() and rel not in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE):
            if rel not in self.recorded:
                return "is not listed in the bundle's manifest"
            if size != self.recorded[rel]:
                return f"declares {size} bytes; the manifest records {self.recorded[rel]}"
        if self.total_bytes + size > self.limit_bytes:
            source = ("the sizes its manifest records" if self.recorded is not None
                      else MAX_BUNDLE_MB_ENV if self.limit_bytes == self.cap_bytes
                      else "what may precede manifest.json")
            return (f"declares {size} bytes, bringing the archive past {self.limit_bytes} bytes "
                    f"(the limit from {source})")
        self.total_bytes += size
        return None

    def read_limits(self, manifest: BundleManifest, manifest_bytes: int) -> None:
        """After manifest.json: each member must have its recorded size, the total at most their sum."""
        self.limit_bytes = self.cap_bytes
        if manifest.file_sizes is not None:
            self.recorded = manifest.file_sizes
            derived = sum(self.recorded.values()) + manifest_bytes + MAX_SIGNATURE_BYTES
            self.limit_bytes = min(self.cap_bytes, derived)


def _refuse(archive: Path, member: tarfile.TarInfo, why: str) -> BundleError:
    return BundleError(f"refusing to extract {archive}: {member.name!r} {why}.", fix=_REFUSED_FIX)


def _checked_members(archive: Path, tar: tarfile.TarFile, reader: _MeteredReader, dest: Path, budget: _Budget,
                     extracting: bool) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Each member with its path inside the bundle, checked at its header (path, kind, one top-level entry,
    repeats, sizes) before the caller reads or writes a byte of it; its data is then allowed through."""
    for count in range(MAX_MEMBERS + 1):
        reader.allow(HEADER_SLACK_BYTES)
        member = tar.next()
        if member is None:
            return
        if count == MAX_MEMBERS:
            raise _refuse(archive, member, f"is member {count + 1}; a bundle archive holds at most {MAX_MEMBERS}")
        why = _refusal(member, dest)
        parts = PurePosixPath(member.name).parts
        if why is None and not parts:
            why = "has an empty name"
        if why is not None:
            raise _refuse(archive, member, why)
        if budget.root is None:
            if extracting and ((dest / parts[0]).exists() or (dest / parts[0]).is_symlink()):
                raise BundleError(f"cannot extract {archive}: {dest / parts[0]} already exists.",
                                  fix="extract into an empty directory.")
            budget.root = parts[0]
        elif parts[0] != budget.root:
            raise BundleError(f"{archive} holds more than one top-level entry ({budget.root!r}, {parts[0]!r}); a "
                              "bundle archive holds one directory.", fix="repack it with `slimline package --tar`.")
        name = PurePosixPath(*parts).as_posix()
        if name in budget.seen:
            raise _refuse(archive, member, "appears twice (a later copy would replace the checked one)")
        budget.seen.add(name)
        rel = PurePosixPath(*parts[1:]).as_posix() if len(parts) > 1 else ""
        if (why := budget.refusal(rel, member)) is not None:
            raise _refuse(archive, member, why)
        reader.allow(member.size + HEADER_SLACK_BYTES if member.isfile() else HEADER_SLACK_BYTES)
        yield member, rel


def _extract_members(archive: Path, tar: tarfile.TarFile, reader: _MeteredReader, dest: Path,
                     budget: _Budget) -> None:
    """Extract member by member into dest, each checked at its header; sets budget.root."""
    for member, rel in _checked_members(archive, tar, reader, dest, budget, extracting=True):
        tar.extract(member, dest, filter="data")
        if rel == BUNDLE_MANIFEST and member.isfile():
            root = dest / str(budget.root)
            budget.read_limits(read_manifest(root), member.size)


@contextlib.contextmanager
def _open_stream(archive: Path) -> Iterator[tuple[tarfile.TarFile, _MeteredReader]]:
    with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        reader = _MeteredReader(gz, archive)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            yield tar, reader


@dataclass(frozen=True)
class TrustFiles:
    """manifest.json and signature.json (None when absent) as the archive holds them, read before extraction."""

    manifest: bytes
    signature: bytes | None


def read_trust_files(archive: Path) -> TrustFiles:
    """Read manifest.json and signature.json out of `archive` without extracting anything, under the same
    checks and size limits as extraction, so a signature can be checked before any data member is written.

    slimline writes them first, so this reads two small members and stops. An archive repacked in sorted
    order (README.md first, signature.json after the model) is read through to its signature: decompressed,
    bounded by the sizes its manifest records, written nowhere."""
    require_data_filter()
    cap = max_bundle_bytes()
    budget = _Budget(cap_bytes=cap, limit_bytes=min(cap, PRE_MANIFEST_BYTES))
    found: dict[str, bytes] = {}
    files_before_manifest = False
    try:
        with _open_stream(archive) as (tar, reader):
            for member, rel in _checked_members(archive, tar, reader, Path(archive).parent / ".slimline-scan",
                                                budget, extracting=False):
                if member.isfile() and rel in (BUNDLE_MANIFEST, BUNDLE_SIGNATURE):
                    handle = tar.extractfile(member)
                    found[rel] = handle.read() if handle is not None else b""
                    if rel == BUNDLE_MANIFEST:
                        budget.read_limits(read_manifest(Path(archive), found[rel]), member.size)
                elif member.isfile():
                    if BUNDLE_MANIFEST in found and not files_before_manifest:
                        break  # slimline's order: the signature would have come right after the manifest
                    files_before_manifest |= BUNDLE_MANIFEST not in found
                if len(found) == 2:
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise BundleError(f"cannot read {archive} as a .tar.gz: {err}.",
                          fix="the archive is damaged or incomplete; fetch it again.") from err
    if BUNDLE_MANIFEST not in found:
        raise BundleError(f"{archive} holds no {BUNDLE_MANIFEST}: it is not a slimline bundle.",
                          fix="pass an archive written by `slimline package --tar`.")
    return TrustFiles(found[BUNDLE_MANIFEST], found.get(BUNDLE_SIGNATURE))


def extract_archive(archive: Path, dest: Path,
                    check_trust: Callable[[TrustFiles], None] | None = None) -> Path:
    """Extract `archive` into `dest`, checking each member before it is written (see the module doc);
    returns the bundle's top-level directory. On a refusal nothing extracted is left behind.

    `check_trust` (a pinned digest, a required signature) runs on the archive's manifest and signature
    before anything is extracted: a forged archive is refused without writing a byte of its data."""
    require_data_filter()
    if check_trust is not None:
        check_trust(read_trust_files(archive))
    cap = max_bundle_bytes()
    budget = _Budget(cap_bytes=cap, limit_bytes=min(cap, PRE_MANIFEST_BYTES))
    try:
        with _open_stream(archive) as (tar, reader):
            _extract_members(archive, tar, reader, dest, budget)
    except BaseException as err:
        if budget.root is not None:
            _remove(dest / budget.root)
        if isinstance(err, (tarfile.TarError, EOFError, OSError, zlib.error)):
            raise BundleError(f"cannot read {archive} as a .tar.gz: {err}.",
                              fix="the archive is damaged or incomplete; fetch it again.") from err
        raise
    if budget.root is None:
        raise BundleError(f"{archive} is an empty archive.", fix="repack it with `slimline package --tar`.")
    return dest / budget.root


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
