"""Preview a change: a pasted or uploaded definition checked and merged with the running
ones, as ``streamsync audiences diff`` is given them.

What is pasted is usually one changed audience, not the whole set. The definitions the
diff compares are therefore the running ones with each pasted audience put in place of
the one of its name (a new name is an added audience; nothing pasted removes one). Both
are validated together with the project's loader, exactly as ``streamsync validate``
would see the merged set (an ``in_audience`` reference to a running audience resolves),
from a temporary directory holding the pasted text as written and the running
definitions as their files have them. The first error is the page's one line, with the
temporary paths named for what they hold.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from streamsync.audiences.definition import Audience
from streamsync.audiences.loader import AudienceFileError, check_audience_count
from streamsync.console.catalog import Catalog

#: Largest definition the page accepts, in bytes (UTF-8): hundreds of audiences.
PREVIEW_MAX_BYTES = 48 * 1024
PASTED = "the pasted definition"
RUNNING = "the running definitions"


class PreviewRefused(ValueError):
    """The pasted text is not a valid change; the message is one line for the page."""


@dataclass(frozen=True, slots=True)
class PreviewSets:
    """The definitions a preview compares."""

    current: list[Audience]
    new: list[Audience]
    #: the names the pasted text defines
    pasted: list[str]


def preview_sets(catalog: Catalog, text: str) -> PreviewSets:
    """The running definitions and the changed set, or :class:`PreviewRefused`."""
    if not text.strip():
        raise PreviewRefused("nothing pasted or uploaded: paste a changed audience definition")
    if len(text.encode("utf-8")) > PREVIEW_MAX_BYTES:
        raise PreviewRefused(f"the definition is over {PREVIEW_MAX_BYTES // 1024} KiB")
    names = _names(text)
    current = [entry.audience for entry in catalog.entries.values()]
    kept = [entry for name, entry in catalog.entries.items() if name not in names]
    with tempfile.TemporaryDirectory(prefix="streamsync-preview-") as tmp:
        pasted_file = Path(tmp) / "pasted.yaml"
        running_file = Path(tmp) / "running.yaml"
        pasted_file.write_text(text, "utf-8")
        if kept:
            running_file.write_text("audiences:\n" + "".join(_item(e.yaml_text) for e in kept))
        try:
            new, problems, _checked = check_audience_count(tmp)
        except AudienceFileError as exc:
            raise PreviewRefused(_named(str(exc), pasted_file, running_file)) from None
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        first = _named(str(errors[0]), pasted_file, running_file)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise PreviewRefused(" ".join(first.split()) + more)
    return PreviewSets(current, new, sorted(names))


def _names(text: str) -> set[str]:
    """The audience names the text defines (a first, lenient read: the loader checks
    everything else, and reports what this cannot read)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return set()  # the loader names the line
    if isinstance(data, dict) and "audiences" in data:
        data = data["audiences"]
    items = data if isinstance(data, list) else [data]
    return {str(i["name"]) for i in items if isinstance(i, dict) and isinstance(i.get("name"), str)}


def _item(yaml_text: str) -> str:
    """One audience's own YAML as an item of an ``audiences:`` list."""
    lines = yaml_text.rstrip("\n").splitlines()
    return "".join(("  - " if i == 0 else "    ") + line + "\n" for i, line in enumerate(lines))


def _named(message: str, pasted: Path, running: Path) -> str:
    return message.replace(str(pasted), PASTED).replace(str(running), RUNNING)
