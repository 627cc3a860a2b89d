"""Audiences route to destinations by name; deliver checks the names at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamsync.audiences.loader import check_audiences
from streamsync.config import parse_config
from streamsync.destinations.deliver import routed_audiences
from streamsync.destinations.errors import DeliverSetupError

AUDIENCE = """
name: ACT__Cart__1h
version: 1
owner: a@example.com
description: cart
entry: {{since_last: {{event: Product Added, at_least: 1h, less_than: 7d}}}}
destinations: {destinations}
"""


def _audiences(tmp_path: Path, destinations: str) -> Path:
    path = tmp_path / "a.yaml"
    path.write_text(AUDIENCE.format(destinations=destinations).lstrip())
    return path


def test_destinations_field_lists_names(tmp_path: Path) -> None:
    audiences, problems = check_audiences(_audiences(tmp_path, "[braze, moengage-eu]"))
    assert problems == [] and audiences[0].destinations == ["braze", "moengage-eu"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("[braze, braze]", "listed twice: braze"), ('["bad name"]', "must be letters")],
)
def test_bad_destination_names_have_a_line(tmp_path: Path, value: str, message: str) -> None:
    _, problems = check_audiences(_audiences(tmp_path, value))
    assert len(problems) == 1 and problems[0].line == 6 and message in problems[0].message


def test_routing_from_audience_files_and_explicit_lists(tmp_path: Path) -> None:
    path = _audiences(tmp_path, "[braze]")
    config = parse_config(
        {
            "ingest": {"topics": [{"name": "in", "format": "pipelines_json"}]},
            "destinations": {
                "braze": {"kind": "braze", "base_url": "http://x", "credentials": {"env": "K"},
                          "audience_files": str(path)},
                "moe": {"kind": "moengage", "app_id": "A", "credentials": {"env": "K"},
                        "audience_files": str(path), "audiences": ["SUP__Other"]},
                "all": {"kind": "braze", "base_url": "http://x", "credentials": {"env": "K"}},
            },
        }
    )  # fmt: skip
    assert routed_audiences("braze", config.destinations["braze"]) == {"ACT__Cart__1h"}
    assert routed_audiences("moe", config.destinations["moe"]) == {"SUP__Other"}
    assert routed_audiences("all", config.destinations["all"]) is None
    with pytest.raises(DeliverSetupError, match="routes to destination 'braze', which is not"):
        routed_audiences("moe", config.destinations["moe"], known={"moe", "all"})
    broken = config.destinations["braze"].model_copy(update={"audience_files": tmp_path / "no"})
    with pytest.raises(DeliverSetupError, match="audience files for 'braze'"):
        routed_audiences("braze", broken)


def test_example_delivery_config_is_valid() -> None:
    from streamsync.config import load_config
    from streamsync.resources import project_path

    config = load_config(project_path("examples", "config", "deliver-local.yaml"), env={})
    assert set(config.destinations) == {"braze", "moengage"}
    braze = config.destinations["braze"]
    assert routed_audiences("braze", braze, config.destinations) is None  # every audience
