"""YAML text to plain data plus the line and column of every key and value.

Configuration errors must say where in the file the problem is. PyYAML's composer
keeps a mark on every node; this module walks the node tree once, builds the same
data ``yaml.safe_load`` would, and records for each key path (a tuple of mapping keys
and list indexes) where its value starts and where its key starts. Duplicate keys,
which ``safe_load`` would silently collapse, are reported as problems.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass
class Located:
    """Data loaded from YAML with the position of every path in it (1-based)."""

    data: Any
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    duplicates: list[tuple[Path_, tuple[int, int]]] = field(default_factory=list)

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in table:
                return table[prefix]
            if prefix in self.values:
                return self.values[prefix]
        return (1, 1)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def load(text: str) -> Located:
    """Parse ``text``; raises ``yaml.YAMLError`` (with a problem_mark) on bad syntax."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        located = Located(data=None)
        if root is not None:
            located.data = _walk(loader, root, (), located)
        return located
    finally:
        loader.dispose()


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, out: Located) -> Any:
    out.values[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<) as safe_load does
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                key = str(key)
            child = (*path, str(key))
            if key in result:
                out.duplicates.append((child, _mark(key_node)))
            out.keys[child] = _mark(key_node)
            result[key] = _walk(loader, value_node, child, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, (*path, i), out) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
