"""MoEngage: the Data API (Track User or Bulk Import) or Cohort Sync.

Modes (``mode``):

* ``bulk_import`` (default) - ``POST /v1/transition/{app_id}`` with customer elements.
  The API answers 200 even when elements fail, so the body is read: ``status: fail``
  means the request was refused (split and retried to isolate the bad element), and an
  ``errors`` list of ``{index, type, message}`` (what the local stand-in reports)
  dead-letters the changes behind those elements.
* ``track_user`` - ``POST /v1/customer/{app_id}``, one customer per request.
* ``cohort_sync`` - ``POST /v1/integrations/cohortsync``, ``add_members`` /
  ``remove_members`` by ``uid`` per audience (cohort). MoEngage matches existing users
  only; it never creates them.

Membership in the data-API modes is an array attribute (``array_attribute``) updated
with ``addValueToArrayField`` / ``removeValueFromArrayField`` (only the audience names
streamsync manages), and/or a boolean attribute per audience (``boolean_attributes``).
MoEngage refuses adding and removing the same attribute in one call (ArrayFieldError),
so a customer who entered one audience and left another within a batch gets its
removals in a second request, sent after the first was acknowledged.

Limits enforced here, from moengage.com/docs/api/data/data-overview (request bodies
at most 128 KB; the customer_id values the API refuses),
moengage.com/docs/api/bulk/bulk-import-users-and-events (Bulk Import: 100 KB per call;
10,000 users and 30,000 events per minute on the partner-guide copy of that page, 60,000
on the OpenAPI copy - the lower is the default), moengage.com/docs/api/user/track-user
(10,000 user updates per minute) and moengage.com/docs/api/cohort-sync/sync-cohort-members
(300 requests per minute, 128 KB, one cohort action per request). ``x-ratelimit-reset``
holds the seconds left in the window, not a time.
Auth: Basic ``base64(app_id:data_api_key)`` plus ``MOE-APPKEY: app_id``; the host is
``https://api-{data_center}.moengage.com`` unless ``base_url`` says otherwise.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from pydantic import Field, SecretStr, model_validator

from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.client import (
    Change,
    DestinationClient,
    Request,
    Response,
    raise_for_status,
)
from streamsync.destinations.config import DestinationConfig, RateLimit, duplicate_names
from streamsync.destinations.errors import BatchRejected, Rejection
from streamsync.destinations.identifiers import identifier

#: General Data API body limit (data-overview: "The payload can not exceed 128KB").
MAX_BODY_BYTES = 128 * 1024
#: Bulk Import's own limit (bulk import page: 100 KB per call).
MAX_BULK_BODY_BYTES = 100 * 1024
#: Elements per Bulk Import request: a batch of this many customers, split by size.
MAX_BULK_ELEMENTS = 100
DEFAULT_USER_RATE_LIMIT = RateLimit(limit=10_000, window_s=60.0)
#: Cohort Sync: 300 requests per minute.
DEFAULT_COHORT_RATE_LIMIT = RateLimit(limit=300, window_s=60.0)
#: Customer ids the Data API rejects (data-overview); such deltas are refused up front.
BLOCKED_CUSTOMER_IDS = frozenset(
    {"unknown", "guest", "null", "0", "1", "true", "false", "none", "user_attribute_unique_id", ""}
)

#: The attribute keys MoEngage reads as array operations, not attribute names.
_ARRAY_OPS = ("addValueToArrayField", "removeValueFromArrayField")

Mode = Literal["bulk_import", "track_user", "cohort_sync"]
UidSource = Literal["customer_id", "email", "cio_id"]
_DEFAULT_UID: list[UidSource] = ["customer_id"]
DataCenter = Literal["01", "02", "03", "04", "05", "06", "101"]


class MoEngageConfig(DestinationConfig):
    kind: Literal["moengage"] = "moengage"
    app_id: str = Field(min_length=1, description="Workspace ID (formerly App ID); not a secret")
    data_center: DataCenter = "01"
    mode: Mode = "bulk_import"
    array_attribute: str | None = Field(default="streamsync_audiences", min_length=1)
    boolean_attributes: dict[str, str] = Field(default_factory=dict)
    identifiers: list[UidSource] = Field(default_factory=lambda: _DEFAULT_UID, min_length=1)
    update_existing_only: bool = False
    max_body_bytes: int | None = Field(default=None, gt=1024, le=MAX_BODY_BYTES)
    rate_limit: RateLimit | None = None
    partner: str = Field(default="streamsync", min_length=1)
    cohort_name_prefix: str = Field(
        default=".",
        description="sync-cohort-members' example and its overview page have partner cohort "
        "names start with a period; the audience name follows it",
    )
    cohort_ids: dict[str, str] = Field(
        default_factory=dict, description="audience -> cohort_id (default: the audience name)"
    )

    @model_validator(mode="before")
    @classmethod
    def _host(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("base_url"):
            data = {**data, "base_url": f"https://api-{data.get('data_center', '01')}.moengage.com"}
        return data

    @model_validator(mode="after")
    def _writes_something(self) -> MoEngageConfig:
        if (
            self.mode != "cohort_sync"
            and self.array_attribute is None
            and not (self.boolean_attributes)
        ):
            raise ValueError("set array_attribute or boolean_attributes")
        for name in (self.array_attribute, *self.boolean_attributes.values()):
            if name is not None and name.startswith("moe_"):
                raise ValueError(f"attribute names must not start with moe_ ({name})")
        # One element per customer holds every write: a name used twice would have one
        # value overwrite the other without a word.
        named = [(op, "the array operation") for op in _ARRAY_OPS]
        if self.array_attribute is not None:
            named.append((self.array_attribute, "array_attribute"))
        for audience, name in self.boolean_attributes.items():
            named.append((name, f"boolean_attributes.{audience}"))
        duplicate_names(named)
        return self

    def named_audiences(self) -> list[tuple[str, str]]:
        named = super().named_audiences()
        named += [(audience, "boolean_attributes") for audience in self.boolean_attributes]
        return named + [(audience, "cohort_ids") for audience in self.cohort_ids]

    def effective_rate_limit(self) -> RateLimit:
        if self.rate_limit is not None:
            return self.rate_limit
        return DEFAULT_COHORT_RATE_LIMIT if self.mode == "cohort_sync" else DEFAULT_USER_RATE_LIMIT

    def body_limit(self) -> int:
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return MAX_BULK_BODY_BYTES if self.mode == "bulk_import" else MAX_BODY_BYTES


class MoEngageClient(DestinationClient):
    kind = "moengage"

    def __init__(self, name: str, config: MoEngageConfig, secret: SecretStr) -> None:
        per_batch = 1 if config.mode == "track_user" else MAX_BULK_ELEMENTS
        super().__init__(name, config.effective_rate_limit(), per_batch)
        if config.mode == "cohort_sync":
            self.max_customers_per_batch = 1000
        self.config = config
        token = base64.b64encode(f"{config.app_id}:{secret.get_secret_value()}".encode()).decode()
        self._headers = {
            "Content-Type": "application/json",
            "Authorization": f"Basic {token}",
            "MOE-APPKEY": config.app_id,
        }
        self._body_limit = config.body_limit()
        self._secrets = [secret.get_secret_value(), token]

    def secret_values(self) -> list[str]:
        return list(self._secrets)

    def identify(self, delta: MembershipDelta) -> Any | None:
        for source in self.config.identifiers:
            value = identifier(delta, source)
            if value is not None:
                return value
        return None

    def check(self, delta: MembershipDelta) -> str | None:
        uid = self.identify(delta)
        if isinstance(uid, str) and uid.strip().lower() in BLOCKED_CUSTOMER_IDS:
            return "MoEngage rejects this customer_id value (Blacklisted)"
        return None

    def _value(self, change: Change) -> str:
        suffix = self.config.holdout_suffix
        return change.audience + suffix if change.holdout else change.audience

    # -- data API ----------------------------------------------------------------------

    def _element(self, uid: str, changes: list[Change], array_op: str | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        for change in changes:
            name = self.config.boolean_attributes.get(change.audience)
            if name is not None:
                attributes[name + (self.config.holdout_suffix if change.holdout else "")] = (
                    change.enter
                )
        array = self.config.array_attribute
        if array is not None and array_op is not None:
            values = [self._value(c) for c in changes]
            attributes[array_op] = {array: values}
        return {
            "type": "customer",
            "customer_id": uid,
            "attributes": attributes,
            "update_existing_only": self.config.update_existing_only,
        }

    def _rounds(self, changes: list[Change]) -> list[list[tuple[dict[str, Any], list[Change]]]]:
        """Elements in rounds: a customer adding and removing array values gets its
        removals in the second round (never both in one call)."""
        by_uid: dict[str, list[Change]] = {}
        for change in changes:
            by_uid.setdefault(str(change.identity), []).append(change)
        first: list[tuple[dict[str, Any], list[Change]]] = []
        second: list[tuple[dict[str, Any], list[Change]]] = []
        array = self.config.array_attribute is not None
        for uid, group in by_uid.items():
            adds = [c for c in group if c.enter]
            removes = [c for c in group if not c.enter]
            if not array:
                first.append((self._element(uid, group, None), group))
            elif adds and removes:
                first.append((self._element(uid, adds, "addValueToArrayField"), adds))
                # booleans for the removed audiences go with the removals
                second.append((self._element(uid, removes, "removeValueFromArrayField"), removes))
            elif adds:
                first.append((self._element(uid, adds, "addValueToArrayField"), adds))
            else:
                first.append((self._element(uid, removes, "removeValueFromArrayField"), removes))
        return [r for r in (first, second) if r]

    def plan(self, changes: list[Change]) -> list[Request]:
        if self.config.mode == "cohort_sync":
            return self._plan_cohorts(changes)
        app = self.config.app_id
        requests: list[Request] = []
        for round_ in self._rounds(changes):
            if self.config.mode == "track_user":
                for element, carried in round_:
                    requests.append(
                        Request("POST", f"/v1/customer/{app}", orjson.dumps(element),
                                self._headers, carried, cost=1, objects=1)
                    )  # fmt: skip
                continue
            requests.extend(self._bulk_requests(round_))
        return requests

    def _bulk_requests(self, round_: list[tuple[dict[str, Any], list[Change]]]) -> list[Request]:
        path = f"/v1/transition/{self.config.app_id}"
        envelope = len(b'{"type":"transition","elements":[]}')
        requests: list[Request] = []
        elements: list[dict[str, Any]] = []
        groups: list[list[Change]] = []
        size = envelope

        def close() -> None:
            if elements:
                body = orjson.dumps({"type": "transition", "elements": elements})
                requests.append(
                    Request("POST", path, body, self._headers,
                            [c for g in groups for c in g], cost=len(elements),
                            objects=len(elements), meta={"elements": list(groups)})
                )  # fmt: skip

        for element, carried in round_:
            encoded = len(orjson.dumps(element)) + 1
            if elements and (
                size + encoded > self._body_limit or len(elements) >= MAX_BULK_ELEMENTS
            ):
                close()
                elements, groups, size = [], [], envelope
            elements.append(element)
            groups.append(carried)
            size += encoded
        close()
        return requests

    # -- cohort sync -------------------------------------------------------------------

    def _plan_cohorts(self, changes: list[Change]) -> list[Request]:
        by_cohort: dict[tuple[str, str], list[Change]] = {}
        for change in changes:
            action = "add_members" if change.enter else "remove_members"
            by_cohort.setdefault((self._value(change), action), []).append(change)
        requests: list[Request] = []
        for (cohort, action), group in by_cohort.items():
            audience = group[0].audience
            cohort_id = self.config.cohort_ids.get(audience, audience)
            if group[0].holdout:
                cohort_id += self.config.holdout_suffix
            start = 0
            while start < len(group):
                members: list[dict[str, str]] = []
                carried: list[Change] = []
                size = 512
                for change in group[start:]:
                    member = {"uid": str(change.identity)}
                    grow = len(orjson.dumps(member)) + 1
                    if members and size + grow > self._body_limit:
                        break
                    members.append(member)
                    carried.append(change)
                    size += grow
                start += len(carried)
                body = {
                    "action": action,
                    "partner": self.config.partner,
                    "parameters": {
                        "cohort_name": self.config.cohort_name_prefix + cohort,
                        "cohort_id": cohort_id,
                        "cohort_description": f"streamsync audience {audience}",
                        "members": members,
                    },
                }
                requests.append(
                    Request("POST", "/v1/integrations/cohortsync", orjson.dumps(body),
                            self._headers, carried, cost=1, objects=len(members))
                )  # fmt: skip
        return requests

    # -- responses ---------------------------------------------------------------------

    def reset_at(self, response: Response, now_epoch: float) -> float | None:
        try:
            return now_epoch + float(response.headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None

    def interpret(self, request: Request, response: Response) -> list[tuple[Change, Rejection]]:
        try:
            body = orjson.loads(response.body) if response.body else {}
        except orjson.JSONDecodeError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        raw_error = body.get("error")
        error: dict[str, Any] = raw_error if isinstance(raw_error, dict) else {}
        request_id = str(body.get("request_id") or error.get("request_id") or "")
        if not 200 <= response.status < 300:
            raise_for_status(self, _with_message(response, error), request_id)
        if body.get("status") == "fail":  # Bulk Import answers 200 for refused requests
            raise BatchRejected(Rejection(response.status, _describe(error), request_id))
        rejected: list[tuple[Change, Rejection]] = []
        groups = request.meta.get("elements")
        listed = body.get("errors")
        for item in listed if isinstance(listed, list) else []:  # a count names no element
            if not isinstance(item, dict) or groups is None:
                continue
            index = item.get("index")
            if isinstance(index, int) and 0 <= index < len(groups):
                rejection = Rejection(response.status, _describe(item), request_id)
                rejected.extend((change, rejection) for change in groups[index])
        return rejected


def _describe(error: dict[str, Any]) -> str:
    kind, message = error.get("type"), error.get("message")
    return ": ".join(str(part) for part in (kind, message) if part) or "rejected"


def _with_message(response: Response, error: dict[str, Any]) -> Response:
    if not error:
        return response
    return Response(response.status, response.headers, _describe(error).encode())
