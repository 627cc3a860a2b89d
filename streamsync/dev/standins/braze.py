"""Braze stand-in: ``POST /users/track`` as braze.com/docs/api/endpoints/user_data/post_user_track
describes it.

* Auth: ``Authorization: Bearer <key>``, else 401.
* Body: ``attributes``, ``events``, ``purchases`` arrays, at most 75 objects each
  (more: 400 "Max Input Length Exceeded", recorded as a violation).
* Identifiers: ``external_id``, ``user_alias``, ``braze_id``, ``email`` or ``phone``
  (email wins over phone); an object without one is a per-object error.
* Attributes: ``{"add": [...], "remove": [...]}`` on arrays (unique values, an added
  value moves to the end), a list replaces, ``null`` removes, scalars set.
  ``_update_existing_only`` (default true for user_alias objects) skips unknown profiles,
  for attribute and event objects alike.
* Answer: 201 ``{"message": "success", "attributes_processed", "events_processed",
  "errors": [{"type", "input_array", "index"}]}`` - partial success names the refused
  objects; the rest is applied. An object skipped by ``_update_existing_only`` is not an
  error and still counts as processed: the documented counts are of objects "queued to
  be processed", and braze.com/docs/api/errors says a success does not mean the user
  was known ("you may have provided an unknown user ID"). Braze does not tell which
  users it did not find, so neither does this stand-in.
* Rate limit: 3,000 requests per 3 seconds (configurable), ``X-RateLimit-Limit``,
  ``-Remaining`` and ``-Reset`` (epoch seconds) on every answer.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from streamsync.dev.standins.common import FixedWindow, StandIn, read_json

MAX_OBJECTS = 75
_ID_FIELDS = ("external_id", "user_alias", "braze_id", "email", "phone")


class BrazeStandIn(StandIn):
    reset_style = "epoch"

    def __init__(
        self,
        api_key: str,
        *,
        limit: int = 3000,
        window_s: float = 3.0,
        partner_key: str = "dev-braze-partner-key",
        data_import_key: str = "dev-braze-data-import-key",
        cohort_limit: int = 250_000,
        cohort_window_s: float = 3600.0,
        strict: bool = False,
    ) -> None:
        super().__init__(strict=strict)
        self.api_key = api_key
        self.partner_key = partner_key
        self.data_import_key = data_import_key
        self.window = FixedWindow(limit, window_s)
        self.cohort_window = FixedWindow(cohort_limit, cohort_window_s)
        self.cohorts: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.objects_per_request: list[int] = []

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/users/track", self.track),
            web.post("/partners/{partner}/cohorts", self.cohort_create),
            web.post("/partners/{partner}/cohorts/users", self.cohort_users),
        ]

    def profiles(self) -> dict[str, Any]:
        cohorts = {
            cohort_id: {"name": c["name"], "members": sorted(c["members"])}
            for cohort_id, c in self.cohorts.items()
        }
        return {"users": self.users, "events": self.events, "cohorts": cohorts}

    def clear(self) -> None:
        self.cohorts.clear()
        self.users.clear()
        self.events.clear()
        self.objects_per_request.clear()

    @staticmethod
    def _key(obj: dict[str, Any]) -> str | None:
        external_id = obj.get("external_id")
        if isinstance(external_id, str) and external_id:
            return "external_id:" + external_id
        alias = obj.get("user_alias")
        if isinstance(alias, dict) and alias.get("alias_name") and alias.get("alias_label"):
            return f"user_alias:{alias['alias_label']}:{alias['alias_name']}"
        for name in ("braze_id", "email", "phone"):
            value = obj.get(name)
            if isinstance(value, str) and value:
                return f"{name}:{value}"
        return None

    def _rejected(self, obj: dict[str, Any]) -> bool:
        ids = self.faults.reject_ids
        return bool(ids) and any(obj.get(name) in ids for name in ("external_id", "email", "phone"))

    async def track(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.counters["unauthorized"] += 1
            return web.json_response(
                {"message": "Invalid API key: check the key and the instance"}, status=401
            )
        gate = await self.gate(request, self.window, 1, {"message": "429 Rate Limited"})
        if not isinstance(gate, dict):
            return gate
        headers = gate
        body, _raw = await read_json(request)
        if not isinstance(body, dict):
            return web.json_response({"message": "Invalid JSON"}, status=400, headers=headers)
        arrays = {}
        for name in ("attributes", "events", "purchases"):
            items = body.get(name, [])
            if not isinstance(items, list):
                return web.json_response(
                    {"message": f"'{name}' must be an array"}, status=400, headers=headers
                )
            if len(items) > MAX_OBJECTS:
                self.violation("over_limit", f"{len(items)} {name} objects in one request")
                return web.json_response(
                    {"message": "Max Input Length Exceeded"}, status=400, headers=headers
                )
            arrays[name] = items
        self.objects_per_request.append(sum(len(v) for v in arrays.values()))
        self.counters["objects"] += sum(len(v) for v in arrays.values())
        errors: list[dict[str, Any]] = []
        processed = 0
        for index, obj in enumerate(arrays["attributes"]):
            problem = self._apply_attributes(obj)
            if problem is None:
                processed += 1
            else:
                errors.append({"type": problem, "input_array": "attributes", "index": index})
        events = 0
        for index, obj in enumerate(arrays["events"]):
            problem = self._apply_event(obj)
            if problem is None:
                events += 1
            else:
                errors.append({"type": problem, "input_array": "events", "index": index})
        answer: dict[str, Any] = {"message": "success"}
        if "attributes" in body:
            answer["attributes_processed"] = processed
        if "events" in body:
            answer["events_processed"] = events
        if errors:
            answer["errors"] = errors
        return web.Response(
            body=orjson.dumps(answer), status=201, content_type="application/json", headers=headers
        )

    def _apply_attributes(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return "attributes object must be an object"
        key = self._key(obj)
        if key is None:
            return "'external_id', 'user_alias', 'braze_id', 'email' or 'phone' is required"
        if self._rejected(obj):
            return f"Invalid identifier for {key.split(':', 1)[0]}"
        update_only = obj.get("_update_existing_only", "user_alias" in obj)
        profile = self.users.get(key)
        if profile is None:
            if update_only:
                return None  # accepted, nothing to update
            profile = self.users[key] = {}
        for name, value in obj.items():
            if name in _ID_FIELDS or name.startswith("_"):
                continue
            if isinstance(value, dict) and ("add" in value or "remove" in value):
                adds, removes = value.get("add", []), value.get("remove", [])
                if not isinstance(adds, list) or not isinstance(removes, list):
                    return f"'{name}' add/remove must be arrays"
                current = profile.get(name)
                array = list(current) if isinstance(current, list) else []
                self.array_removing(key, name, removes)
                self.array_added(key, name, adds)
                for item in adds:
                    if item in array:
                        array.remove(item)
                    array.append(item)
                array = [item for item in array if item not in removes]
                profile[name] = array
            elif value is None:
                profile.pop(name, None)
            else:
                if isinstance(value, list):
                    self.array_added(key, name, value)
                profile[name] = value
        return None

    def _apply_event(self, obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return "event object must be an object"
        key = self._key(obj)
        if key is None:
            return "'external_id', 'user_alias', 'braze_id', 'email' or 'phone' is required"
        if not obj.get("name") or not obj.get("time"):
            return "event 'name' and 'time' are required"
        if self._rejected(obj):
            return f"Invalid identifier for {key.split(':', 1)[0]}"
        if obj.get("_update_existing_only", "user_alias" in obj) and key not in self.users:
            return None  # accepted and counted as queued, but no profile gets it
        self.events.setdefault(key, []).append(
            {k: v for k, v in obj.items() if k not in _ID_FIELDS}
        )
        return None

    # -- partner cohort import (partners/isv_partners/cohort_import) -------------------

    async def _cohort_request(
        self, request: web.Request
    ) -> tuple[dict[str, Any], dict[str, str]] | web.StreamResponse:
        body, _raw = await read_json(request)
        if not isinstance(body, dict):
            return web.json_response({"message": "Invalid JSON"}, status=400)
        if body.get("partner_api_key") != self.partner_key:
            return web.json_response({"message": "Invalid partner key"}, status=401)
        if body.get("client_secret") != self.data_import_key:
            return web.json_response({"message": "Invalid client secret"}, status=401)
        gate = await self.gate(request, self.cohort_window, 1, {"message": "429 Rate Limited"})
        if not isinstance(gate, dict):
            return gate
        return body, gate

    async def cohort_create(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._cohort_request(request)
        if not isinstance(prepared, tuple):
            return prepared
        body, headers = prepared
        cohort_id, name = body.get("cohort_id"), body.get("name")
        if not isinstance(cohort_id, str) or not cohort_id or not isinstance(name, str) or not name:
            return web.json_response(
                {"message": "cohort_id and a non-empty name are required"}, status=400,
                headers=headers,
            )  # fmt: skip
        cohort = self.cohorts.setdefault(cohort_id, {"name": name, "members": set()})
        cohort["name"] = name
        return web.json_response({"message": "success"}, status=201, headers=headers)

    async def cohort_users(self, request: web.Request) -> web.StreamResponse:
        prepared = await self._cohort_request(request)
        if not isinstance(prepared, tuple):
            return prepared
        body, headers = prepared
        cohort = self.cohorts.get(str(body.get("cohort_id")))
        changes = body.get("cohort_changes")
        if cohort is None or not isinstance(changes, list):
            return web.json_response(
                {"message": "invalid cohort_id or cohort_changes"}, status=400, headers=headers
            )
        total = 0
        for change in changes:
            if not isinstance(change, dict):
                return web.json_response({"message": "bad cohort_changes"}, status=400)
            total += sum(len(change.get(k) or []) for k in ("user_ids", "device_ids", "aliases"))
        if total > 1000:
            self.violation("over_limit", f"{total} ids in one cohort_changes request")
            return web.json_response({"message": "more than 1000 ids"}, status=400, headers=headers)
        for change in changes:
            members = [f"external_id:{u}" for u in change.get("user_ids") or []]
            members += [
                f"user_alias:{a.get('alias_label')}:{a.get('alias_name')}"
                for a in change.get("aliases") or []
                if isinstance(a, dict)
            ]
            if change.get("should_remove"):
                cohort["members"].difference_update(members)
            else:
                cohort["members"].update(members)
        return web.json_response({"message": "success"}, status=201, headers=headers)
