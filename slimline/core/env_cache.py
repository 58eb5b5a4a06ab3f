"""Facts about this Python environment that take seconds to find and change only when it changes, cached.

`slimline doctor` imports the whole export stack in a fresh interpreter (torch, transformers, optimum,
onnxruntime: 4-30 s depending on the machine's load) and asks torch about CUDA (another 2 s to import
torch). Neither answer can change unless the environment does, so each is kept per environment, keyed on
the interpreter and its import path, every installed distribution's name, version and install time (a
`--force-reinstall` of the same version is a new key), and what decides GPU visibility (the NVIDIA
driver's version file, the device nodes, CUDA_VISIBLE_DEVICES). A stale answer needs someone editing
site-packages in place; `slimline doctor --refresh` probes again regardless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slimline.core.paths import cache_root

CACHE_VERSION = 1


def _distributions() -> list[str]:
    import importlib.metadata

    entries = []
    for dist in importlib.metadata.distributions():
        where = getattr(dist, "_path", None)  # the .dist-info directory: its mtime changes on every (re)install
        try:
            stamp = os.stat(where).st_mtime_ns if where is not None else 0
        except OSError:
            stamp = 0
        entries.append(f"{dist.name}=={dist.version}@{stamp}")
    return sorted(entries)


def _gpu_fingerprint() -> list[str]:
    facts = [f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}"]
    try:
        facts.append(Path("/proc/driver/nvidia/version").read_text()[:500])
    except OSError:
        facts.append("no NVIDIA driver")
    with contextlib.suppress(OSError):
        facts += sorted(name for name in os.listdir("/dev") if name.startswith("nvidia"))
    return facts


def environment_key() -> str:
    """sha256 over what an environment probe's answer depends on (see the module docstring)."""
    parts = [f"v{CACHE_VERSION}", sys.executable, sys.version, *sys.path, *_distributions(), *_gpu_fingerprint()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cache_file(key: str) -> Path:
    return cache_root() / "environments" / f"{key[:24]}.json"


def per_environment(name: str, compute: Callable[[], Any], *, refresh: bool = False,
                    keep: Callable[[Any], bool] = lambda value: True) -> tuple[Any, str | None]:
    """(the JSON-able answer of `compute`, when it was probed if it came from the cache, else None).

    `keep(value)` decides whether an answer is worth keeping: the doctor keeps a failed import probe out of
    the cache, so a fix shows at the next run. A cache that cannot be read or written is ignored: the answer
    is then computed every time, never wrong."""
    key = environment_key()
    path = _cache_file(key)
    entries: dict[str, Any] = {}
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            entries = stored.get("entries", {})
    except (OSError, ValueError, AttributeError):
        entries = {}
    if not refresh and name in entries:
        return entries[name]["value"], entries[name]["at"]
    value = compute()
    if keep(value):
        entries[name] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "value": value}
        from slimline.core.artifact import atomic_write_text
        from slimline.core.errors import SlimlineError

        with contextlib.suppress(OSError, SlimlineError):  # a read-only cache directory: no cache, still right
            atomic_write_text(path, json.dumps({"key": key, "entries": entries}, indent=1))
    return value, None
