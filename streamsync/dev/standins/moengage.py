"""MoEngage stand-in: the Data API (Track User, Bulk Import) and Cohort Sync.

* Auth: ``Authorization: Basic base64(app_id:key)`` and ``MOE-APPKEY: app_id``; a
  wrong key is 401, an app id that differs between path, header and auth is 409.
* Body at most 128 KB (Bulk Import: 100 KB); more is 413 ``PayloadTooLarge`` and a
  recorded violation.
* Track User ``POST /v1/customer/{app_id}``: one ``{"type": "customer", "customer_id",
  "attributes"}``; ``addValueToArrayField`` and ``removeValueFromArrayField`` of the same
  attribute in one call is 400 ``ArrayFieldError`` (a violation).
* Bulk Import ``POST /v1/transition/{app_id}``: ``{"type": "transition", "elements"}``;
  answers 200 even when elements fail. Real MoEngage reports failed elements only on its
  dashboard; this stand-in lists them in the 200 body as ``errors: [{index, type,
  message}]`` so delivery can be checked to read the body.
* Cohort Sync ``POST /v1/integrations/cohortsync``: ``add_members`` /
  ``remove_members`` by ``uid``; only existing users are matched, never created.
* ``update_existing_only: true`` for a customer that does not exist, and a cohort member
  that does not exist, are accepted without a word, as documented: a 200 means
  "accepted and will be processed soon", not that the user was found.
* Rate limits over 60-second windows: 10,000 users per minute for the data API, 300
  requests per minute for Cohort Sync (configurable); ``x-ratelimit-limit``,
  ``-remaining`` and ``-reset`` (seconds left) on every answer, 429 ``RateLimitError``.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

from aiohttp import web

from streamsync.dev.standins.common import FixedWindow, StandIn, read_json

MAX_BODY = 128 * 1024
MAX_BULK_BODY = 100 * 1024
BLOCKED_IDS = frozenset(
    {"unknown", "guest", "null", "0", "1", "true", "false", "none", "user_attribute_unique_id"}
)


class MoEngageStandIn(StandIn):
    reset_style = "seconds_left"
    header_prefix = "x-ratelimit-"

    def __init__(
        self,
        app_id: str,
        api_key: str,
        *,
        user_limit: int = 10_000,
        cohort_limit: int = 300,
        window_s: float = 60.0,
        strict: bool = False,
    ) -> None:
        super().__init__(strict=strict)
        self.app_id = app_id
        self.api_key = api_key
        self.users_window = FixedWindow(user_limit, window_s)
        self.cohort_window = FixedWindow(cohort_limit, window_s)
        self.users: dict[str, dict[str, Any]] = {}
        self.cohorts: dict[str, set[str]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/customer/{app_id}", self.track_user),
            web.post("/v1/transition/{app_id}", self.bulk_import),
            web.post("/v1/integrations/cohortsync", self.cohort_sync),
        ]

    def profiles(self) -> dict[str, Any]:
        return {"users": self.users, "cohorts": {k: sorted(v) for k, v in self.cohorts.items()}}

    def clear(self) -> None:
        self.users.clear()
        self.cohorts.clear()

    @staticmethod
    def _fail(
        status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"status": "fail", "error": {"type": kind, "message": message,
                                            "request_id": uuid.uuid4().hex}}  # fmt: skip
        return web.json_response(body, status=status, headers=headers)

    def _auth(self, request: web.Request, path_app: str | None) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.app_id}:{self.api_key}".encode()).decode()
        if header != f"Basic {expected}":
            self.counters["unauthorized"] += 1
            return self._fail(401, "Authentication required", "App Secret key mismatch")
        if request.headers.get("MOE-APPKEY") != self.app_id or (
            path_app is not None and path_app != self.app_id
        ):
            return self._fail(409, "InvalidParams", "App key mismatch")
        if request.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return self._fail(415, "UnsupportedMediaType", "Content-Type must be application/json")
        return None

    async def _prepare(
        self, request: web.Request, window: FixedWindow, limit: int, cost_of: Any
    ) -> tuple[Any, dict[str, str]] | web.StreamResponse:
        problem = self._auth(request, request.match_info.get("app_id"))
        if problem is not None:
            return problem
        body, raw = await read_json(request)
        if len(raw) > limit:
            self.violation("over_limit", f"{request.path}: body of {len(raw)} bytes > {limit}")
            return self._fail(413, "PayloadTooLarge", "The payload can not exceed 128KB")
        cost = cost_of(body)
        limited = {"status": "fail", "error": {"message": "Rate limit exceeded",
                                               "type": "RateLimitError"}}  # fmt: skip
        gate = await self.gate(request, window, cost, limited)
        if not isinstance(gate, dict):
            return gate
        if not isinstance(body, dict):
            return self._fail(400, "InvalidParams", "malformed JSON body", gate)
        return body, gate

    def _success(
        self, headers: dict[str, str], errors: list[dict[str, Any]] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {
            "status": "success",
            "message": "Your request has been accepted and will be processed soon.",
            "request_id": uuid.uuid4().hex,
        }
        if errors:
            body["errors"] = errors
        return web.json_response(body, headers=headers)

    def _apply_customer(self, element: Any) -> tuple[str, str] | None:
        """(type, message) when the element is refused."""
        if not isinstance(element, dict) or element.get("type") != "customer":
            return "InvalidParams", "element type must be customer"
        uid = element.get("customer_id")
        if not isinstance(uid, str) or not uid or uid.lower() in BLOCKED_IDS:
            return "Blacklisted", "customer_id is missing or not allowed"
        if uid in self.faults.reject_ids:
            return "InvalidParams", "customer_id refused"
        attributes = element.get("attributes", {})
        if not isinstance(attributes, dict):
            return "InvalidParams", "attributes must be an object"
        adds = attributes.get("addValueToArrayField", {}) or {}
        removes = attributes.get("removeValueFromArrayField", {}) or {}
        both = set(adds) & set(removes)
        if both:
            self.violation("array_add_and_remove", f"{sorted(both)} added and removed in one call")
            return "ArrayFieldError", "cannot add and remove the same attribute in one call"
        profile = self.users.get(uid)
        if profile is None:
            if element.get("update_existing_only"):
                return None
            profile = self.users[uid] = {}
        for name, values in removes.items():
            self.array_removing(uid, name, list(values))
        for name, values in adds.items():
            self.array_added(uid, name, list(values))
            current = [v for v in profile.get(name, []) if v not in values]
            profile[name] = current + list(values)
        for name, values in removes.items():
            profile[name] = [v for v in profile.get(name, []) if v not in values]
        for name, value in attributes.items():
            if name not in ("addValueToArrayField", "removeValueFromArrayField"):
                profile[name] = value
        return None

    async def track_user(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._prepare(request, self.users_window, MAX_BODY, lambda _b: 1)
        if not isinstance(prepared, tuple):
            return prepared
        body, headers = prepared
        problem = self._apply_customer(body)
        if problem is not None:
            return self._fail(400, problem[0], problem[1], headers)
        return self._success(headers)

    async def bulk_import(self, request: web.Request) -> web.StreamResponse:
        def cost(body: Any) -> int:
            elements = body.get("elements") if isinstance(body, dict) else None
            return max(1, len(elements)) if isinstance(elements, list) else 1

        prepared = await self._prepare(request, self.users_window, MAX_BULK_BODY, cost)
        if not isinstance(prepared, tuple):
            return prepared
        body, headers = prepared
        elements = body.get("elements")
        if body.get("type") != "transition" or not isinstance(elements, list) or not elements:
            return self._fail(
                400, "InvalidParams", "type transition with elements required", headers
            )
        arrays: dict[tuple[str, str], set[str]] = {}
        for element in elements:
            if isinstance(element, dict) and isinstance(element.get("attributes"), dict):
                for op in ("addValueToArrayField", "removeValueFromArrayField"):
                    for name in element["attributes"].get(op) or {}:
                        arrays.setdefault((str(element.get("customer_id")), name), set()).add(op)
        for (uid, name), ops in arrays.items():
            if len(ops) > 1:
                self.violation(
                    "array_add_and_remove", f"{uid}: {name} added and removed in one call"
                )
        self.counters["objects"] += len(elements)
        errors = []
        for index, element in enumerate(elements):
            problem = self._apply_customer(element)
            if problem is not None:
                errors.append({"index": index, "type": problem[0], "message": problem[1]})
        return self._success(headers, errors)

    async def cohort_sync(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._prepare(request, self.cohort_window, MAX_BODY, lambda _b: 1)
        if not isinstance(prepared, tuple):
            return prepared
        body, headers = prepared
        action = body.get("action")
        parameters = body.get("parameters")
        if action not in ("add_members", "remove_members") or not isinstance(parameters, dict):
            return self._fail(400, "InvalidParams", "action and parameters required", headers)
        cohort_id = parameters.get("cohort_id")
        name = parameters.get("cohort_name")
        members = parameters.get("members")
        if not cohort_id or not isinstance(name, str) or not isinstance(members, list):
            return self._fail(
                400, "InvalidParams", "cohort_id, cohort_name, members required", headers
            )
        if not name or any(ch in name for ch in '|*?\\:<>=$"'):
            return self._fail(
                400, "InvalidParams", "cohort_name has a forbidden character", headers
            )
        cohort = self.cohorts.setdefault(str(cohort_id), set())
        for member in members:
            uid = member.get("uid") if isinstance(member, dict) else None
            if not isinstance(uid, str) or uid not in self.users:
                self.counters["cohort_unmatched"] += 1
                continue  # matches existing users only
            if action == "add_members":
                cohort.add(uid)
            else:
                cohort.discard(uid)
        return self._success(headers)
