"""Destination mistakes that can be known at start-up are reported then, in one line.

Ride-along types their source can never fill, attribute names written twice, and
audiences a destination names that no definition has: each is a configuration error
(``streamsync deliver`` exits 2 with one line) rather than something found delta by delta.
A ride-along value that fails at run time never blocks the change it rides on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamsync.cli import main
from streamsync.config import ConfigError, parse_config
from streamsync.dead_letter import ATTRIBUTE_REJECTED
from streamsync.destinations.checks import check_audience_names
from streamsync.destinations.errors import DeliverSetupError
from streamsync.dev.standins import StandInServer
from tests.destinations.conftest import braze_client, delta, harness

INGEST = {"topics": [{"name": "in", "format": "pipelines_json"}]}
BRAZE = {"kind": "braze", "base_url": "http://x", "credentials": {"env": "K"}}
MOE = {"kind": "moengage", "app_id": "A", "credentials": {"env": "K"}}
AUDIENCE = """
name: {name}
version: 1
owner: a@example.com
description: vip
entry: {{since_last: {{event: Order Completed, at_least: 1h, less_than: 7d}}}}
"""


def _config(destinations: dict[str, Any], **extra: Any) -> Any:
    return parse_config({"ingest": INGEST, "destinations": destinations, **extra})


def _error(destinations: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        _config(destinations)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- ride-along types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "source"),
    [("integer", "email"), ("float", "phone"), ("boolean", "at"), ("time", "seq"),
     ("integer", "cio_id"), ("boolean", "customer_id")],
)  # fmt: skip
def test_a_type_its_source_cannot_fill_is_refused_at_start_up(kind: str, source: str) -> None:
    attributes = [{"attribute": "ss_x", "type": kind, "source": source}]
    message = _error({"braze": {**BRAZE, "attributes": attributes}})
    assert f"type {kind} cannot hold source {source}" in message and "'ss_x'" in message


@pytest.mark.parametrize(
    ("kind", "source"),
    [("time", "at"), ("integer", "at"), ("string", "email"), ("integer", "seq"),
     ("integer", "customer_id"), ("string", "cio_id"), ("float", "version")],
)  # fmt: skip
def test_types_a_source_can_fill_are_accepted(kind: str, source: str) -> None:
    attributes = [{"attribute": "ss_x", "type": kind, "source": source}]
    _config({"braze": {**BRAZE, "attributes": attributes}})


def test_a_constant_that_does_not_fit_names_the_attribute() -> None:
    attributes = [{"attribute": "ss_flag", "type": "boolean", "value": "yes"}]
    assert "'ss_flag': value" in _error({"braze": {**BRAZE, "attributes": attributes}})


# -- duplicate attribute names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"attributes": [{"attribute": "a", "type": "time", "source": "at"},
                         {"attribute": "a", "type": "integer", "source": "seq"}]},
         "'a' is written by both attributes[0] and attributes[1]"),
        ({"attributes": [{"attribute": "streamsync_audiences", "type": "time", "source": "at"}]},
         "'streamsync_audiences' is written by both array_attribute and attributes[0]"),
        ({"audience_options": {"A": {"boolean_attribute": "vip"},
                               "B": {"boolean_attribute": "vip"}}},
         "'vip' is written by both audience_options.A.boolean_attribute and "
         "audience_options.B.boolean_attribute"),
        ({"attributes": [{"attribute": "external_id", "type": "string", "source": "email"}]},
         "'external_id' is written by both identifiers.order (external_id) and attributes[0]"),
    ],
)  # fmt: skip
def test_braze_attribute_names_written_twice(settings: dict[str, Any], needle: str) -> None:
    assert needle in _error({"braze": {**BRAZE, **settings}})


def test_a_profile_field_set_from_its_own_identifier_is_not_a_duplicate() -> None:
    attributes = [{"attribute": "email", "type": "string", "source": "email"}]
    _config({"braze": {**BRAZE, "attributes": attributes}})


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"boolean_attributes": {"A": "vip", "B": "vip"}},
         "'vip' is written by both boolean_attributes.A and boolean_attributes.B"),
        ({"boolean_attributes": {"A": "streamsync_audiences"}},
         "'streamsync_audiences' is written by both array_attribute and boolean_attributes.A"),
    ],
)  # fmt: skip
def test_moengage_attribute_names_written_twice(settings: dict[str, Any], needle: str) -> None:
    assert needle in _error({"moengage": {**MOE, **settings}})


# -- audiences no definition has ---------------------------------------------------------


def _definitions(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "audiences"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.yaml").write_text(AUDIENCE.format(name=name).lstrip())
    return folder


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"audiences": ["SUP__VIP__LTV5000"]}, "audiences"),
        ({"audience_options": {"SUP__VIP__LTV5000": {"boolean_attribute": "vip"}}},
         "audience_options"),
        ({"rollout": {"audiences": {"SUP__VIP__LTV5000": {"percent": 10}}}},
         "rollout.audiences"),
    ],
)  # fmt: skip
def test_an_audience_no_definition_has_stops_deliver(
    tmp_path: Path, settings: dict[str, Any], setting: str
) -> None:
    folder = _definitions(tmp_path, "SUP__VIP__LTV500")
    config = _config({"braze": {**BRAZE, **settings}}, deltas={"audiences": str(folder)})
    with pytest.raises(DeliverSetupError) as info:
        check_audience_names(config, "braze")
    assert str(info.value) == (
        f"destination 'braze': {setting} names audience 'SUP__VIP__LTV5000', which no "
        "audience definition has; did you mean SUP__VIP__LTV500?"
    )


def test_moengage_boolean_attributes_are_checked_against_evaluate_audiences(
    tmp_path: Path,
) -> None:
    folder = _definitions(tmp_path, "SUP__VIP__LTV500")
    evaluate = {"audiences": str(folder)}
    good = _config({"moengage": {**MOE, "boolean_attributes": {"SUP__VIP__LTV500": "vip"}}},
                   evaluate=evaluate)  # fmt: skip
    check_audience_names(good, "moengage")
    bad = _config({"moengage": {**MOE, "boolean_attributes": {"SUP__VIP": "vip"}}},
                  evaluate=evaluate)  # fmt: skip
    with pytest.raises(DeliverSetupError, match="boolean_attributes names audience 'SUP__VIP'"):
        check_audience_names(bad, "moengage")


def test_without_definitions_the_names_cannot_be_checked() -> None:
    check_audience_names(_config({"braze": {**BRAZE, "audiences": ["ANY"]}}), "braze")


def test_deliver_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _definitions(tmp_path, "SUP__VIP__LTV500")
    path = tmp_path / "streamsync.yaml"
    path.write_text(
        "ingest:\n  topics: [{name: in, format: pipelines_json}]\n"
        f"deltas: {{audiences: {folder.name}}}\n"
        "destinations:\n  braze:\n    kind: braze\n    base_url: http://127.0.0.1:9\n"
        "    credentials: {env: K}\n    audiences: [SUP__VIP__LTV5000]\n"
    )
    monkeypatch.setenv("K", "key")
    capsys.readouterr()
    rc = main(["deliver", "--config", str(path), "--destination", "braze"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "SUP__VIP__LTV5000" in err and "did you mean SUP__VIP__LTV500" in err


# -- run-time ride-along failures --------------------------------------------------------


def test_a_ride_along_that_fails_never_blocks_the_membership_change(
    standins: StandInServer,
) -> None:
    client = braze_client(
        standins.urls["braze"],
        attributes=[
            {"attribute": "ss_customer_number", "type": "integer", "source": "customer_id"},
            {"attribute": "ss_at", "type": "time", "source": "at"},
        ],
    )
    h = harness(client, standins.urls["braze"])
    for customer in ("42", "cus_x", "cus_y"):
        h.add(delta(customer, "ACT__A", "enter"))
    h.drain()
    users = h.admin.profiles()["users"]
    assert users["external_id:42"]["ss_customer_number"] == 42
    for customer in ("cus_x", "cus_y"):  # delivered, without the value that does not fit
        profile = users[f"external_id:{customer}"]
        assert profile["streamsync_audiences"] == ["ACT__A"] and "ss_at" in profile
        assert "ss_customer_number" not in profile
    assert h.sink.stats.delivered_total == 3 and sum(h.sink.stats.rejected.values()) == 0
    assert h.sink.stats.attribute_rejected == {"ss_customer_number": 2}
    assert h.sink.stats.as_dict()["attribute_rejected"] == 2
    dead = [(d.customer_id, reason, r.message) for d, reason, r in h.dead.records]
    assert [(c, reason) for c, reason, _ in dead] == [
        ("cus_x", ATTRIBUTE_REJECTED),
        ("cus_y", ATTRIBUTE_REJECTED),
    ]
    assert "ss_customer_number" in dead[0][2] and "integer" in dead[0][2]
    assert h.offsets.position(0) == 3  # everything acknowledged and committable


def test_the_example_destinations_name_only_defined_audiences() -> None:
    from streamsync.config import load_config
    from streamsync.resources import project_path

    config = load_config(project_path("examples", "config", "deliver-local.yaml"), env={})
    assert config.deltas.audiences == project_path("examples", "audiences")
    for name in config.destinations:
        check_audience_names(config, name)
