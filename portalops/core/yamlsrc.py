"""Load YAML files keeping the line of every key, so errors can name FILE:LINE: key.path.

PyYAML composes a node tree with marks before it builds Python objects; we walk that tree once
to record where each key path starts, reject duplicate keys (PyYAML would silently keep the last
one, hiding a typo), then let the same loader construct the plain data.
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
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SourceError([f"{path}: file not found"]) from None
    except OSError as exc:
        raise SourceError([f"{path}: cannot read: {exc.strerror}"]) from None
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
        _walk(node, (), lines, problems, path)
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
    finally:
        loader.dispose()
    return YamlSource(path, data, lines)


def _walk(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[str], path: Path
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.append(f"{path}:{key_node.start_mark.line + 1}: keys must be plain text")
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    f"{path}:{line}: {dotted((*loc, key))}: duplicate key "
                    f"(first written on line {seen[key]})"
                )
                continue
            seen[key] = line
            lines[(*loc, key)] = line
            _walk(value_node, (*loc, key), lines, problems, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _walk(item, (*loc, index), lines, problems, path)
