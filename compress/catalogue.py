"""The pass catalogue: which pass lives in which module, found without importing any of them.

Each pass module registers its class with `@register("family.name", extra=...)`. Reading those
decorators from the source with `ast` (about 20 small files) lets `slimline passes list`, recipe
validation and `import slimline` stay free of torch/onnxruntime/transformers, while adding a pass
still touches no other file. A pass module is imported only when a recipe names it.
"""

from __future__ import annotations

import ast
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimline.compression.base import Pass, registered, registered_passes

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = __name__.rpartition(".")[0]


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    module: str
    extra: str | None  # the `slimline[extra]` that installs what the pass needs beyond the core


def _literal_kwarg(call: ast.Call, key: str) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == key and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def _registrations(path: Path) -> list[tuple[str, str | None]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for decorator in node.decorator_list:
            if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Name)
                    and decorator.func.id == "register" and decorator.args
                    and isinstance(decorator.args[0], ast.Constant)):
                found.append((str(decorator.args[0].value), _literal_kwarg(decorator, "extra")))
    return found


@functools.cache
def catalogue() -> dict[str, CatalogueEntry]:
    """Every pass by name, sorted; nothing is imported."""
    entries: dict[str, CatalogueEntry] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        relative = path.relative_to(PACKAGE_DIR).with_suffix("")
        module = ".".join([PACKAGE, *relative.parts])
        for name, extra in _registrations(path):
            if name in entries:
                raise RuntimeError(f"pass name {name!r} is registered in {entries[name].module} and {module}")
            entries[name] = CatalogueEntry(name, module, extra)
    return dict(sorted(entries.items()))


def pass_class(name: str) -> type[Pass[Any]] | None:
    """The class of pass `name`, importing only the module that defines it; None for an unknown name.

    A pass registered at run time (a user's own `@register`ed class, already imported) is found too.
    """
    entry = catalogue().get(name)
    if entry is None:
        return registered(name)
    importlib.import_module(entry.module)
    cls = registered(name)
    if cls is None:  # the decorator was found in the source but did not run: a bug in that module
        raise RuntimeError(f"{entry.module} did not register pass {name!r} when imported")
    return cls


def pass_names() -> list[str]:
    """Every known pass name: the catalogue's and any registered at run time; imports nothing."""
    return sorted({*catalogue(), *registered_passes()})


def registry() -> dict[str, type[Pass[Any]]]:
    """All passes by name, importing every pass module (they import heavy libraries lazily)."""
    classes = {name: pass_class(name) for name in catalogue()}
    return dict(sorted({**registered_passes(), **classes}.items()))  # type: ignore[dict-item]
