"""Pause and resume while running, through a small control file.

The file (``control_file`` in a destination's configuration) is JSON or YAML::

    paused: false                 # true: send nothing to this destination
    paused_audiences: [ACT__CartAbandon__90m]

``deliver`` re-reads it when its modification time changes (checked every second).
Paused changes stay in the buffer, un-acknowledged, so their offsets are not committed:
once the buffer is full the consumer pauses and the remaining deltas wait in Kafka.
Resuming drains them in order. An unreadable or invalid file is reported once and the
previous state kept; a missing file means nothing is paused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("streamsync.deliver")


class ControlState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    paused: bool = False
    paused_audiences: frozenset[str] = Field(default_factory=frozenset)


class ControlFile:
    def __init__(self, path: Path | None, check_every_s: float = 1.0) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self.state = ControlState()
        self._mtime: float | None = None
        self._checked = float("-inf")

    def poll(self) -> ControlState:
        """The current state (re-read only when the file changed)."""
        now = time.monotonic()
        if self.path is None or now - self._checked < self.check_every_s:
            return self.state
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            if self._mtime is not None:
                log.info("control file %s removed: nothing paused", self.path)
            self._mtime = None
            self.state = ControlState()
            return self.state
        except OSError as exc:
            log.warning("control file %s: %s", self.path, exc.strerror)
            return self.state
        if mtime == self._mtime:
            return self.state
        self._mtime = mtime
        try:
            data = yaml.safe_load(self.path.read_text("utf-8")) or {}
            state = ControlState.model_validate(data)
        except (
            OSError,
            UnicodeDecodeError,
            RecursionError,
            yaml.YAMLError,
            ValidationError,
        ) as exc:
            # Not UTF-8, nested too deep for the parser, not YAML or not the shape: the
            # state stays as it was, and the file is named.
            log.warning("control file %s ignored: %s", self.path, type(exc).__name__)
            return self.state
        if state != self.state:
            log.info(
                "control: destination %s, paused audiences: %s",
                "paused" if state.paused else "running",
                ", ".join(sorted(state.paused_audiences)) or "none",
            )
        self.state = state
        return state
