"""Conformance with Customer.io's published specs, on fixtures written from them
(``tests/ingest/fixtures/README.md``): identity, call types, nested webhook data, ids,
event time and batches, through the same decoders as the Kafka path and replay."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamsync.audiences.definition import Audience, EventMatch
from streamsync.audiences.engine import Engine
from streamsync.audiences.matching import predicate
from streamsync.cli import main as cli_main
from streamsync.config import ConfigError, parse_config
from streamsync.ingest.avro import encode_avro
from streamsync.ingest.config import IngestConfig, TopicConfig
from streamsync.ingest.decoder import Decoder, Outcome
from streamsync.ingest.errors import DecodeError, DecodeReason
from streamsync.ingest.event import NO_CUSTOMER, Event, Skipped, SourcePosition
from streamsync.ingest.jsonl import InputPolicy, LineError, read_events
from streamsync.ingest.jsonl import Skipped as LineSkipped

FIXTURES = Path(__file__).parent / "fixtures"
SOURCE = SourcePosition("t", 0, 1)

#: Reporting webhook object types and their metrics, as the webhooks spec lists them.
WEBHOOK_METRICS = {
    "customer": {"subscribed", "unsubscribed", "cio_subscription_preferences_changed"},
    "email": {
        "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted",
        "bounced", "spammed", "dropped", "failed", "unsubscribed", "undeliverable",
    },
    "push": {
        "drafted", "attempted", "sent", "delivered", "opened", "clicked", "converted",
        "bounced", "dropped", "failed", "undeliverable",
    },
    "in_app": {"drafted", "attempted", "sent", "opened", "clicked", "converted", "failed"},
    "sms": {
        "drafted", "attempted", "sent", "delivered", "clicked", "converted", "bounced",
        "failed", "undeliverable",
    },
    "slack": {"drafted", "attempted", "sent", "clicked", "converted", "failed"},
    "webhook": {"drafted", "attempted", "sent", "clicked", "converted", "failed", "undeliverable"},
}  # fmt: skip


def audience(name: str, **conditions: Any) -> Audience:
    return Audience.model_validate(
        {"name": name, "version": 1, "owner": "t@example.com", "description": "t", **conditions}
    )


def records(name: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (FIXTURES / name).read_bytes().splitlines()]


def decoder(fmt: str, **options: Any) -> Decoder:
    return Decoder(TopicConfig(name="t", format=fmt, **options))  # type: ignore[arg-type]


def outcomes(dec: Decoder, record: dict[str, Any]) -> list[Outcome]:
    return dec.decode_all(orjson.dumps(record), None, SOURCE)


def one_event(dec: Decoder, record: dict[str, Any]) -> Event:
    [outcome] = outcomes(dec, record)
    assert isinstance(outcome, Event), outcome
    return outcome


# -- reporting webhooks -----------------------------------------------------------------


def test_every_webhook_metric_and_object_type_decodes_keyed_by_identifiers_id() -> None:
    hooks = records("customerio_webhooks.jsonl")
    covered: dict[str, set[str]] = {}
    for record in hooks:
        covered.setdefault(record["object_type"], set()).add(record["metric"])
    assert covered == WEBHOOK_METRICS
    for json_topic, avro_topic in (("webhook_json", "webhook_avro"),):
        for record in hooks:
            event = one_event(decoder(json_topic), record)
            # The spec's customer_id (0200000001) is deprecated: identifiers.id (42) keys.
            assert (event.customer_id, event.id_kind) == ("42", "id")
            assert (event.kind, event.name) == ("webhook", record["metric"])
            assert event.timestamp_ms == record["timestamp"] * 1000
            assert event.record_id == record["event_id"]
            assert event.properties["object_type"] == record["object_type"]
            assert event.identifiers == {"email": "test@example.com", "cio_id": "d9c106000001"}
            assert "customer_id" not in event.properties
            avro = Decoder(TopicConfig(name="t", format=avro_topic)).decode_all(
                encode_avro("webhook", record), None, SOURCE
            )
            assert avro == [event]


def test_webhook_data_is_kept_whole_and_reachable_by_where_paths() -> None:
    push = next(
        r
        for r in records("customerio_webhooks.jsonl")
        if (r["object_type"], r["metric"]) == ("push", "sent")
    )
    event = one_event(decoder("webhook_json"), push)
    assert event.properties["recipients"] == push["data"]["recipients"]

    def matches(where: dict[str, Any]) -> bool:
        check = predicate(EventMatch(event="sent", kind="webhook", where=where))
        assert check is not None
        return check(event)

    assert matches({"recipients[].device_platform": "ios"})
    assert matches({"recipients[].device_platform": {"in": ["android", "web"]}})
    assert not matches({"recipients[].device_platform": "windows"})


IDENTITY_CASES = [
    # (policy, expected (key, kind) per line of customerio_webhook_identity.jsonl)
    (
        None,
        [
            ("42", "id"),  # deleted person: blank customer_id
            ("test@example.com", "email"),  # email workspace: identifiers.id null
            ("d9c106000001", "cio_id"),
            ("0200000001", "customer_id"),  # only the deprecated field
            None,
        ],
    ),
    (
        {"identity": ["id", "cio_id", "email", "customer_id"]},
        [
            ("42", "id"),
            ("d9c106000001", "cio_id"),
            ("d9c106000001", "cio_id"),
            ("0200000001", "customer_id"),
            None,
        ],
    ),
    ({"identity": ["id"]}, [("42", "id"), None, None, None, None]),
    (
        {"customer_key": "data.customer_id"},
        [None, ("0200000001", "id"), ("0200000001", "id"), ("0200000001", "id"), None],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("options", "expected"), IDENTITY_CASES)
def test_webhook_identity_policy(
    options: dict[str, Any] | None, expected: list[tuple[str, str] | None]
) -> None:
    dec = decoder("webhook_json", **(options or {}))
    avro = decoder("webhook_avro", **(options or {}))
    got: list[tuple[str, str] | None] = []
    for record in records("customerio_webhook_identity.jsonl"):
        [outcome] = outcomes(dec, record)
        assert avro.decode_all(encode_avro("webhook", record), None, SOURCE) == [outcome]
        if isinstance(outcome, Event):
            got.append((outcome.customer_id, outcome.id_kind))
        else:
            assert outcome == Skipped(NO_CUSTOMER)
            got.append(None)
    assert got == expected


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ({"format": "pipelines_json", "identity": ["id"]}, "identity applies to webhook"),
        ({"format": "webhook_json", "identity": ["email", "id"]}, "must start with id"),
        ({"format": "webhook_json", "identity": ["id", "customer_id", "email"]}, "only come last"),
        ({"format": "webhook_json", "identity": ["id", "id"]}, "twice"),
        ({"format": "webhook_json", "identity": ["id", "phone"]}, "identity"),
        (
            {"format": "webhook_json", "identity": ["id"], "customer_key": "data.x"},
            "not both",
        ),
        ({"format": "webhook_json", "max_clock_skew_s": 0}, "max_clock_skew_s"),
    ],
)
def test_identity_configuration_errors(topic: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"ingest": {"topics": [{"name": "t", **topic}]}})


def test_replay_uses_the_configured_policy(tmp_path: Path) -> None:
    ingest = IngestConfig.model_validate(
        {
            "topics": [
                {"name": "p", "format": "pipelines_avro"},
                {"name": "w", "format": "webhook_avro", "identity": ["id", "cio_id"]},
            ]
        }
    )
    lines = (FIXTURES / "customerio_webhook_identity.jsonl").read_bytes().splitlines()
    configured = [
        (item.customer_id, item.id_kind)
        for item in read_events(lines, policy=InputPolicy.from_config(ingest))
        if isinstance(item, Event)
    ]
    assert configured == [("42", "id"), ("d9c106000001", "cio_id"), ("d9c106000001", "cio_id")]


def test_id_kind_travels_to_the_deltas() -> None:
    contacted = audience(
        "ACT__Contacted__7d",
        entry={"since_last": {"event": "sent", "kind": "webhook", "less_than": "7d"}},
    )
    engine = Engine([contacted])
    dec = decoder("webhook_json")
    deltas = []
    for record in records("customerio_webhook_identity.jsonl"):
        for outcome in outcomes(dec, record):
            if isinstance(outcome, Event):
                deltas.extend(engine.process(outcome))
    deltas.extend(engine.finish())
    kinds = {d.customer_id: d.id_kind for d in deltas}
    assert kinds == {"d9c106000001": "cio_id", "0200000001": "customer_id"}
    assert all(d.to_json()["id_kind"] == d.id_kind for d in deltas)


# -- Data Pipelines ---------------------------------------------------------------------


def test_every_call_type() -> None:
    dec = decoder("pipelines_json")
    got = [outcomes(dec, record) for record in records("pipelines_calls.jsonl")]
    kinds = [o[0].kind if isinstance(o[0], Event) else o[0] for o in got]
    assert kinds == ["identify", "track", "page", "screen", Skipped("group"), Skipped("alias")]
    identify = got[0][0]
    assert isinstance(identify, Event)
    assert identify.customer_id == "97980cfea0067"
    assert identify.traits["address"]["city"] == "San Francisco"


def test_event_time_follows_the_segment_spec() -> None:
    dec = decoder("pipelines_json")
    derived, received_only, *_ = records("pipelines_policies.jsonl")
    # receivedAt - (sentAt - originalTimestamp) = 19:11:01.266 - 0.017 = the spec's own
    # timestamp for this example, 19:11:01.249.
    assert "timestamp" not in derived
    assert one_event(dec, derived).timestamp_ms == 1449947461249
    assert one_event(dec, received_only).timestamp_ms == 1449947461266

    def reason(record: dict[str, Any]) -> DecodeReason:
        [outcome] = outcomes(dec, record)
        assert isinstance(outcome, DecodeError)
        return outcome.reason

    no_received = {k: v for k, v in derived.items() if k != "receivedAt"}
    assert reason(no_received) == DecodeReason.BAD_TIMESTAMP
    assert reason({**derived, "receivedAt": "soon"}) == DecodeReason.BAD_TIMESTAMP
    assert reason({**derived, "sentAt": 5}) == DecodeReason.WRONG_TYPE
    nothing = {k: v for k, v in no_received.items() if k not in ("sentAt", "originalTimestamp")}
    assert reason(nothing) == DecodeReason.BAD_TIMESTAMP


#: A Kafka record's own timestamp (CreateTime or LogAppendTime) in the tests below.
KAFKA_MS = 1_767_225_600_123


def test_the_specs_minimal_examples_take_the_kafka_record_time() -> None:
    # The Segment spec's "typical" track and identify and Customer.io's identify example
    # carry no time field at all: on Kafka the record's own timestamp is their time.
    track, identify, cio_identify = records("pipelines_minimal.jsonl")
    keyed = decoder("pipelines_json", key_is_customer_id=True)
    [event] = keyed.decode_all(orjson.dumps(track), b"cust-1", SOURCE, KAFKA_MS)
    assert isinstance(event, Event)
    assert (event.customer_id, event.name, event.timestamp_ms) == (
        "cust-1",
        "User Registered",
        KAFKA_MS,
    )
    dec = decoder("pipelines_json")
    for record in (identify, cio_identify):
        [event] = dec.decode_all(orjson.dumps(record), None, SOURCE, KAFKA_MS)
        assert isinstance(event, Event), event
        assert (event.customer_id, event.kind, event.timestamp_ms) == (
            "97980cfea0067",
            "identify",
            KAFKA_MS,
        )
    # A file record has no record time: no time at all is bad_timestamp.
    for record in (track, identify, cio_identify):
        [error] = outcomes(dec, record)
        assert isinstance(error, DecodeError)
        assert error.reason == DecodeReason.BAD_TIMESTAMP
        assert "no Kafka record timestamp" in error.detail


def test_the_kafka_record_time_comes_after_the_specs_own_derivation() -> None:
    dec = decoder("pipelines_json")
    derived, received_only, *_ = records("pipelines_policies.jsonl")

    def at(record: dict[str, Any]) -> int:
        [event] = dec.decode_all(orjson.dumps(record), None, SOURCE, KAFKA_MS)
        assert isinstance(event, Event), event
        return event.timestamp_ms

    # timestamp, then receivedAt - (sentAt - originalTimestamp), then receivedAt alone.
    full = {**derived, "timestamp": "2015-12-12T19:11:01.249Z"}
    assert at(full) == 1449947461249
    assert at(derived) == 1449947461249
    assert at(received_only) == 1449947461266
    # Without receivedAt the record time stands for it, corrected by the device clocks.
    no_received = {k: v for k, v in derived.items() if k != "receivedAt"}
    assert at(no_received) == KAFKA_MS - 17
    only_original = {k: v for k, v in no_received.items() if k != "sentAt"}
    assert at(only_original) == KAFKA_MS
    # A time field that is there but broken is still the record's error.
    [bad] = dec.decode_all(orjson.dumps({**derived, "receivedAt": "soon"}), None, SOURCE, KAFKA_MS)
    assert isinstance(bad, DecodeError) and bad.reason == DecodeReason.BAD_TIMESTAMP
    # Webhooks: no timestamp takes the record time; in a file it is bad_timestamp.
    hook = {k: v for k, v in records("customerio_webhooks.jsonl")[0].items() if k != "timestamp"}
    hooks = decoder("webhook_json")
    [event] = hooks.decode_all(orjson.dumps(hook), None, SOURCE, KAFKA_MS)
    assert isinstance(event, Event) and event.timestamp_ms == KAFKA_MS
    [error] = outcomes(hooks, hook)
    assert isinstance(error, DecodeError) and error.reason == DecodeReason.BAD_TIMESTAMP


def test_a_record_time_past_the_clock_skew_is_refused_like_a_timestamp() -> None:
    dec = Decoder(TopicConfig(name="t", format="pipelines_json"), clock_ms=lambda: KAFKA_MS)
    identify = records("pipelines_minimal.jsonl")[1]
    ahead = KAFKA_MS + 2 * 86_400_000  # beyond the default max_clock_skew of a day
    [error] = dec.decode_all(orjson.dumps(identify), None, SOURCE, ahead)
    assert isinstance(error, DecodeError) and error.reason == DecodeReason.BAD_TIMESTAMP


def test_records_without_an_id_get_one_from_their_content() -> None:
    dec = decoder("pipelines_json")
    _, _, no_id, http_body, _ = records("pipelines_policies.jsonl")
    first = one_event(dec, no_id)
    assert first.record_id is not None and len(first.record_id) == 36
    reordered = dict(reversed(list(no_id.items())))
    assert one_event(dec, reordered).record_id == first.record_id
    assert one_event(dec, {**no_id, "messageId": None}).record_id == first.record_id
    changed = {**no_id, "properties": {**no_id["properties"], "price": 50}}
    assert one_event(dec, changed).record_id != first.record_id
    hook = records("customerio_webhooks.jsonl")[0]
    del hook["event_id"]
    assert one_event(decoder("webhook_json"), hook).record_id == (
        one_event(decoder("webhook_json"), hook).record_id
    )
    # An identical retransmission is a duplicate for the engine.
    buyers = audience(
        "ACT__Buyers",
        entry={"count": {"event": "Order Completed", "at_least": 2}},
        exit={"happened": {"event": "Never Happens"}},
    )
    engine = Engine([buyers])
    for _ in range(2):
        engine.process(one_event(dec, http_body))
    assert engine.finish() == [] and engine.stats.duplicates == 1


def test_batch_envelopes_are_split_item_by_item() -> None:
    batch = records("pipelines_policies.jsonl")[-1]
    got = outcomes(decoder("pipelines_json"), batch)
    assert len(got) == 4
    identify, track, bad, alias = got
    assert isinstance(identify, Event) and identify.identifiers == {"email": "peter@example.com"}
    assert isinstance(track, Event) and track.name == "Signed Up"
    assert isinstance(bad, DecodeError)
    assert (bad.reason, bad.index) == (DecodeReason.MISSING_FIELD, 2)
    assert alias == Skipped("alias")
    # The envelope's context applies to items without their own.
    shared = {"traits": {"email": "peter@example.com"}}
    own = {"traits": {"email": "own@example.com"}}
    item1 = {"type": "track", "userId": "u", "event": "e", "timestamp": "2015-02-23T22:28:55Z"}
    item2 = {**item1, "messageId": "m2", "context": own}
    merged = outcomes(decoder("pipelines_json"), {"batch": [item1, item2], "context": shared})
    assert [o.identifiers["email"] for o in merged if isinstance(o, Event)] == [
        "peter@example.com",
        "own@example.com",
    ]

    dec = decoder("pipelines_json")
    assert outcomes(dec, {"batch": []}) == [Skipped("empty_batch")]
    [not_list] = outcomes(dec, {"batch": {"type": "track"}})
    assert isinstance(not_list, DecodeError) and not_list.reason == DecodeReason.WRONG_TYPE
    [item] = outcomes(dec, {"batch": ["track"]})
    assert isinstance(item, DecodeError) and (item.reason, item.index) == (
        DecodeReason.WRONG_TYPE,
        0,
    )
    # Webhook topics have no batch call: such a record is an ordinary bad webhook.
    [webhook] = outcomes(decoder("webhook_json"), {"batch": []})
    assert isinstance(webhook, DecodeError) and webhook.index is None


def test_batch_lines_in_replay_files() -> None:
    lines = (FIXTURES / "pipelines_policies.jsonl").read_bytes().splitlines()
    items = list(read_events(lines, "policies.jsonl"))
    errors = [i for i in items if isinstance(i, LineError)]
    assert [str(e) for e in errors] == ["line 5 item 2: missing_field: event is required"]
    skipped = Counter(i.reason for i in items if isinstance(i, LineSkipped))
    assert skipped == {"alias": 1}
    assert sum(isinstance(i, Event) for i in items) == 6


def test_ingest_decode_masks_contact_details_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = {
        "type": "identify",
        "userId": "peter@example.com",
        "timestamp": "2015-02-23T22:28:55.111Z",
        "traits": {"email": "peter@example.com", "phone": "555 0100", "plan": "premium"},
        "context": {"traits": {"note": "call +1 415 555 0100 after 5"}},
    }
    path = tmp_path / "one.jsonl"
    path.write_bytes(orjson.dumps(record) + b"\n")
    argv = ["ingest", "decode", "--format", "pipelines_json", str(path)]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "peter@example.com" not in out and "555" not in out
    shown = orjson.loads(out.split(": ", 1)[1])
    assert shown["customer_id"] == "<email>"
    assert shown["identifiers"] == {"email": "<redacted>", "phone": "<redacted>"}
    assert shown["traits"]["plan"] == "premium" and shown["traits"]["phone"] == "<redacted>"
    assert shown["traits"]["note"] == "call <phone> after 5"
    assert cli_main([*argv, "--show-personal-data"]) == 0
    clear = orjson.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert clear["customer_id"] == "peter@example.com"
    assert clear["identifiers"]["phone"] == "555 0100"


def test_ingest_decode_shows_the_documented_key(capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURES / "customerio_webhook_identity.jsonl"
    argv = ["ingest", "decode", "--format", "webhook_json", "--show-personal-data"]
    assert cli_main([*argv, str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = [orjson.loads(line.split(": ", 1)[1]) for line in lines[:4]]
    assert [(s["customer_id"], s["id_kind"]) for s in shown] == [
        ("42", "id"),
        ("test@example.com", "email"),
        ("d9c106000001", "cio_id"),
        ("0200000001", "customer_id"),
    ]
    assert lines[4] == "5: skipped (no_customer)"
    path = FIXTURES / "pipelines_calls.jsonl"
    assert cli_main(["ingest", "decode", "--format", "pipelines_json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[4:] == ["5: skipped (group)", "6: skipped (alias)"]
    assert [orjson.loads(line.split(": ", 1)[1])["customer_id"] for line in out[:4]] == [
        "97980cfea0067",
        "AiUGstSDIg",
        "97980cfea0067",
        "97980cfea0067",
    ]


def test_a_customer_keyed_two_ways_takes_the_latest_records_kind() -> None:
    """In an email workspace Data Pipelines records carry the email as ``userId`` (kind
    ``id``) while webhooks are keyed by ``identifiers.email`` (kind ``email``): one
    customer, whose deltas say what its latest record's key was."""
    contacted = audience(
        "ACT__Contacted__7d",
        entry={"since_last": {"event": "sent", "kind": "webhook", "less_than": "7d"}},
    )
    engine = Engine([contacted])
    email = "test@example.com"
    track = {
        "type": "track",
        "userId": email,
        "event": "Signed Up",
        "messageId": "t-1",
        "timestamp": "2021-02-11T17:00:00Z",
    }
    [first] = outcomes(decoder("pipelines_json"), track)
    hook = records("customerio_webhook_identity.jsonl")[1]  # identifiers.id null
    [second] = outcomes(decoder("webhook_json"), hook)
    assert isinstance(first, Event) and isinstance(second, Event)
    assert (first.customer_id, first.id_kind) == (email, "id")
    assert (second.customer_id, second.id_kind) == (email, "email")
    hook_sent = {**hook, "metric": "sent", "event_id": "sent-1"}
    [third] = outcomes(decoder("webhook_json"), hook_sent)
    deltas = [*engine.process(first), *engine.process(third), *engine.finish()]
    assert [(d.customer_id, d.op, d.id_kind) for d in deltas] == [(email, "enter", "email")]
