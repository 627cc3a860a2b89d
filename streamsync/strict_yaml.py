"""YAML for files people write (audience definitions, the configuration): parsed once, strictly.

PyYAML's ``safe_load`` silently keeps the last of two equal mapping keys, recurses once
per nesting level (a file nested a few thousand levels deep ends in ``RecursionError``),
expands aliases without limit (a few lines of anchors become billions of nodes) and lets
``ValueError`` escape for values such as ``2026-13-45``. :func:`parse_yaml` composes the
node tree once - the nodes carry the line marks error messages need - and constructs the
data from that same tree, so a large file is scanned once. Its failures are two
exceptions with a line number: :class:`YamlTextError` (not text we accept at all) and
:class:`YamlSyntaxError` (text, but not valid YAML). Duplicate keys are collected, not
raised, so a caller can report every one of them with its line.

The scanner is libyaml's when PyYAML was built with it (several times faster); the
composer is always PyYAML's Python one, because that is where depth is bounded.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

#: Deepest nesting of collections accepted (counting through aliases). Audience
#: definitions need about ten levels; the bound keeps every recursive consumer safe.
MAX_DEPTH = 64
#: Aliases may expand the document to at most this many times its own node count (and at
#: least this floor), which rules out "billion laughs" documents.
MAX_EXPANSION = 10
EXPANSION_FLOOR = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_SHOWN = 60


class YamlTextError(ValueError):
    """The input is not YAML text this project reads: not UTF-8, control characters,
    nested deeper than :data:`MAX_DEPTH`, or aliases that refer to themselves or expand
    too far. ``line`` is 1-based (0 when unknown)."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


class YamlSyntaxError(ValueError):
    """The input is text but not valid YAML (or holds a value YAML cannot construct).
    The reason names the problem only; it never quotes the offending line, which may
    hold a secret."""

    def __init__(self, line: int, reason: str) -> None:
        self.line = line
        self.reason = reason
        super().__init__(f"line {line}: {reason}" if line else reason)


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    """A mapping key written twice; YAML keeps the later value."""

    key: str
    line: int
    first_line: int

    def __str__(self) -> str:
        return f"duplicate key {self.key!r} (first at line {self.first_line})"


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """One parsed document: the node tree (``None`` for an empty file), the data built
    from it, and every duplicate key in file order."""

    node: Node | None
    data: Any
    duplicate_keys: list[DuplicateKey] = field(default_factory=list)


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _Line:
    """A node's position, reduced to its line: all that error messages use. Shared by the
    nodes of one line, it replaces PyYAML's two full marks per node, which are most of
    the memory of a large file's node tree."""

    __slots__ = ("line",)

    def __init__(self, line: int) -> None:
        self.line = line


class _StrictComposer(Composer):
    """PyYAML's composer with a depth bound; records whether any alias was used."""

    _depth: int
    _aliased: bool
    _lines: dict[int, _Line]

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        events: Any = self  # the parser half of the loader supplies the event methods
        if self._depth >= MAX_DEPTH:
            raise _TooDeep(events.peek_event().start_mark.line + 1)
        if events.check_event(yaml.AliasEvent):
            self._aliased = True
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            line = node.start_mark.line
            mark = self._lines.get(line)
            if mark is None:
                mark = self._lines[line] = _Line(line)
            node.start_mark = node.end_mark = mark
        return node


class _StrictConstructor(SafeConstructor):
    """Safe construction that records duplicate keys and turns a value Python rejects
    (``2026-13-45`` as a date) into a marked YAML error instead of a bare ``ValueError``."""

    duplicates: list[DuplicateKey]

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # PyYAML's value constructors raise whatever Python does
            raise ConstructorError(
                None, None, f"cannot read this value ({type(exc).__name__})", node.start_mark
            ) from None

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                ident = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if ident in seen:
                    shown = key_node.value[:_KEY_SHOWN]
                    self.duplicates.append(DuplicateKey(shown, line, seen[ident]))
                else:
                    seen[ident] = line
        return super().construct_mapping(node, deep)


