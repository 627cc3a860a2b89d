"""Comparing what the stand-ins hold with what replay says (tests, the demo's final check).

:func:`expected_members` folds deltas into the memberships a destination should show at
the end of the log, :func:`table_members` reads them off the membership table;
:func:`braze_members` / :func:`moengage_members` read them off a
stand-in's ``/_standin/profiles``; :func:`differences` says where they disagree.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from streamsync.deltas.membership import Member
from streamsync.deltas.record import MembershipDelta


def expected_members(
    deltas: Iterable[MembershipDelta],
    *,
    holdout: str = "skip",
    suffix: str = "__holdout",
    exclude: Collection[str] = (),
) -> dict[str, set[str]]:
    """customer -> the values in its membership attribute after all ``deltas`` (customers
    with none are left out; ``exclude`` drops customers a destination refused)."""
    last: dict[tuple[str, str], MembershipDelta] = {}
    for delta in deltas:
        if delta.customer_id in exclude or (delta.holdout and holdout == "skip"):
            continue
        last[(delta.customer_id, delta.audience)] = delta
    members: dict[str, set[str]] = {}
    for (customer, audience), delta in last.items():
        if delta.op == "enter":
            value = audience + suffix if delta.holdout else audience
            members.setdefault(customer, set()).add(value)
    return members


def _members(users: Mapping[str, Any], attribute: str, prefix: str) -> dict[str, set[str]]:
    found = {}
    for key, profile in users.items():
        values = profile.get(attribute) if isinstance(profile, dict) else None
        if values and key.startswith(prefix):
            found[key.removeprefix(prefix)] = set(values)
    return found


def braze_members(
    profiles: Mapping[str, Any], attribute: str = "streamsync_audiences"
) -> dict[str, set[str]]:
    """external_id -> values of ``attribute``, from the Braze stand-in's profiles."""
    return _members(profiles["users"], attribute, "external_id:")


def moengage_members(
    profiles: Mapping[str, Any], attribute: str = "streamsync_audiences"
) -> dict[str, set[str]]:
    """customer_id -> values of ``attribute``, from the MoEngage stand-in's profiles."""
    return _members(profiles["users"], attribute, "")


def table_members(
    members: Iterable[Member], *, holdout: str = "skip", suffix: str = "__holdout"
) -> dict[str, set[str]]:
    """customer -> the values in its membership attribute that the membership table's
    ``members`` call for (what :func:`expected_members` computes from the deltas)."""
    out: dict[str, set[str]] = {}
    for member in members:
        if member.holdout and holdout == "skip":
            continue
        value = member.audience + suffix if member.holdout else member.audience
        out.setdefault(member.customer_id, set()).add(value)
    return out


def differences(
    expected: Mapping[str, set[str]], actual: Mapping[str, set[str]], limit: int = 10
) -> list[str]:
    """Up to ``limit`` lines naming customers whose memberships differ (empty: equal)."""
    lines = []
    for customer in sorted(set(expected) | set(actual)):
        want, have = expected.get(customer, set()), actual.get(customer, set())
        if want != have:
            lines.append(
                f"{customer}: missing {sorted(want - have)}, unexpected {sorted(have - want)}"
            )
            if len(lines) == limit:
                break
    return lines
