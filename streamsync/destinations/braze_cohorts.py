"""Braze partner cohort import: membership as Braze cohorts (``mode: cohorts``).

For teams with a Braze partner key (Braze issues one to partners only; a customer's own
REST key cannot call these endpoints). Per the cohort import page
(braze.com ``partners/isv_partners/cohort_import``):

* ``POST /partners/{partner}/cohorts`` creates or renames a cohort (``cohort_id``,
  ``name``, ``created_at``); streamsync sends it once per audience per process before the
  first change (it is idempotent, so a restart sending it again is harmless);
* ``POST /partners/{partner}/cohorts/users`` changes membership with
  ``cohort_changes: [{user_ids | aliases, should_remove}]``, at most 1,000 ids per
  request (enforced here);
* both carry ``partner_api_key`` and ``client_secret`` (the customer's Data Import Key)
  in the body, so dry-run logs mask them;
* identified users match by ``external_id`` or ``user_alias``; ``email`` and ``phone``
  cannot be used (such deltas are unmatched); 423 (resource locked) is retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import SecretStr

from streamsync.deltas.record import MembershipDelta
from streamsync.destinations.braze import BrazeClient, BrazeConfig
from streamsync.destinations.client import REDACTED, Change, Request, Response
from streamsync.destinations.errors import Rejection, RetriableError

#: user_ids + device_ids + aliases per cohort_changes request (cohort_import).
MAX_IDS_PER_REQUEST = 1000


class BrazeCohortClient(BrazeClient):
    def __init__(
        self, name: str, config: BrazeConfig, secret: SecretStr, partner_key: SecretStr
    ) -> None:
        super().__init__(name, config, secret)
        assert config.cohorts is not None
        self.cohorts = config.cohorts
        self.max_customers_per_batch = MAX_IDS_PER_REQUEST
        self._base = f"/partners/{self.cohorts.partner_name}/cohorts"
        self._auth = {
            "partner_api_key": partner_key.get_secret_value(),
            "client_secret": secret.get_secret_value(),
        }
        self._cohort_headers = {"Content-Type": "application/json"}
        self._created: set[str] = set()

    def secret_values(self) -> list[str]:
        return list(self._auth.values())

    def identify(self, delta: MembershipDelta) -> Any | None:
        found = super().identify(delta)
        if found is None or found[0] not in ("external_id", "user_alias"):
            return None
        return found

    def check(self, delta: MembershipDelta) -> str | None:
        return None  # no ride-along attributes on cohorts

    def _cohort(self, change: Change) -> tuple[str, str]:
        cohort_id = self.cohorts.cohort_ids.get(change.audience, change.audience)
        name = change.audience
        if change.holdout:
            cohort_id += self._suffix
            name += self._suffix
        return cohort_id, name

    def plan(self, changes: list[Change]) -> list[Request]:
        by_cohort: dict[tuple[str, str], list[Change]] = {}
        for change in changes:
            by_cohort.setdefault(self._cohort(change), []).append(change)
        requests: list[Request] = []
        now = datetime.now(UTC).isoformat()
        for (cohort_id, name), group in by_cohort.items():
            if cohort_id not in self._created:
                create: dict[str, Any] = {
                    **self._auth,
                    "cohort_id": cohort_id,
                    "name": name,
                    "created_at": now,
                }
                requests.append(
                    Request("POST", self._base, orjson.dumps(create), self._cohort_headers, [],
                            cost=1, meta={"creates": cohort_id})
                )  # fmt: skip
            for start in range(0, len(group), MAX_IDS_PER_REQUEST):
                chunk = group[start : start + MAX_IDS_PER_REQUEST]
                cohort_changes = []
                for remove in (False, True):
                    users = [c for c in chunk if c.enter != remove]
                    ids = [c.identity[1] for c in users if c.identity[0] == "external_id"]
                    aliases = [c.identity[1] for c in users if c.identity[0] == "user_alias"]
                    if not users:
                        continue
                    entry: dict[str, Any] = {"should_remove": remove}
                    if ids:
                        entry["user_ids"] = ids
                    if aliases:
                        entry["aliases"] = aliases
                    cohort_changes.append(entry)
                body: dict[str, Any] = {
                    **self._auth,
                    "cohort_id": cohort_id,
                    "cohort_changes": cohort_changes,
                }
                requests.append(
                    Request("POST", self._base + "/users", orjson.dumps(body),
                            self._cohort_headers, chunk, cost=1, objects=len(chunk))
                )  # fmt: skip
        return requests

    def interpret(self, request: Request, response: Response) -> list[tuple[Change, Rejection]]:
        if response.status == 423:
            raise RetriableError("HTTP 423: cohort locked")
        rejected = super().interpret(request, response)
        created = request.meta.get("creates")
        if created is not None:
            self._created.add(created)
        return rejected

    def redacted_body(self, request: Request) -> str:
        body = orjson.loads(request.body)
        for key in self._auth:
            body[key] = REDACTED
        return orjson.dumps(body).decode()
