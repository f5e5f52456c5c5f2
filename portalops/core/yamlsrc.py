"""Load YAML files keeping the line of every key, so errors can name FILE:LINE: key.path.

PyYAML composes a node tree with marks before it builds Python objects; we walk that tree once
to record where each key path starts, reject duplicate keys (PyYAML would silently keep the last
one, hiding a typo), then let the same loader construct the plain data.

Every file is outside input (an inventory, a config a colleague edited), so the load is
bounded: the file's size, how deep it nests, and how many nodes it expands to through aliases
(a few lines of anchors can stand for billions of nodes). Each bound is an error naming the
file, never a MemoryError or RecursionError.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from portalops.core.errors import SourceError

Loc = tuple[str | int, ...]

#: Larger than any estate or config we write by hand (the province's whole estate is ~60 KB).
MAX_BYTES = 16 * 1024 * 1024
#: Nesting deeper than this is not a config; PyYAML's composer recurses once per level.
MAX_DEPTH = 64
#: Nodes after alias expansion: a 20,000-server inventory is about 200,000.
MAX_NODES = 2_000_000


class _TooBig(Exception):
    """The walk gave up: the message says which bound and where."""


@dataclass(frozen=True)
class YamlSource:
    """Data loaded from one YAML file, with the line where every key path is written."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    def line(self, loc: Sequence[str | int]) -> int:
        """Line of the deepest prefix of ``loc`` that is written in the file (1 if none)."""
        best = self.lines.get((), 1)
        prefix: list[str | int] = []
        for part in loc:
            candidate = (*prefix, part)
            if candidate in self.lines:
                prefix.append(part)
                best = self.lines[candidate]
            # Parts that are not in the file (a pydantic union tag, say) are skipped.
        return best

    def where(self, loc: Sequence[str | int]) -> str:
        """``FILE:LINE`` for a key path."""
        return f"{self.path}:{self.line(loc)}"


def dotted(loc: Sequence[str | int]) -> str:
    """``backup.sources[2].paths`` for ``('backup', 'sources', 2, 'paths')``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def load_yaml(path: Path) -> YamlSource:
    """Read and parse ``path``; syntax errors and duplicate keys raise SourceError."""
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SourceError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise SourceError([f"{path}: cannot read: {exc.strerror}"]) from None
    if len(raw) > MAX_BYTES:
        raise SourceError(
            [f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MiB: not a file to load"]
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SourceError([f"{path}:{line}: not UTF-8 text (Art. 3.1: use Unicode)"]) from None
    # Names may arrive decomposed (NFD) from some editors; the estate works in NFC.
    text = unicodedata.normalize("NFC", text)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlSource(path, None, {(): 1})
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        problems: list[str] = []
        _Walk(path, lines, problems).node(node, ())
        if problems:
            raise SourceError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or exc.context or "invalid YAML"
        raise SourceError([f"{path}:{line}: YAML syntax error: {what}"]) from None
    except yaml.YAMLError as exc:
        raise SourceError([f"{path}:1: YAML error: {exc}"]) from None
    except _TooBig as exc:
        raise SourceError([f"{path}:{exc}"]) from None
    except RecursionError:  # the composer itself, before our depth check could see the tree
        raise SourceError([f"{path}: nested too deeply (more than {MAX_DEPTH} levels)"]) from None
    finally:
        loader.dispose()
    return YamlSource(path, data, lines)


class _Walk:
    """One pass over the node tree: the line of every key path, duplicate keys, and the
    bounds (depth, expanded size, alias cycles)."""

    def __init__(self, path: Path, lines: dict[Loc, int], problems: list[str]) -> None:
        self.path = path
        self.lines = lines
        self.problems = problems
        self.count = 0
        self.open: set[int] = set()  # the nodes on the current path: an alias back is a cycle

    def node(self, node: yaml.Node, loc: Loc) -> None:
        line = node.start_mark.line + 1
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(f"{line}: more than {MAX_NODES:,} values once aliases are expanded")
        if len(loc) > MAX_DEPTH:
            raise _TooBig(f"{line}: nested more than {MAX_DEPTH} levels deep")
        if id(node) in self.open:
            raise _TooBig(f"{line}: {dotted(loc)}: an alias refers to a value that has it")
        if isinstance(node, yaml.MappingNode):
            self.open.add(id(node))
            self._mapping(node, loc)
            self.open.discard(id(node))
        elif isinstance(node, yaml.SequenceNode):
            self.open.add(id(node))
            for index, item in enumerate(node.value):
                self.lines[(*loc, index)] = item.start_mark.line + 1
                self.node(item, (*loc, index))
            self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> None:
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line = key_node.start_mark.line + 1
                self.problems.append(f"{self.path}:{line}: keys must be plain text")
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                self.problems.append(
                    f"{self.path}:{line}: {dotted((*loc, key))}: duplicate key "
                    f"(first written on line {seen[key]})"
                )
                continue
            seen[key] = line
            self.lines[(*loc, key)] = line
            self.node(value_node, (*loc, key))
