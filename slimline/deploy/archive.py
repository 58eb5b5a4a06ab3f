"""A bundle as one .tar.gz: written reproducibly, extracted defensively.

Extraction refuses, before writing anything, every member that is an absolute path, has a `..`
component, would land outside the destination, or is a link or special file; a bundle holds only
regular files and directories under one top-level directory. tarfile's "data" filter (PEP 706) then
runs as a second guard; a Python without it (before 3.10.12 / 3.11.4) is refused rather than falling
back to an unfiltered extraction.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from slimline.core.artifact import describe_os_error
from slimline.core.errors import BundleError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def _normalised(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = mtime
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def write_archive(bundle_dir: Path, archive: Path) -> Path:
    """Write `archive` (a temporary sibling, then renamed): sorted members, fixed owner, mode and times."""
    mtime = int(os.stat(bundle_dir / "manifest.json").st_mtime)
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=mtime) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            paths = [bundle_dir, *sorted(bundle_dir.rglob("*"))]
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


def _refusal(member: tarfile.TarInfo, dest: Path) -> str | None:
    """Why `member` must not be extracted into `dest`, or None when it is a plain file or directory inside."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in parts or ".." in name.replace("\\", "/").split("/"):
        return "has a '..' component"
    root = dest.resolve()
    if not (dest / name).resolve().is_relative_to(root):
        return "would be written outside the bundle"
    if member.issym() or member.islnk():
        base = (dest / name).parent if member.issym() else dest
        target = (base / member.linkname).resolve()
        if member.linkname.startswith("/") or not target.is_relative_to(root):
            return f"is a link to {member.linkname!r}, outside the bundle"
        return f"is a link (to {member.linkname!r}); a bundle holds only regular files"
    if not (member.isfile() or member.isdir()):
        return "is a device, FIFO or other special file"
    return None


def require_data_filter() -> None:
    if not hasattr(tarfile, "data_filter"):
        raise BundleError("this Python's tarfile has no 'data' extraction filter (PEP 706), which slimline "
                          "requires to unpack a bundle archive safely.",
                          fix="use Python 3.10.12+, 3.11.4+ or 3.12+, or unpack the bundle with a tool you trust "
                              "and pass the directory.")


def extract_archive(archive: Path, dest: Path) -> Path:
    """Check every member, then extract into `dest`; returns the bundle's top-level directory."""
    require_data_filter()
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = tar.getmembers()
            refused = [f"{m.name!r} {why}" for m in members if (why := _refusal(m, dest)) is not None]
            if refused:
                raise BundleError(f"refusing to extract {archive}: " + "; ".join(refused[:5])
                                  + (f" (and {len(refused) - 5} more)" if len(refused) > 5 else "") + ".",
                                  fix="this archive was not written by `slimline package`; do not use it.")
            roots = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
            if len(roots) != 1:
                raise BundleError(f"{archive} holds {len(roots)} top-level entries; a bundle archive holds one "
                                  "directory.", fix="repack it with `slimline package --tar`.")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise BundleError(f"cannot read {archive} as a .tar.gz: {err}.",
                          fix="the archive is damaged or incomplete; fetch it again.") from err
    return dest / roots.pop()
