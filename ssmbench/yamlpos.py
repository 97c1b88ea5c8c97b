"""Load YAML keeping the line of every value, so errors can point at the file and line.

PyYAML's node graph has the marks; this turns it into plain Python objects plus a
``{field path: line}`` map (paths are tuples of keys and list indices, as pydantic reports them).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ssmbench.errors import SpecError

Path_ = tuple[str | int, ...]


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's yes/no/on/off booleans: `pdl: [on, off]` stays strings."""


_PlainLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlainLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_documents(path: str | Path) -> list[tuple[object, dict[Path_, int]]]:
    """Parse every YAML document in ``path``; for each, (data, lines) where ``lines[path]`` is the
    1-based line (in the whole file) of the value at that field path."""
    text = Path(path).read_text()
    try:
        nodes = list(yaml.compose_all(text, Loader=_PlainLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(str(path), "", f"not valid YAML: {getattr(exc, 'problem', exc)}", line=line) from None
    docs = []
    for node in nodes:
        lines: dict[Path_, int] = {}
        if node is None:
            continue
        docs.append((_convert(node, (), lines, _PlainLoader(""), str(path)), lines))
    return docs


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int], loader: yaml.Loader, file: str) -> object:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[object, object] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in out:
                raise SpecError(file, ".".join(map(str, path + (key,))), "duplicate key",
                                line=key_node.start_mark.line + 1)
            out[key] = _convert(value_node, path + (key,), lines, loader, file)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines, loader, file) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path`` or of its nearest ancestor that has one."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None