def _make_loader(text: str) -> Any:
    try:
        from yaml.cyaml import CParser  # type: ignore[attr-defined]
    except ImportError:  # PyYAML without libyaml: the pure-Python scanner and parser
        from yaml.parser import Parser
        from yaml.reader import Reader
        from yaml.scanner import Scanner

        class PyLoader(Reader, Scanner, Parser, _StrictComposer, _StrictConstructor, Resolver):
            def __init__(self, stream: str) -> None:
                Reader.__init__(self, stream)
                Scanner.__init__(self)
                Parser.__init__(self)
                _StrictComposer.__init__(self)
                _StrictConstructor.__init__(self)
                Resolver.__init__(self)

        return PyLoader(text)

    # The composer comes before CParser so that its Python compose_node (with the depth
    # bound) is used, fed by libyaml's events.
    class CLoader(_StrictComposer, CParser, _StrictConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _StrictComposer.__init__(self)
            _StrictConstructor.__init__(self)
            Resolver.__init__(self)

    return CLoader(text)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_aliases(root: Node) -> None:
    """Reject alias graphs that loop or expand past the bounds (iteratively: the graph
    may be deeper than the stack)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        kids = _children(node)
        if finished:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            if depth[key] > MAX_DEPTH:
                raise YamlTextError(
                    node.start_mark.line + 1,
                    f"nested more than {MAX_DEPTH} levels deep (through aliases)",
                )
            continue
        if key in size:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for kid in kids:
            if id(kid) in open_nodes:
                raise YamlTextError(kid.start_mark.line + 1, "an alias refers to itself")
            if id(kid) not in size:
                stack.append((kid, False))
    limit = max(EXPANSION_FLOOR, MAX_EXPANSION * len(size))
    if size[id(root)] > limit:
        raise YamlTextError(
            root.start_mark.line + 1,
            f"aliases expand the document to {size[id(root)]:,} nodes (limit {limit:,})",
        )


def _line_of(exc: yaml.YAMLError, text: str) -> int:
    """1-based line of an error; an error at the end of the stream is on the last line
    (libyaml places it after the final line break)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line = int(mark.line) + 1
    else:
        position = getattr(exc, "position", None)
        if not isinstance(position, int):
            return 0
        line = text.count("\n", 0, position) + 1
    return min(line, max(1, len(text.splitlines())))


def decode_text(raw: bytes) -> str:
    """UTF-8 text (a BOM is allowed), or :class:`YamlTextError` naming the line of the
    first byte that is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise YamlTextError(line, "not UTF-8 text (is it a binary file?)") from None


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building a large acyclic structure: its
    passes over the growing heap would otherwise make loading a big file quadratic."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_yaml(raw: bytes | str) -> YamlDocument:
    """Parse one YAML document strictly; see the module docstring."""
    with gc_paused():
        return _parse(raw)


def _parse(raw: bytes | str) -> YamlDocument:
    text = decode_text(raw) if isinstance(raw, bytes) else raw
    loader = _make_loader(text)
    loader.duplicates = []
    loader._lines = {}
    loader._depth = 0
    loader._aliased = False
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(None, None, [])
        if loader._aliased:
            _check_aliases(node)
        data = loader.construct_document(node)
    except _TooDeep as exc:
        raise YamlTextError(exc.line, f"nested more than {MAX_DEPTH} levels deep") from None
    except yaml.reader.ReaderError as exc:
        raise YamlTextError(
            _line_of(exc, text), "not a text file: it holds control characters"
        ) from None
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml's own bound, met while scanning
            raise YamlTextError(
                _line_of(exc, text), f"nested more than {MAX_DEPTH} levels deep"
            ) from None
        line, context, at = _line_of(exc, text), exc.context, exc.context_mark
        if context and at is not None and at.line + 1 < line:
            context = f"{context} (line {at.line + 1})"
        reason = ": ".join(part for part in (context, exc.problem) if part) or "syntax error"
        raise YamlSyntaxError(line, reason) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(_line_of(exc, text), type(exc).__name__) from None
    finally:
        loader.dispose()
    return YamlDocument(node, data, list(loader.duplicates))
