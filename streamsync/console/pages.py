"""The pages: one handler each, rendered server-side from the templates.

Every value reaches the HTML through Jinja2 with autoescaping on, so a customer id, an
event name or an audience description is always text, never markup (``<script>`` as a
customer id shows as those characters). The few numbers the plots need are served as
JSON by ``sizes.json`` and drawn by ``static/console.js``: no page carries inline script,
which the Content-Security-Policy forbids anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import jinja2
from aiohttp import web

from streamsync.audiences.diff import DEFAULT_SAMPLE as DIFF_SAMPLE
from streamsync.audiences.diff import report_lines
from streamsync.audiences.loader import (
    AudienceDefinitionError,
    AudienceFileError,
    audience_files,
)
from streamsync.config import AppConfig
from streamsync.console.auth import Principal
from streamsync.console.catalog import Catalog, CatalogEntry, load_catalog
from streamsync.console.config import ConsoleConfig, SwingAlert
from streamsync.console.customer_destinations import compare
from streamsync.console.dead_letters import KEPT as DEAD_LETTERS_KEPT
from streamsync.console.dead_letters import DeadLetters
from streamsync.console.exit_bound import STUCK_MARGIN_MS, exit_bound, stuck_members
from streamsync.console.preview import PREVIEW_MAX_BYTES, PreviewRefused, preview_sets
from streamsync.console.sources import (
    DestinationNumbers,
    ProcessReport,
    SourceError,
    Sources,
    probe_all,
)
from streamsync.console.store import ConsoleStore
from streamsync.deltas.membership import Member
from streamsync.deltas.record import format_rfc3339_ms
from streamsync.deltas.timeline import kafka_position, timeline_lines
from streamsync.destinations import operations
from streamsync.destinations.commands import ControlView
from streamsync.destinations.control import ControlFile
from streamsync.destinations.deliver import routed_audiences
from streamsync.destinations.errors import DeliverSetupError
from streamsync.errors import StreamsyncError

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
NAV = (
    ("/audiences", "Audiences"),
    ("/customers", "Customer"),
    ("/destinations", "Destinations"),
    ("/preview", "Preview a change"),
    ("/health", "Health"),
    ("/dead-letters", "Dead letters"),
)
#: Evaluate's defaults, for the stuck rule's slack when the file has no evaluate section.
DEFAULT_LATENESS_MS = 5 * 60_000
DEFAULT_IDLE_GRACE_MS = 500
#: Customers shown each way per audience on the preview page.
PREVIEW_SAMPLE = 20
#: Operator actions remembered for the health page (all are also logged).
AUDIT_KEPT = 100

audit_log = logging.getLogger("streamsync.console.audit")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals["static"] = lambda path: f"/static/{path}"
    return env


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: str
    who: str
    role: str
    action: str
    outcome: str


@dataclass
class ConsoleState:
    """What the handlers share: configuration, the store, the reads and the audit log."""

    config: AppConfig
    console: ConsoleConfig
    store: ConsoleStore
    sources: Sources
    csrf_for: Callable[[Principal], str]
    rebuild: Callable[[], None]
    env: jinja2.Environment = field(default_factory=environment)
    audit: deque[AuditEntry] = field(default_factory=lambda: deque(maxlen=AUDIT_KEPT))
    #: held while a preview reads the cluster (one at a time: it reads the inputs whole)
    preview_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the last catalog read, by the files' (path, mtime, size) it was read from
    _catalogs: dict[tuple[tuple[str, int, int], ...], Catalog] = field(
        default_factory=dict, repr=False
    )

    @property
    def audiences_path(self) -> Path | None:
        if self.console.audiences is not None:
            return self.console.audiences
        return self.config.evaluate.audiences if self.config.evaluate else None

    def catalog(self) -> tuple[Catalog | None, str | None]:
        """The audience files as they are now, or why they cannot be read.

        Checked per page (a file changed on disk shows at once), but read again only when
        a file's size or modification time changed, or files came or went: loading
        hundreds of definitions, with the YAML of each, is most of a page's time."""
        path = self.audiences_path
        if path is None:
            return None, "no audience files configured (console.audiences or evaluate.audiences)"
        try:
            signature = tuple(
                (str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in audience_files(path)
            )
            cached = self._catalogs.get(signature)
            if cached is not None:
                return cached, None
            catalog = load_catalog(path)
            self._catalogs.clear()
            self._catalogs[signature] = catalog
            return catalog, None
        except AudienceDefinitionError as exc:
            return None, f"{path}: {len(exc.problems)} error(s); run streamsync validate {path}"
        except (AudienceFileError, OSError) as exc:
            return None, " ".join(str(exc).split())

    @property
    def stuck_slack_ms(self) -> int:
        """How far past its bound a member's enter must be to count as stuck: evaluate's
        allowed lateness and idle grace, and a minute (see :mod:`.exit_bound`)."""
        settings = self.config.evaluate
        if settings is None:
            return DEFAULT_LATENESS_MS + DEFAULT_IDLE_GRACE_MS + STUCK_MARGIN_MS
        return settings.allowed_lateness_ms + settings.idle_grace_ms + STUCK_MARGIN_MS

    def record(self, principal: Principal, action: str, outcome: str) -> None:
        entry = AuditEntry(
            format_rfc3339_ms(int(time.time() * 1000)),
            principal.name,
            principal.role,
            action,
            outcome,
        )
        self.audit.appendleft(entry)
        audit_log.info(
            "console action: who=%s role=%s via=%s action=%s outcome=%s",
            principal.name,
            principal.role,
            principal.method,
            action,
            outcome,
        )


STATE_KEY = web.AppKey("console_state", ConsoleState)
#: The signed-in principal of a request (set by the guard in :mod:`.app`).
PRINCIPAL = web.RequestKey("principal", Principal)


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    state = request.app[STATE_KEY]
    principal = request.get(PRINCIPAL)
    base = {
        "principal": principal,
        "csrf": state.csrf_for(principal) if principal is not None else "",
        "nav": NAV,
        "active": "/" + request.path.strip("/").split("/")[0],
        "store": state.store.status(),
        "title": context.pop("title", "streamsync console"),
    }
    html = state.env.get_template(template).render(**base, **context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def audience_href(name: str) -> str:
    return "/audiences/" + quote(name, safe="")


def _as_of(store: ConsoleStore) -> str | None:
    newest = store.status().newest_ms
    return None if newest is None else format_rfc3339_ms(newest)


# Page 1: the audiences.


async def audiences_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    catalog, error = state.catalog()
    names = list(catalog.entries) if catalog else []
    names += [n for n in state.store.audiences() if n not in set(names)]
    rows = []
    for name in names:
        entry = catalog.get(name) if catalog else None
        audience = entry.audience if entry else None
        rows.append(
            {
                "name": name,
                "href": audience_href(name),
                "description": audience.description if audience else "(not in the audience files)",
                "owner": audience.owner if audience else "—",
                "version": audience.version if audience else "—",
                "destinations": audience.destinations if audience else [],
                "stats": state.store.stats(name),
            }
        )
    return render(
        request,
        "audiences.html",
        title="Audiences",
        rows=rows,
        source=state.audiences_path or "nowhere",
        catalog_error=error,
        as_of=_as_of(state.store),
        deltas_topic=state.config.deltas.topic,
    )


async def sizes_json(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    name = request.match_info["name"]
    resolution = request.query.get("resolution", "hour")
    if resolution not in ("hour", "day"):
        raise web.HTTPBadRequest(text="resolution is hour or day")
    series = state.store.sizes(name, resolution)
    low, high = swing_band(
        series.sizes, 24 if resolution == "hour" else 1, state.console.swing_alert
    )
    return web.json_response(
        {
            "audience": name,
            "resolution": resolution,
            "times_ms": series.times_ms,
            "sizes": series.sizes,
            "swing_low": low,
            "swing_high": high,
            "swing_percent": state.console.swing_alert.percent,
            "swing_min_members": state.console.swing_alert.min_members,
        }
    )


def swing_band(
    sizes: list[int], lag: int, rule: SwingAlert
) -> tuple[list[float | None], list[float | None]]:
    """The swing alert's band at each point: the size ``lag`` points (24 hours) earlier,
    minus and plus ``rule.percent``; ``None`` where there is no earlier point or it is
    below ``rule.min_members`` (the alert does not look at such sizes)."""
    share = rule.percent / 100
    low: list[float | None] = []
    high: list[float | None] = []
    for i in range(len(sizes)):
        before = sizes[i - lag] if i >= lag else None
        if before is None or before < rule.min_members or before == 0:
            low.append(None)
            high.append(None)
        else:
            low.append(max(0.0, before * (1 - share)))
            high.append(before * (1 + share))
    return low, high


# Page 2: one audience.


async def audience_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    name = request.match_info["name"]
    catalog, _ = state.catalog()
    entry = catalog.get(name) if catalog else None
    if entry is None and name not in state.store.audiences():
        raise web.HTTPNotFound(text=f"no audience named {name}")
    resolution = request.query.get("resolution", "hour")
    if resolution not in ("hour", "day"):
        resolution = "hour"
    members: list[Member] = []
    found: list[Member] = []
    members_error = None
    complete = True
    try:
        table = await state.sources.members()
        found = sorted(
            (m for (audience, _), m in table.members.items() if audience == name),
            key=lambda m: (m.since_ms, m.customer_id),
            reverse=True,
        )
        members = found[: state.console.member_sample]
        complete = table.complete
    except SourceError as exc:
        members_error = str(exc)
    bound = None
    stuck: list[Member] = []
    slack = state.stuck_slack_ms
    if entry is not None and catalog is not None:
        audiences = {n: e.audience for n, e in catalog.entries.items()}
        bound = exit_bound(entry.audience, audiences)
        stuck = stuck_members(found, bound, state.store.status().newest_ms, slack)
    return render(
        request,
        "audience.html",
        title=name,
        name=name,
        href=audience_href(name),
        entry=entry,
        stats=state.store.stats(name),
        resolution=resolution,
        members=members,
        member_count=len(found),
        members_complete=complete,
        members_error=members_error,
        members_topic=state.config.deltas.members,
        deltas_topic=state.config.deltas.topic,
        source=state.audiences_path,
        bound=bound,
        bound_text=None if bound is None or bound.ms is None else duration_text(bound.ms),
        slack_text=duration_text(slack),
        stuck=stuck[: state.console.member_sample],
        stuck_count=len(stuck),
        as_of=_as_of(state.store),
        receivers=await _receivers(state, name, entry),
        swing=state.console.swing_alert,
    )


async def _receivers(
    state: ConsoleState, name: str, entry: CatalogEntry | None
) -> list[dict[str, Any]]:
    """The configured destinations that receive audience ``name`` (as deliver routes
    it), each with what its acknowledged topic holds for the audience."""
    rows = []
    for dest_name, dest in state.config.destinations.items():
        try:
            routed = routed_audiences(dest_name, dest)
        except DeliverSetupError as exc:
            rows.append({"name": dest_name, "kind": dest.kind, "error": str(exc)})
            continue
        if routed is not None and name not in routed:
            continue
        row: dict[str, Any] = {
            "name": dest_name,
            "kind": dest.kind,
            "holdout": dest.holdout,
            "routed": "every audience" if routed is None else "listed",
            "error": None,
            "counts": None,
        }
        try:
            row["counts"] = await state.sources.acknowledged(dest_name)
        except SourceError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def duration_text(ms: int) -> str:
    """``166h 30m``, ``3d 23h``: a duration as the page says it."""
    minutes = ms // 60_000
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    seconds = (ms % 60_000) / 1000
    if seconds and not days:
        parts.append(f"{seconds:g}s")
    return " ".join(p for p in parts if p) or "0s"


# Page 3: one customer.


async def customer_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    query = request.query.get("q", "").strip()
    kind = request.query.get("kind", "id")
    if kind not in ("id", "email", "phone"):
        kind = "id"
    context: dict[str, Any] = {
        "title": "Customer",
        "query": query,
        "kind": kind,
        "error": None,
        "matches": None,
        "customer": None,
        "members_topic": state.config.deltas.members,
        "deltas_topic": state.config.deltas.topic,
    }
    if query and kind != "id":
        matches = state.store.customers_with(kind, query)
        if len(matches) == 1:
            query, kind = matches[0], "id"
        else:
            context["matches"] = matches
    if query and kind == "id":
        try:
            context.update(await _customer(state, query))
        except SourceError as exc:
            context["error"] = str(exc)
    return render(request, "customer.html", **context)


async def _customer(state: ConsoleState, customer: str) -> dict[str, Any]:
    table = await state.sources.customer_members(customer)
    audit = await state.sources.audit(customer)
    catalog, _ = state.catalog()
    definitions = {n: e.audience for n, e in catalog.entries.items()} if catalog else None
    changes = []
    for delta in audit.deltas:
        records = []
        for rid in delta.record_ids:
            event = audit.records.get(rid)
            records.append(
                {
                    "id": rid,
                    "event": event,
                    "at": format_rfc3339_ms(event.timestamp_ms) if event else "",
                    "where": kafka_position(event) if event else "",
                    "missing": "" if event else "(not found in the input topics)",
                }
            )
        changes.append({"delta": delta, "at": format_rfc3339_ms(delta.at_ms), "records": records})
    explain = timeline_lines(
        audit.deltas,
        audit.records,
        where=kafka_position,
        not_found=" (not found in the input topics)",
        definitions=definitions,
    )
    members = None if table is None else table.audiences_of(customer)
    return {
        "customer": customer,
        "destinations": await _told(state, customer, members or []),
        "members": members,
        "members_complete": True if table is None else table.complete,
        "changes": changes,
        "found": len(audit.records),
        "wanted": len(audit.wanted),
        "input_topics": ", ".join(audit.input_topics),
        "explain_text": "\n".join(explain),
    }


async def _told(state: ConsoleState, customer: str, members: list[Member]) -> list[dict[str, Any]]:
    """Per configured destination, what it was told and acknowledged for ``customer``
    next to what its filter wants (:mod:`streamsync.console.customer_destinations`)."""
    out = []
    for name, dest in state.config.destinations.items():
        row: dict[str, Any] = {"name": name, "kind": dest.kind, "holdout": dest.holdout,
                               "error": None, "note": "", "acked": None, "rows": []}  # fmt: skip
        try:
            want, row["note"] = await state.sources.desired_filter(name)
            acked = await state.sources.customer_acknowledged(name, customer)
        except (SourceError, DeliverSetupError) as exc:
            row["error"] = str(exc)
            out.append(row)
            continue
        row["acked"] = acked
        row["rows"] = compare(members, acked, want)
        out.append(row)
    return out


# Page 4: destinations.


async def destinations_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    deliver = [p for p in state.console.processes if p.role == "deliver"]
    reports = await probe_all(deliver)
    rows = []
    for name, dest in state.config.destinations.items():
        mine = [r for r in reports if r.endpoint.destination == name]
        numbers: DestinationNumbers | None = None
        lag: dict[str, float] = {}
        why = "no deliver process of this destination under console.processes"
        for report in mine:
            if not report.reachable:
                why = f"{report.endpoint.name} unreachable: {report.error}"
                continue
            found = report.destinations.get(name)
            for topic, n in report.lag.items():
                lag[topic] = lag.get(topic, 0.0) + n
            if found is not None:
                numbers = found if numbers is None else _add(numbers, found)
            else:
                why = "no deliveries counted yet"
        rows.append(
            {
                "name": name,
                "kind": dest.kind,
                "base_url": dest.base_url,
                "audiences": ", ".join(dest.audiences)
                if dest.audiences
                else ("by audience files" if dest.audience_files else "all"),
                "holdout": dest.holdout,
                "paused": _paused(dest.control_file),
                "control": await _control(state.config, name),
                "numbers": numbers,
                "lag": lag,
                "why_no_numbers": why,
            }
        )
    return render(request, "destinations.html", title="Destinations", rows=rows)


def _add(a: DestinationNumbers, b: DestinationNumbers) -> DestinationNumbers:
    rejected = dict(a.rejected)
    for reason, n in b.rejected.items():
        rejected[reason] = rejected.get(reason, 0.0) + n
    members = {audience: dict(states) for audience, states in a.members.items()}
    for audience, states in b.members.items():
        mine = members.setdefault(audience, {})
        for state, n in states.items():
            mine[state] = mine.get(state, 0.0) + n
    return DestinationNumbers(
        a.requests + b.requests,
        a.throttled + b.throttled,
        a.retries + b.retries,
        a.delivered + b.delivered,
        rejected,
        a.matched + b.matched,
        a.unmatched + b.unmatched,
        members,
    )


def _paused(path: Path | None) -> str:
    """What the destination's control file says, when this console can read it."""
    if path is None:
        return "no (no control file)"
    if not path.exists():
        return f"no ({path} absent)"
    control = ControlFile(path).poll()
    if control.paused:
        return f"yes ({path})"
    if control.paused_audiences:
        return "audiences " + ", ".join(sorted(control.paused_audiences)) + f" ({path})"
    return f"no ({path})"


#: How long the destinations page waits for a destination's control topic.
CONTROL_READ_S = 2.0
#: How long an operator's action waits for Kafka before it is reported as not done.
CONTROL_WRITE_S = 5.0


async def _control(config: AppConfig, name: str) -> str:
    """What the destination's control topic says (paused, detached, rollout overrides),
    or why it cannot be read."""
    try:
        view = await asyncio.to_thread(
            operations.read_view, config, name, timeout_s=CONTROL_READ_S, create=False
        )
    except StreamsyncError as exc:
        return f"unknown ({' '.join(str(exc).split())})"
    return _describe(view)


def _describe(view: ControlView) -> str:
    parts = []
    if view.paused:
        parts.append("paused")
    if view.detached_all:
        parts.append("every audience detached")
    if view.paused_audiences:
        parts.append("paused: " + ", ".join(sorted(view.paused_audiences)))
    if view.detached:
        parts.append("detached: " + ", ".join(sorted(view.detached)))
    if view.rollout is not None:
        parts.append(f"rollout {view.rollout.percent:g}% + {len(view.rollout.customers)} listed")
    for audience, cohort in sorted(view.audience_rollouts.items()):
        parts.append(f"{audience} rollout {cohort.percent:g}% + {len(cohort.customers)} listed")
    return "; ".join(parts) or "running"


_EXPLAINED = {
    "pause": "Nothing more is sent; the deltas wait in Kafka until it is resumed.",
    "resume": "Sending starts again: held deltas are sent in order, and a detached "
    "audience is attached again (its current members are backfilled).",
    "detach": "The values are removed from exactly the profiles they were acknowledged "
    "on, and nothing more is sent for them until it is resumed.",
    "resync": "The whole desired state is sent again.",
    "rollout": "Raising the percentage backfills the newly included customers; lowering "
    "it removes the values of those excluded. An empty percentage goes back to the "
    "configuration.",
}


async def control_action(request: web.Request) -> web.Response:
    """An operator's pause, resume, detach, resync or rollout, written to the
    destination's control topic with the same writer as ``streamsync destinations``:
    first a confirmation page, then (``confirm=yes``) the record, in the audit log."""
    state = request.app[STATE_KEY]
    principal = request[PRINCIPAL]
    name, action = request.match_info["name"], request.match_info["action"]
    form = await request.post()
    audience = str(form.get("audience") or "").strip() or None
    percent_text = str(form.get("percent") or "").strip()
    customers = [c.strip() for c in str(form.get("customers") or "").split(",") if c.strip()]
    what = f"{action} destination {name}" + (f" audience {audience}" if audience else "")
    if action == "rollout":
        what += f" to {percent_text}%" if percent_text else " back to the configuration"
        if customers:
            what += f" with {len(customers)} listed customers"
    if name not in state.config.destinations:
        raise web.HTTPNotFound(text=f"No destination named {name}.")
    if form.get("confirm") != "yes":
        return render(
            request, "destination_confirm.html", title="Confirm", what=what, name=name,
            action=action, audience=audience or "", percent=percent_text,
            customers=",".join(customers), explained=_EXPLAINED[action],
        )  # fmt: skip
    try:
        if action == "rollout":
            try:
                percent = float(percent_text) if percent_text else None
            except ValueError:
                raise DeliverSetupError(f"not a percentage: {percent_text!r}") from None
            line = await asyncio.to_thread(
                operations.set_rollout, state.config, name, audience, percent, customers,
                by=principal.name, timeout_s=CONTROL_WRITE_S,
            )  # fmt: skip
        else:
            line = await asyncio.to_thread(
                operations.apply, state.config, name, cast(operations.Action, action),
                audience, by=principal.name, timeout_s=CONTROL_WRITE_S,
            )  # fmt: skip
    except StreamsyncError as exc:
        message = " ".join(str(exc).split())
        state.record(principal, what, f"failed: {message}")
        status = 400 if exc.exit_status == 2 else 503
        return render(
            request, "error.html", status=status, title="Not done", message=message,
            code=status, next="/destinations",
        )  # fmt: skip
    state.record(principal, what, line)
    raise web.HTTPSeeOther("/destinations")


# Page 5: preview a change.


async def preview_page(request: web.Request) -> web.Response:
    return render(request, "preview.html", **_preview_context(request.app[STATE_KEY], ""))


async def preview_post(request: web.Request) -> web.Response:
    """``audiences diff`` of a pasted or uploaded definition on the running data: open to
    viewers (it writes nothing), CSRF-checked like every POST, one at a time (it reads
    the input topics whole), off the event loop."""
    state = request.app[STATE_KEY]
    form = await request.post()
    text = ""
    upload = form.get("file")
    if isinstance(upload, web.FileField):
        raw = upload.file.read(PREVIEW_MAX_BYTES + 1)
        if raw:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return _preview_refused(request, "", "the uploaded file is not UTF-8 text")
    pasted = form.get("definition")
    if not text and isinstance(pasted, str):
        text = pasted.replace("\r\n", "\n")
    catalog, error = state.catalog()
    if catalog is None:
        return _preview_refused(request, text, f"the running definitions: {error}")
    if state.config.evaluate is None:
        return _preview_refused(
            request, text, "the configuration has no evaluate section: nothing runs to compare with"
        )
    try:
        sets = preview_sets(catalog, text)
    except PreviewRefused as exc:
        return _preview_refused(request, text, str(exc))
    if state.preview_lock.locked():
        return _preview_refused(
            request, text, "another preview is reading the cluster: try again when it is done"
        )
    async with state.preview_lock:
        try:
            report = await state.sources.diff(sets.current, sets.new)
        except SourceError as exc:
            return _preview_refused(request, text, str(exc), status=503)
    context = _preview_context(state, text)
    changed = [a for a in report.audiences if a.kind != "unchanged"]
    context.update(
        report=report,
        changed=changed,
        unchanged=[a.name for a in report.audiences if a not in changed],
        pasted=sets.pasted,
        instants=[format_rfc3339_ms(t) for t in sorted(set(report.instants))],
        enter=sum(len(a.enter) for a in report.audiences),
        leave=sum(len(a.leave) for a in report.audiences),
        diff_text="\n".join(report_lines(report, DIFF_SAMPLE)),
    )
    return render(request, "preview.html", **context)


def _preview_context(state: ConsoleState, text: str) -> dict[str, Any]:
    return {
        "title": "Preview a change",
        "text": text,
        "error": None,
        "report": None,
        "max_kib": PREVIEW_MAX_BYTES // 1024,
        "sample": PREVIEW_SAMPLE,
        "source": state.audiences_path,
    }


def _preview_refused(
    request: web.Request, text: str, message: str, *, status: int = 422
) -> web.Response:
    context = _preview_context(request.app[STATE_KEY], text)
    context["error"] = " ".join(message.split())
    return render(request, "preview.html", status=status, **context)


# Page 6: health.


async def health_page(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    reports: list[ProcessReport] = await probe_all(state.console.processes)
    return render(
        request,
        "health.html",
        title="Health",
        reports=reports,
        checked=format_rfc3339_ms(int(time.time() * 1000)),
        as_of=_as_of(state.store),
        deltas_topic=state.config.deltas.topic,
        audit=list(state.audit),
    )


async def dead_letters_page(request: web.Request) -> web.Response:
    """The newest dead letters of every stage with their reasons (see
    :mod:`.dead_letters`)."""
    state = request.app[STATE_KEY]
    error = None
    found = DeadLetters()
    try:
        found = await state.sources.dead_letters()
    except SourceError as exc:
        error = str(exc)
    rows = [
        {
            "entry": e,
            "at": "" if e.timestamp_ms is None else format_rfc3339_ms(e.timestamp_ms),
        }
        for e in found.entries
    ]
    return render(
        request,
        "dead_letters.html",
        title="Dead letters",
        rows=rows,
        found=found,
        error=error,
        kept=DEAD_LETTERS_KEPT,
    )


async def rebuild_store(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    principal = request[PRINCIPAL]
    form = await request.post()
    if form.get("confirm") != "yes":
        raise web.HTTPBadRequest(text="confirm the rebuild")
    state.rebuild()
    state.record(principal, "rebuild the store", "started")
    raise web.HTTPSeeOther("/health")
