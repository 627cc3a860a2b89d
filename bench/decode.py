"""Decode throughput: streamsync's decoders against the naive json.loads + pydantic approach.

Generates realistic Customer.io records (e-commerce track events, identifies, reporting
webhooks; up to 25k distinct, cycled to N), encodes them as JSON, plain Avro and
Confluent-framed Avro up front, then times one pass of each decoder over the same records
in this process:

* ``streamsync json``  - ``Decoder`` on pipelines_json / webhook_json topics (orjson +
  dict validation + ``Event``);
* ``streamsync avro (plain|confluent)`` - ``Decoder`` on the Avro topics;
* ``baseline json.loads+pydantic`` - ``json.loads`` then ``Model.model_validate`` per
  record, the approach the decoders replace (it does not even build an ``Event``);
* ``baseline pydantic validate_json`` - pydantic's own JSON parser, for a fairer view.

Run: ``.venv/bin/python bench/decode.py [--records N]``. Not run by the tests (a smoke test
runs it with 200 records); timings are wall-clock, one pass after a short warm-up.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from streamsync.ingest.avro import FileSchemaRegistry, confluent_frame, encode_avro
from streamsync.ingest.config import TopicConfig
from streamsync.ingest.decoder import Decoder
from streamsync.ingest.event import SourcePosition

DEFAULT_RECORDS = 200_000
#: Distinct records generated and encoded; larger runs cycle through them. Encoding is
#: slower than decoding, and a pool keeps the whole run (and its RSS) small.
POOL_SIZE = 25_000
PIPELINES_SCHEMA_ID = 1
WEBHOOK_SCHEMA_ID = 2
_CATEGORIES = ("vitamins", "skin", "hair", "sleep", "protein")
_TRACK_EVENTS = ("Product Viewed", "Product Added", "Order Completed", "Checkout Started")


# -- the naive baseline's models ------------------------------------------------------


class _Context(BaseModel):
    traits: dict[str, Any] = {}
    ip: str | None = None


class PipelinesModel(BaseModel):
    type: Literal["track", "identify", "page", "screen"]
    messageId: str
    timestamp: str
    userId: str | None = None
    anonymousId: str | None = None
    event: str | None = None
    name: str | None = None
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    context: _Context = _Context()


class _Identifiers(BaseModel):
    id: str | None = None
    email: str | None = None
    cio_id: str | None = None


class _WebhookData(BaseModel):
    customer_id: str | None = None
    identifiers: _Identifiers = _Identifiers()
    delivery_id: str | None = None
    campaign_id: int | None = None


class WebhookModel(BaseModel):
    event_id: str
    object_type: str | None = None
    metric: str
    timestamp: int
    data: _WebhookData


# -- records -----------------------------------------------------------------------------


def _timestamp(rng: random.Random) -> str:
    second = 1_714_500_000 + rng.randrange(86_400 * 30)
    millis = rng.randrange(1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{millis:03d}Z"


def generate(count: int, seed: int = 42) -> list[tuple[str, dict[str, Any]]]:
    """``count`` records as ("pipelines" | "webhook", record): 70% track, 15% identify,
    15% webhooks; about 3% of tracks are anonymous (no userId)."""
    rng = random.Random(seed)
    records: list[tuple[str, dict[str, Any]]] = []
    for i in range(count):
        user = f"cust-{rng.randrange(50_000)}"
        email = f"{user}@example.com"
        roll = rng.random()
        if roll < 0.70:
            name = rng.choice(_TRACK_EVENTS)
            properties: dict[str, Any] = {"product_id": f"p-{rng.randrange(500)}"}
            if name == "Order Completed":
                properties = {
                    "order_id": f"o-{i}",
                    "total": round(rng.uniform(5, 300), 2),
                    "currency": "USD",
                    "products": [
                        {
                            "sku": f"SKU-{rng.randrange(900)}",
                            "category": rng.choice(_CATEGORIES),
                            "days_supply": rng.choice((30, 60, 90)),
                            "price": round(rng.uniform(5, 80), 2),
                            "quantity": rng.randrange(1, 4),
                        }
                        for _ in range(rng.randrange(1, 4))
                    ],
                }
            elif name == "Product Added":
                properties["cart_id"] = f"cart-{rng.randrange(10_000)}"
            record: dict[str, Any] = {
                "type": "track",
                "messageId": f"m-{i}",
                "anonymousId": f"anon-{rng.randrange(10**9)}",
                "event": name,
                "timestamp": _timestamp(rng),
                "properties": properties,
                "context": {"traits": {"email": email}, "ip": "203.0.113.7"},
            }
            if rng.random() > 0.03:
                record["userId"] = user
            records.append(("pipelines", record))
        elif roll < 0.85:
            records.append(
                (
                    "pipelines",
                    {
                        "type": "identify",
                        "messageId": f"m-{i}",
                        "userId": user,
                        "timestamp": _timestamp(rng),
                        "traits": {
                            "email": email,
                            "phone": f"+1555{rng.randrange(10**7):07d}",
                            "subscription_status": rng.choice(("active", "paused", "cancelled")),
                            "first_name": "Ada",
                        },
                    },
                )
            )
        else:
            records.append(
                (
                    "webhook",
                    {
                        "event_id": f"01H{i:020d}",
                        "object_type": rng.choice(("email", "push", "sms")),
                        "metric": rng.choice(("sent", "delivered", "opened", "clicked")),
                        "timestamp": 1_714_500_000 + rng.randrange(86_400 * 30),
                        "data": {
                            "customer_id": user,
                            "identifiers": {"id": user, "email": email, "cio_id": f"cio_{i}"},
                            "delivery_id": f"dlv-{i}",
                            "campaign_id": rng.randrange(100),
                        },
                    },
                )
            )
    return records


# -- measurement ---------------------------------------------------------------------------

Batch = list[tuple[Callable[..., Any], bytes]]


def _time(batch: Batch, call: Callable[[Callable[..., Any], bytes], Any]) -> float:
    for function, value in batch[:1000]:  # warm-up: caches, branch predictors
        call(function, value)
    started = time.perf_counter()
    for function, value in batch:
        call(function, value)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/decode.py", *(argv or sys.argv[1:])])

    started = time.perf_counter()
    pool = generate(min(args.records, POOL_SIZE), args.seed)
    registry = FileSchemaRegistry.from_path(
        Path(__file__).resolve().parents[1] / "schemas" / "registry"
    )

    def decoder(fmt: str, framing: str = "plain") -> Decoder:
        topic = TopicConfig.model_validate({"name": fmt, "format": fmt, "framing": framing})
        return Decoder(topic, registry)

    decoders = {
        ("pipelines", "json"): decoder("pipelines_json"),
        ("webhook", "json"): decoder("webhook_json"),
        ("pipelines", "plain"): decoder("pipelines_avro"),
        ("webhook", "plain"): decoder("webhook_avro"),
        ("pipelines", "confluent"): decoder("pipelines_avro", "confluent"),
        ("webhook", "confluent"): decoder("webhook_avro", "confluent"),
    }
    schema_ids = {"pipelines": PIPELINES_SCHEMA_ID, "webhook": WEBHOOK_SCHEMA_ID}
    json_batch: Batch = []
    plain_batch: Batch = []
    framed_batch: Batch = []
    model_batch: Batch = []
    json_bytes = 0
    for kind, record in pool:
        as_json = orjson.dumps(record)
        body = encode_avro(kind, record)  # type: ignore[arg-type]
        json_bytes += len(as_json)
        json_batch.append((decoders[(kind, "json")].decode, as_json))
        plain_batch.append((decoders[(kind, "plain")].decode, body))
        framed = confluent_frame(schema_ids[kind], body)
        framed_batch.append((decoders[(kind, "confluent")].decode, framed))
        model_batch.append(
            (PipelinesModel if kind == "pipelines" else WebhookModel, as_json)  # type: ignore[arg-type]
        )
    count = args.records
    for batch in (json_batch, plain_batch, framed_batch, model_batch):
        batch[:] = [batch[i % len(batch)] for i in range(count)]
    prepared = time.perf_counter() - started

    source = SourcePosition("bench", 0, 0)
    # Same outcome for every encoding (spot check, outside the timings).
    for i in range(0, len(pool), max(1, len(pool) // 200)):
        outcomes = {
            repr(function(value, None, source))
            for function, value in (json_batch[i], plain_batch[i], framed_batch[i])
        }
        assert len(outcomes) == 1, f"record {i} decodes differently across encodings"

    def ours(function: Callable[..., Any], value: bytes) -> Any:
        return function(value, None, source)

    def naive(model: Callable[..., Any], value: bytes) -> Any:
        return model.model_validate(json.loads(value))  # type: ignore[attr-defined]

    def pydantic_json(model: Callable[..., Any], value: bytes) -> Any:
        return model.model_validate_json(value)  # type: ignore[attr-defined]

    rows = [
        ("streamsync json (orjson + dict checks)", _time(json_batch, ours)),
        ("streamsync avro plain", _time(plain_batch, ours)),
        ("streamsync avro confluent", _time(framed_batch, ours)),
        ("baseline json.loads + pydantic", _time(model_batch, naive)),
        ("baseline pydantic model_validate_json", _time(model_batch, pydantic_json)),
    ]
    baseline = rows[3][1]
    print(f"command: {command}")
    print(
        f"records: {count} ({len(pool)} distinct, {json_bytes / max(len(pool), 1):.0f} "
        "B/record as JSON; "
        f"generated and encoded in {prepared:.1f}s); python {sys.version.split()[0]}"
    )
    print(f"{'decoder':<42} {'seconds':>8} {'records/s':>12} {'us/record':>10} {'vs baseline':>12}")
    for label, seconds in rows:
        rate = count / seconds if seconds else float("inf")
        per = seconds / max(count, 1) * 1e6
        print(
            f"{label:<42} {seconds:>8.3f} {rate:>12,.0f} {per:>10.2f} "
            f"{baseline / seconds if seconds else float('inf'):>11.2f}x"
        )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak RSS: {peak_kib / 1024:.0f} MiB (whole process, records held in memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
