"""Realistic Customer.io records shared by the ingest and runtime tests."""

from __future__ import annotations

import copy
from typing import Any

ORDER_COMPLETED: dict[str, Any] = {
    "type": "track",
    "messageId": "msg-0001",
    "userId": "cust-42",
    "anonymousId": "anon-9",
    "event": "Order Completed",
    "timestamp": "2024-05-01T12:34:56.789Z",
    "properties": {
        "order_id": "o-1",
        "total": 59.9,
        "products": [{"sku": "VIT-D", "category": "vitamins", "days_supply": 30}],
    },
    "context": {"traits": {"email": "ada@example.com", "cio_id": "cio_abc"}, "ip": "1.2.3.4"},
}

IDENTIFY: dict[str, Any] = {
    "type": "identify",
    "messageId": "msg-0002",
    "userId": "cust-42",
    "timestamp": "2024-05-01T12:00:00+02:00",
    "traits": {"email": "ada@example.com", "phone": "+15550100", "subscription_status": "active"},
}

PAGE: dict[str, Any] = {
    "type": "page",
    "messageId": "msg-0003",
    "userId": "cust-7",
    "name": "Pricing",
    "timestamp": "2024-05-01T00:00:00Z",
    "properties": {"path": "/pricing"},
}

WEBHOOK_SENT: dict[str, Any] = {
    "event_id": "01HXYZ",
    "object_type": "email",
    "metric": "sent",
    "timestamp": 1714566896,
    "data": {
        "customer_id": "cust-42",
        "identifiers": {"id": "cust-42", "email": "ada@example.com", "cio_id": "cio_abc"},
        "delivery_id": "dlv-1",
        "campaign_id": 7,
        "recipient": "ada@example.com",
        "content": {"subject": "not a scalar"},
    },
}


def sample(record: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``record`` with top-level ``changes`` (``None`` deletes a key)."""
    out = copy.deepcopy(record)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
