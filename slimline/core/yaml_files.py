"""Reading the user's YAML files (profiles, recipes) with one kind of error for each way it can fail.

Hostile input is bounded before it is built: a file over `MAX_YAML_BYTES` is refused unread, and the
composed node graph is measured with every alias expanded (memoised, so a "billion laughs" file of a
few hundred bytes costs a few hundred steps) and refused past `MAX_YAML_NODES`. PyYAML itself shares
aliased objects, but anything that walks the result (validation, a repr in an error message, a JSON
dump) would expand them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from slimline.core.errors import BadInputError

#: A profile or recipe is a few kB; 1 MiB leaves room for comments and long recipes.
MAX_YAML_BYTES = 1 << 20
#: Nodes after alias expansion: real profiles and recipes have a few hundred.
MAX_YAML_NODES = 20_000


def expanded_node_count(root: yaml.Node, limit: int = MAX_YAML_NODES) -> int:
    """Nodes in the document with aliases expanded; stops counting as soon as it passes `limit`."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        sizes[id(node)] = limit + 1  # a cycle (a node that contains itself) counts as too large
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(node)] = min(total, limit + 1)
        return sizes[id(node)]

    return size(root)


def parse_yaml_text(text: str, error: type[BadInputError], what: str) -> Any:
    """Parse one YAML document, refusing alias bombs and cycles before anything is constructed."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            return None
        nodes = expanded_node_count(root)
        if nodes > MAX_YAML_NODES:
            raise error(f"{what} expands to more than {MAX_YAML_NODES:,} YAML nodes (anchors and aliases "
                        "repeated inside each other, or a self-referencing alias).",
                        fix="write the values out; profiles and recipes need no nested aliases.")
        return yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as err:
        raise error(f"{what} is not valid YAML: {str(err)[:300]}.", fix="fix the YAML syntax.") from err
    except RecursionError as err:
        raise error(f"{what} nests too deeply to be a profile or recipe.", fix="flatten it.") from err


def load_yaml_file(path: Path, error: type[BadInputError], kind: str) -> Any:
    """Parse `path`; a missing, oversized or invalid file raises `error` naming the file and the fix."""
    if not path.is_file():
        raise error(f"{kind} file {path} does not exist.", fix=f"check the --{kind} path.")
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise error(f"{kind} {path} is {size / 2**20:.1f} MiB; a {kind} file may be at most "
                    f"{MAX_YAML_BYTES // 2**20} MiB.", fix=f"check that {path} is really a {kind}.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{kind} {path} is not UTF-8 text: {err.reason} at byte {err.start}.",
                    fix="save it as UTF-8.") from err
    return parse_yaml_text(text, error, f"{kind} {path}")
