"""Load YAML keeping the line of every value, so errors can point at the file and line.

PyYAML's node graph has the marks; this turns it into plain Python objects plus a
``{field path: line}`` map (paths are tuples of keys and list indices, as pydantic reports them).

A spec is untrusted input, so the loader is defensive: bytes that are not UTF-8 text, files over
``MAX_SPEC_BYTES``, nesting deeper than ``MAX_DEPTH``, alias expansion past ``MAX_NODES``
values (billion laughs), recursive aliases, tags other than the plain scalar/list/mapping
ones, and keys that are not strings are all a `SpecError` with a line, never a traceback.
Merge keys (``<<: *defaults``) are supported, as YAML 1.1 defines them.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor

from ssmbench.errors import SpecError

Path_ = tuple[str | int, ...]

MAX_SPEC_BYTES = 1 << 20
"""Spec files are hand-written and small; anything bigger is a mistake (or an attack)."""
MAX_DEPTH = 32
"""Nesting levels of lists/mappings (the deepest real spec path is about 6)."""
MAX_NODES = 100_000
"""Values in one document after alias expansion."""
MAX_DOCUMENTS = 100
"""Documents (sweeps) in one file."""

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_SEQ, _MAP, _MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"
_SCALAR_TAGS = (_STR, _INT, _FLOAT, _BOOL, _NULL)
ALLOWED_TAGS = "!!str, !!int, !!float, !!bool, !!null, !!seq, !!map"

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: 5x faster


class _PlainLoader(_Base):  # type: ignore[misc, valid-type]
    """Safe loading with YAML 1.2-ish implicit types: no yes/no/on/off booleans (`pdl: [on, off]`
    stays strings), no implicit timestamps (`name: 2026-01-01` is a string) and no ``=`` value
    tag. Only null, bool (true/false), int, float and the ``<<`` merge key are resolved."""


_KEEP = {_NULL, _INT, _FLOAT, _MERGE}
_PlainLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag in _KEEP]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_PlainLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

_constructor = SafeConstructor()
_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
         codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}


def read_text(path: str | Path) -> str:
    """The file as text, or a SpecError saying why it is not a UTF-8 text spec (size, encoding,
    binary). A UTF-8 byte-order mark is accepted and dropped."""
    file = str(path)
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(file, "", f"the file is {size} bytes; a spec may be at most {MAX_SPEC_BYTES} bytes (1 MiB)")
    with path.open("rb") as fh:
        data = fh.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:  # grew while we looked, or not a regular size
        raise SpecError(file, "", f"the file is over {MAX_SPEC_BYTES} bytes; a spec may be at most 1 MiB")
    if not data.strip():
        raise SpecError(file, "", "the file is empty; a sweep spec is a YAML mapping (see docs/spec-format.md)")
    for bom, name in _BOMS.items():  # UTF-32 LE starts with the UTF-16 LE mark: longest first
        if data.startswith(bom):
            raise SpecError(file, "", f"not a UTF-8 text file (it starts with a {name} byte-order mark); "
                            "save it as UTF-8")
    data = data.removeprefix(codecs.BOM_UTF8)
    if b"\0" in data:
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise SpecError(file, "", "not a UTF-8 text file (it holds NUL bytes: binary, or UTF-16/32 without "
                        "a byte-order mark)", line=line)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SpecError(file, "", f"not a UTF-8 text file (byte 0x{data[exc.start]:02x} at offset {exc.start} "
                        "is not UTF-8)", line=line) from None


def _yaml_error(file: str, text: str, exc: yaml.YAMLError) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    position = getattr(exc, "position", None)  # a ReaderError (a character YAML does not allow)
    if line is None and isinstance(position, int):
        line = text.count("\n", 0, position) + 1
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return SpecError(file, "", f"not valid YAML: {problem}", line=line)


def _check_nesting(text: str, file: str) -> None:
    """Refuse deep nesting (and a flood of documents) from the event stream, which is iterative,
    before composing: the composer recurses per level (in C with libyaml, where no RecursionError
    would save us)."""
    depth = documents = 0
    for event in yaml.parse(text, Loader=_PlainLoader):
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 10 * MAX_DOCUMENTS:  # empty ones included; the exact count comes later
                raise SpecError(file, "", f"more than {MAX_DOCUMENTS} documents in one file",
                                line=event.start_mark.line + 1)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError(file, "", f"nested more than {MAX_DEPTH} levels deep",
                                line=event.start_mark.line + 1)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def load_documents(path: str | Path) -> list[tuple[object, dict[Path_, int]]]:
    """Parse every YAML document in ``path``; for each, (data, lines) where ``lines[path]`` is the
    1-based line (in the whole file) of the value at that field path. Empty documents (e.g. after
    a trailing ``---``) are skipped."""
    file = str(path)
    text = read_text(path)
    try:
        _check_nesting(text, file)
        nodes = list(yaml.compose_all(text, Loader=_PlainLoader))
    except yaml.YAMLError as exc:
        raise _yaml_error(file, text, exc) from None
    except RecursionError:  # belt and braces: _check_nesting should have refused it
        raise SpecError(file, "", f"nested more than {MAX_DEPTH} levels deep") from None
    docs = []
    for node in nodes:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL):
            continue
        if len(docs) == MAX_DOCUMENTS:
            raise SpecError(file, "", f"more than {MAX_DOCUMENTS} documents in one file", line=_line(node))
        _measure(node, 0, {}, set(), file)
        lines: dict[Path_, int] = {}
        docs.append((_convert(node, (), lines, file), lines))
    return docs


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _measure(node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], active: set[int],
             file: str) -> tuple[int, int]:
    """(values, height) of the node with aliases expanded, memoized per node so an alias bomb is
    sized without being expanded; refuses recursion, depth and size past the limits."""
    key = id(node)
    if key in active:
        raise SpecError(file, "", "recursive alias (a list or mapping that contains itself)", line=_line(node))
    if key not in memo:
        if depth > MAX_DEPTH:
            raise SpecError(file, "", f"nested more than {MAX_DEPTH} levels deep (with aliases expanded)",
                            line=_line(node))
        size, height = 1, 0
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(key)
            children = node.value if isinstance(node, yaml.SequenceNode) else [n for kv in node.value for n in kv]
            for child in children:
                s, h = _measure(child, depth + 1, memo, active, file)
                size, height = size + s, max(height, h + 1)
                if size > MAX_NODES:
                    raise SpecError(file, "", f"more than {MAX_NODES} values (aliases expanded): "
                                    "too big for a spec", line=_line(node))
            active.discard(key)
        memo[key] = (size, height)
    size, height = memo[key]
    if depth + height > MAX_DEPTH:
        raise SpecError(file, "", f"nested more than {MAX_DEPTH} levels deep (with aliases expanded)",
                        line=_line(node))
    return size, height


def _field(path: Path_) -> str:
    return ".".join(map(str, path))


def _scalar(node: yaml.ScalarNode, path: Path_, file: str) -> object:
    """A plain scalar; explicit tags beyond the standard scalar ones are refused."""
    tag = node.tag
    if tag not in _SCALAR_TAGS:
        raise SpecError(file, _field(path), "unsupported YAML tag on a value", line=_line(node), value=tag,
                        allowed=ALLOWED_TAGS)
    try:
        if tag == _STR:
            return node.value
        if tag == _INT:
            return _constructor.construct_yaml_int(node)
        if tag == _FLOAT:
            return _constructor.construct_yaml_float(node)
        if tag == _BOOL:
            return _constructor.construct_yaml_bool(node)
        return None
    except (ValueError, KeyError, yaml.YAMLError):
        kind = tag.removeprefix(_TAG)
        raise SpecError(file, _field(path), f"not a valid {kind}", line=_line(node), value=node.value[:80]) from None


def _key(node: yaml.Node, path: Path_, file: str) -> str:
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR:
        return node.value
    shown = node.value[:80] if isinstance(node, yaml.ScalarNode) else type(node).__name__.removesuffix("Node").lower()
    raise SpecError(file, _field(path), "a key must be a string (quote it)", line=_line(node), value=shown)


def _merge_sources(node: yaml.Node, path: Path_, file: str) -> list[yaml.MappingNode]:
    """The mappings a ``<<`` key merges, highest precedence first (YAML 1.1 merge key)."""
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not all(isinstance(item, yaml.MappingNode) for item in items):
        raise SpecError(file, _field(path + ("<<",)), "a merge key '<<' takes a mapping or a list of mappings",
                        line=_line(node))
    return items


def _convert(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str) -> object:
    """Plain Python data from a measured node graph (so recursion depth is bounded)."""
    if isinstance(node, yaml.MappingNode):
        if node.tag != _MAP:
            raise SpecError(file, _field(path), "unsupported YAML tag on a mapping", line=_line(node),
                            value=node.tag, allowed=ALLOWED_TAGS)
        out: dict[str, object] = {}
        sources: list[yaml.MappingNode] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                sources += _merge_sources(value_node, path, file)
                continue
            key = _key(key_node, path, file)
            if key in out:
                raise SpecError(file, _field(path + (key,)), "duplicate key", line=_line(key_node))
            out[key] = _convert(value_node, path + (key,), lines, file)
            lines[path + (key,)] = _line(key_node)
        for source in sources:  # explicit keys win, then earlier sources over later ones
            merged_lines: dict[Path_, int] = {}
            merged = _convert(source, path, merged_lines, file)
            assert isinstance(merged, dict)
            for key, value in merged.items():
                if key not in out:
                    out[key] = value
                    lines.update((p, n) for p, n in merged_lines.items() if p[:len(path) + 1] == path + (key,))
        lines[path] = _line(node)
        return out
    lines[path] = _line(node)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != _SEQ:
            raise SpecError(file, _field(path), "unsupported YAML tag on a list", line=_line(node),
                            value=node.tag, allowed=ALLOWED_TAGS)
        return [_convert(item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node, path, file)


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path`` or of its nearest ancestor that has one."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None
