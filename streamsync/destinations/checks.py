"""Start-up checks of a destination against the audience definitions.

A destination names audiences in its ``audiences`` list and in per-audience settings
(Braze ``audience_options``, MoEngage ``boolean_attributes``, cohort ids). A name no
definition has is a typo that would otherwise pass silently: deltas of the real audience
are skipped as not routed (and committed past), or an option never applies. So deliver
compares every name with the definitions the configuration file knows of
(``deltas.audiences``, ``evaluate.audiences``, the destinations' ``audience_files``) and
refuses to start, in one line, when one is missing. A file that names no definitions at
all cannot be checked; set ``deltas.audiences`` to have it checked.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from streamsync.config import AppConfig
from streamsync.destinations.errors import DeliverSetupError


def definition_paths(config: AppConfig) -> list[Path]:
    """Every audience file or directory ``config`` names, each once, in file order."""
    paths: list[Path] = []
    candidates = [config.deltas.audiences]
    if config.evaluate is not None:
        candidates.append(config.evaluate.audiences)
    candidates += [dest.audience_files for dest in config.destinations.values()]
    for path in candidates:
        if path is not None and path not in paths:
            paths.append(path)
    return paths


def defined_audiences(config: AppConfig) -> set[str] | None:
    """The names of every audience the definitions of ``config`` hold; ``None`` when it
    names no definitions. A definition that cannot be loaded is a :class:`DeliverSetupError`."""
    from streamsync.audiences.loader import (
        AudienceDefinitionError,
        AudienceFileError,
        load_audiences,
    )

    paths = definition_paths(config)
    if not paths:
        return None
    names: set[str] = set()
    for path in paths:
        try:
            names.update(audience.name for audience in load_audiences(path))
        except AudienceDefinitionError as exc:
            first = exc.problems[0] if exc.problems else "invalid"
            raise DeliverSetupError(f"audience definitions {path}: {first}") from None
        except AudienceFileError as exc:
            raise DeliverSetupError(f"audience definitions: {exc}") from None
    return names


def check_audience_names(config: AppConfig, name: str) -> None:
    """:class:`DeliverSetupError` (one line, with the closest defined name) when
    destination ``name`` names an audience that no definition of ``config`` has."""
    dest = config.destinations[name]
    named = dest.named_audiences()
    if not named:
        return
    known = defined_audiences(config)
    if known is None:
        return
    for audience, setting in named:
        if audience in known:
            continue
        close = difflib.get_close_matches(audience, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise DeliverSetupError(
            f"destination {name!r}: {setting} names audience {audience!r}, which no audience "
            f"definition has{hint}"
        )
