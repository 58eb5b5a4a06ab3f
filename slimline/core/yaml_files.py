"""Reading the user's YAML files (profiles, recipes) with one kind of error for each way it can fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from slimline.core.errors import BadInputError


def load_yaml_file(path: Path, error: type[BadInputError], kind: str) -> Any:
    """Parse `path`; a missing file or invalid YAML raises `error` naming the file and the fix."""
    if not path.is_file():
        raise error(f"{kind} file {path} does not exist.", fix=f"check the --{kind} path.")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise error(f"{kind} {path} is not valid YAML: {err}.", fix="fix the YAML syntax.") from err
