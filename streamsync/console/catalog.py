"""The audience files as the console shows them: each definition with the YAML text it
was written as.

The definitions are loaded with the project's loader (the same validation as evaluate),
and each audience's page shows its own part of the file as its author wrote it, comments
included, rather than a re-serialisation that would differ from what is under review.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import audience_files, load_audiences


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    audience: Audience
    #: the file it is defined in, and its own lines of it
    path: Path | None
    yaml_text: str


@dataclass(frozen=True, slots=True)
class Catalog:
    source: Path
    entries: dict[str, CatalogEntry]

    def get(self, name: str) -> CatalogEntry | None:
        return self.entries.get(name)


def load_catalog(path: Path) -> Catalog:
    """Every audience under ``path``; raises the loader's errors as ``load_audiences``."""
    audiences = load_audiences(path)
    texts: dict[str, tuple[Path, str]] = {}
    for file in audience_files(path):
        texts.update(_slices(file))
    entries = {}
    for audience in audiences:
        found = texts.get(audience.name)
        if found is None:
            dumped = audience.model_dump(mode="json", by_alias=True, exclude_none=True)
            entries[audience.name] = CatalogEntry(audience, None, yaml.safe_dump(dumped))
        else:
            entries[audience.name] = CatalogEntry(audience, found[0], found[1])
    return Catalog(path, entries)


def _slices(file: Path) -> dict[str, tuple[Path, str]]:
    """Audience name -> the lines of ``file`` its mapping spans."""
    text = file.read_text("utf-8")
    lines = text.splitlines()
    found: dict[str, tuple[Path, str]] = {}
    for root in yaml.compose_all(text, Loader=yaml.SafeLoader):
        for node in _audience_nodes(root):
            name = _name_of(node)
            if name is None:
                continue
            start, column = node.start_mark.line, node.start_mark.column
            end = node.end_mark.line
            if lines[end : end + 1] and lines[end][: node.end_mark.column].strip():
                end += 1  # the mapping ends inside this line, not before it
            # The first line starts after "- " in a list: align it with the others, then
            # take away the indentation every line of the mapping has.
            chunk = [" " * column + lines[start][column:], *lines[start + 1 : end]]
            body = "\n".join(x[column:] for x in chunk).rstrip()
            found[name] = (file, body + "\n")
    return found


def _audience_nodes(root: yaml.Node | None) -> list[yaml.MappingNode]:
    if isinstance(root, yaml.SequenceNode):
        return [n for n in root.value if isinstance(n, yaml.MappingNode)]
    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "audiences":
                return _audience_nodes(value)
        return [root]
    return []


def _name_of(node: yaml.MappingNode) -> str | None:
    for key, value in node.value:
        if (
            isinstance(key, yaml.ScalarNode)
            and key.value == "name"
            and isinstance(value, yaml.ScalarNode)
        ):
            return str(value.value)
    return None
