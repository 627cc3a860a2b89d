"""``streamsync validate``, ``replay`` and ``explain`` as a user runs them."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from streamsync.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "audiences"
CART = "ACT__CartAbandon__90m"
MED = "ACT__CartAbandon__MedIntent"
PURCHASERS = "SUP__RecentPurchasers__7d"

_FIELDS = {
    "audience",
    "version",
    "customer_id",
    "op",
    "at",
    "at_ms",
    "seq",
    "record_ids",
    "identifiers",
    "holdout",
    "id_kind",
    "correction",
    "definition_change",
    "stitched",
}
_AT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def track(user: str, event: str, ts: str, rid: str, **props: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "messageId": rid,
        "event": event,
        "timestamp": ts,
        "properties": props,
    }


def identify(user: str, ts: str, rid: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": rid, "timestamp": ts, "traits": traits}


#: Two customers' carts, c1's identify and order; lines 1-5 of ``events.jsonl``.
RECORDS: list[dict[str, Any]] = [
    identify("c1", "2026-01-01T00:00:00.000Z", "id-1", email="c1@example.com"),
    track("c1", "Product Added", "2026-01-01T00:00:00.000Z", "add-1", product_id="p1"),
    track("c2", "Product Added", "2026-01-01T00:10:00.000Z", "add-2", product_id="p1"),
    track(
        "c1",
        "Order Completed",
        "2026-01-01T02:00:00.000Z",
        "ord-1",
        order_id="o1",
        total=10,
        products=[{"sku": "a", "category": "x"}],
    ),
    track(
        "c2",
        "Order Completed",
        "2026-01-01T03:00:00.000Z",
        "ord-2",
        order_id="o2",
        total=10,
        products=[{"sku": "a", "category": "x"}],
    ),
]


def write_events(tmp_path: Path, lines: list[dict[str, Any] | str]) -> Path:
    path = tmp_path / "events.jsonl"
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, "utf-8")
    return path


def replay(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    capsys.readouterr()
    rc = main(["replay", *args])
    captured = capsys.readouterr()
    deltas = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return rc, deltas, captured.err


def summary(deltas: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(d["audience"], d["customer_id"], d["op"], d["at"]) for d in deltas]


# ------------------------------------------------------------------------------ replay


def test_replay_prints_one_json_delta_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    rc, deltas, _ = replay(capsys, "--audiences", str(EXAMPLES), "--events", str(events))
    assert rc == 0
    assert deltas
    for d in deltas:
        assert set(d) == _FIELDS
        assert _AT.match(d["at"]), d["at"]
        assert d["op"] in ("enter", "exit")
    assert sorted(
        (a, c, op, at) for a, c, op, at in summary(deltas) if a in (CART, PURCHASERS)
    ) == sorted(
        [
            (CART, "c1", "enter", "2026-01-01T01:30:00.000Z"),
            (CART, "c2", "enter", "2026-01-01T01:40:00.000Z"),
            (CART, "c1", "exit", "2026-01-01T02:00:00.000Z"),
            (CART, "c2", "exit", "2026-01-01T03:00:00.000Z"),
            (PURCHASERS, "c1", "enter", "2026-01-01T02:00:00.000Z"),
            (PURCHASERS, "c2", "enter", "2026-01-01T03:00:00.000Z"),
        ]
    )
    enter = next(
        d for d in deltas if (d["audience"], d["customer_id"], d["op"]) == (CART, "c1", "enter")
    )
    assert enter["record_ids"] == ["add-1"]
    assert enter["identifiers"] == {"email": "c1@example.com"}
    assert enter["seq"] == 1
    assert enter["holdout"] is False


def test_replay_until_ignores_later_records_and_fires_deadlines_up_to_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    args = ["--audiences", str(EXAMPLES), "--events", str(events)]
    rc, deltas, _ = replay(capsys, *args, "--until", "2026-01-01T01:45:00Z")
    assert rc == 0
    # c1's and c2's deadlines (01:30, 01:40) fire; both orders (02:00, 03:00) are ignored.
    assert sorted(summary(deltas)) == sorted(
        [
            (CART, "c1", "enter", "2026-01-01T01:30:00.000Z"),
            (MED, "c1", "enter", "2026-01-01T01:30:00.000Z"),
            (CART, "c2", "enter", "2026-01-01T01:40:00.000Z"),
            (MED, "c2", "enter", "2026-01-01T01:40:00.000Z"),
        ]
    )


def test_replay_until_is_inclusive_and_a_deadline_after_it_does_not_fire(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    args = ["--audiences", str(EXAMPLES), "--events", str(events)]
    _, at_deadline, _ = replay(capsys, *args, "--until", "2026-01-01T01:30:00.000Z")
    assert summary(at_deadline) == [
        (CART, "c1", "enter", "2026-01-01T01:30:00.000Z"),
        (MED, "c1", "enter", "2026-01-01T01:30:00.000Z"),
    ]
    _, before, _ = replay(capsys, *args, "--until", "2026-01-01T01:29:59.999Z")
    assert before == []
    # An offset in --until is honoured: 02:30+01:00 is 01:30Z.
    _, offset, _ = replay(capsys, *args, "--until", "2026-01-01T02:30:00+01:00")
    assert summary(offset) == summary(at_deadline)


def test_replay_until_later_than_the_log_fires_expiries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    args = ["--audiences", str(EXAMPLES), "--events", str(events)]
    _, deltas, _ = replay(capsys, *args, "--until", "2026-01-20T00:00:00Z")
    assert (PURCHASERS, "c1", "exit", "2026-01-08T02:00:00.000Z") in summary(deltas)
    assert (PURCHASERS, "c2", "exit", "2026-01-08T03:00:00.000Z") in summary(deltas)


def test_replay_reports_undecodable_lines_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[dict[str, Any] | str] = [
        RECORDS[0],
        RECORDS[1],
        "this is not json",  # line 3
        "[1, 2, 3]",  # line 4
        {"type": "bogus", "userId": "c2", "messageId": "x", "timestamp": "2026-01-01T00:00:00Z"},
        "",  # blank lines are skipped, not errors
        {"type": "track", "userId": "c2", "messageId": "y", "timestamp": "2026-01-01T00:00:00Z"},
        *RECORDS[2:],
    ]
    events = write_events(tmp_path, lines)
    rc, deltas, err = replay(capsys, "--audiences", str(EXAMPLES), "--events", str(events))
    assert rc == 0
    assert (CART, "c1", "exit", "2026-01-01T02:00:00.000Z") in summary(deltas)
    assert (CART, "c2", "exit", "2026-01-01T03:00:00.000Z") in summary(deltas)
    assert re.search(r"line 3: malformed_json", err), err
    assert re.search(r"line 4: wrong_type", err), err
    assert re.search(r"line 5: unknown_type", err), err
    assert re.search(r"line 7: missing_field", err), err
    assert "line 6" not in err
    assert "4 undecodable" in err


def test_replay_summary_counts_duplicates_and_too_late_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    late = track("c3", "Application Opened", "2026-01-01T00:30:00.000Z", "late-1")
    events = write_events(tmp_path, [*RECORDS, RECORDS[1], late])
    rc, deltas, err = replay(capsys, "--audiences", str(EXAMPLES), "--events", str(events))
    assert rc == 0
    assert "1 duplicates" in err
    assert "0 late (applied at their time), 1 too late (applied at the clock)" in err
    # The record 2h25m behind the clock is applied at the clock (newest 03:00 minus 5m lateness).
    assert ("ACT__ActiveApp__10m", "c3", "enter", "2026-01-01T02:55:00.000Z") in summary(deltas)


def test_replay_quiet_prints_nothing_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, [*RECORDS, "broken"])
    rc, deltas, err = replay(
        capsys, "--audiences", str(EXAMPLES), "--events", str(events), "--quiet"
    )
    assert rc == 0 and deltas
    assert "streamsync replay:" not in err


def _bad_audience_dir(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "audiences"
    root.mkdir()
    (root / "good.yaml").write_text(
        textwrap.dedent(
            """\
            name: ACT__Fine__10m
            version: 1
            owner: qa@example.com
            description: Fine.
            entry: {since_last: {event: Application Opened, less_than: 10m}}
            """
        ),
        "utf-8",
    )
    bad = root / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            name: ACT__Broken__7d
            version: 1
            owner: qa@example.com
            description: A typo in a duration and an unknown key.
            entry:
              since_last:
                event: Product Added
                less_than: 7 parsecs
            colour: blue
            """
        ),
        "utf-8",
    )
    return root, bad


def test_replay_with_invalid_audiences_exits_2_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, bad = _bad_audience_dir(tmp_path)
    events = write_events(tmp_path, list(RECORDS))
    rc, deltas, err = replay(capsys, "--audiences", str(root), "--events", str(events))
    assert rc == 2
    assert deltas == []
    assert f"{bad}:8: error:" in err  # less_than: 7 parsecs
    assert f"{bad}:9: error:" in err  # colour: blue
    assert "colour" in err


# ----------------------------------------------------------------------------- explain


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["explain", *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_explain_prints_the_timeline_with_causes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    rc, out, _ = explain(
        capsys,
        *("--audiences", str(EXAMPLES), "--events", str(events)),
        *("--customer", "c1", "--audience", CART),
    )
    assert rc == 0
    lines = out.splitlines()
    enter = next(i for i, line in enumerate(lines) if "ENTER" in line)
    exit_ = next(i for i, line in enumerate(lines) if "EXIT" in line)
    assert enter < exit_
    assert lines[enter].startswith("2026-01-01T01:30:00.000Z")
    assert CART in lines[enter] and "seq 1" in lines[enter]
    assert lines[exit_].startswith("2026-01-01T02:00:00.000Z")
    assert "seq 2" in lines[exit_]
    # Each change is followed by the record behind it.
    assert "because of" in lines[enter + 1]
    assert "Product Added" in lines[enter + 1] and "add-1" in lines[enter + 1]
    assert "line 2" in lines[enter + 1]
    assert "because of" in lines[exit_ + 1]
    assert "Order Completed" in lines[exit_ + 1] and "ord-1" in lines[exit_ + 1]
    assert "line 4" in lines[exit_ + 1]
    # Only this customer and this audience.
    assert "c2" not in out and "add-2" not in out
    assert MED not in out and PURCHASERS not in out
    assert "never entered" not in out


def changes(out: str) -> list[list[str]]:
    """The explain output as one block per change: its line, then the lines under it."""
    blocks: list[list[str]] = []
    for line in out.splitlines()[1:]:
        if line.startswith("    "):
            blocks[-1].append(line.strip())
        elif " ENTER " in line or " EXIT " in line:
            blocks.append([line])
    return blocks


VIEWS = "ACT__ViewedTwiceNoPurchase__7d"


def test_explain_viewed_twice_cites_both_views_and_the_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The order (read by the audience and by its Winback reference) is cited once, the
    two views are cited, and each deadline change says which window passed."""
    records = [
        track("c1", "Order Completed", "2026-01-01T00:00:00.000Z", "ord-1", order_id="o1"),
        track("c1", "Product Viewed", "2026-01-01T01:00:00.000Z", "v-1", product_id="p1"),
        track("c1", "Product Viewed", "2026-01-01T02:00:00.000Z", "v-x", product_id="p2"),
        track("c1", "Product Viewed", "2026-01-01T03:00:00.000Z", "v-2", product_id="p1"),
    ]
    events = write_events(tmp_path, list(records))
    rc, out, _ = explain(
        capsys,
        *("--audiences", str(EXAMPLES), "--events", str(events), "--until", "2026-01-20T00:00:00Z"),
        *("--customer", "c1", "--audience", VIEWS),
    )
    assert rc == 0
    enter, exit_ = changes(out)
    assert enter[0] == f"2026-01-08T00:00:00.000Z  ENTER {VIEWS}  (v1, seq 1)"
    assert [line.split("record ")[1].split(",")[0].rstrip(")") for line in enter[1:4]] == [
        "ord-1",
        "v-1",
        "v-2",
    ]
    assert enter[4:] == [
        "reason: window of 7d passed since 'Order Completed' at 2026-01-01T00:00:00.000Z"
    ]
    assert exit_[0] == f"2026-01-08T01:00:00.000Z  EXIT  {VIEWS}  (v1, seq 2)"
    assert ["v-1" in exit_[1], "v-2" in exit_[2], len(exit_)] == [True, True, 4]
    assert exit_[3] == (
        "reason: window of 7d passed since 'Product Viewed' at 2026-01-01T01:00:00.000Z "
        "(fewer than 2 left in it)"
    )


def test_explain_gives_the_reason_of_deadlines_and_not_of_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        track("c1", "Product Added", "2026-01-01T00:00:00.000Z", "add-1", product_id="p1"),
        track("c2", "Product Added", "2026-01-01T00:00:00.000Z", "add-2", product_id="p1"),
        track("c2", "Order Completed", "2026-01-01T02:00:00.000Z", "ord-2", order_id="o2"),
    ]
    events = write_events(tmp_path, list(records))
    args = ("--audiences", str(EXAMPLES), "--events", str(events), "--audience", CART)
    rc, out, _ = explain(capsys, *args, "--until", "2026-01-09T00:00:00Z", "--customer", "c1")
    assert rc == 0
    enter, exit_ = changes(out)
    at = "'Product Added' at 2026-01-01T00:00:00.000Z"
    assert enter[-1] == f"reason: no 'Order Completed' within 90m of {at}"
    assert exit_[0] == f"2026-01-08T00:00:00.000Z  EXIT  {CART}  (v1, seq 2)"
    assert exit_[-1] == f"reason: window of 7d passed since {at}"
    # c2's exit is its order's: the record says why, no deadline does.
    rc, out, _ = explain(capsys, *args, "--customer", "c2")
    assert rc == 0
    _, exit_ = changes(out)
    assert len(exit_) == 2 and "ord-2" in exit_[1]


def test_explain_shows_the_version_and_all_records_of_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    definitions = tmp_path / "three.yaml"
    definitions.write_text(
        textwrap.dedent(
            """
            name: ACT__ThreeCarts__1d
            version: 4
            owner: qa@example.com
            description: Added to cart three times in a day.
            entry:
              count: {event: Product Added, at_least: 3, within: 1d}
            """
        ),
        "utf-8",
    )
    records = [
        track("c1", "Product Added", f"2026-01-01T0{h}:00:00.000Z", f"add-{h}", product_id="p")
        for h in (1, 2, 3)
    ]
    events = write_events(tmp_path, list(records))
    rc, out, _ = explain(
        capsys,
        *("--audiences", str(definitions), "--events", str(events)),
        *("--customer", "c1", "--until", "2026-01-03T00:00:00Z"),
    )
    assert rc == 0
    enter, exit_ = changes(out)
    assert enter[0] == "2026-01-01T03:00:00.000Z  ENTER ACT__ThreeCarts__1d  (v4, seq 1)"
    assert all(f"record add-{h}" in enter[h] for h in (1, 2, 3)) and len(enter) == 4
    assert exit_[0] == "2026-01-02T01:00:00.000Z  EXIT  ACT__ThreeCarts__1d  (v4, seq 2)"
    assert exit_[-1] == (
        "reason: window of 1d passed since 'Product Added' at 2026-01-01T01:00:00.000Z "
        "(fewer than 3 left in it)"
    )


def test_explain_all_audiences_of_a_customer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    rc, out, _ = explain(
        capsys, "--audiences", str(EXAMPLES), "--events", str(events), "--customer", "c1"
    )
    assert rc == 0
    assert CART in out and MED in out and PURCHASERS in out
    assert "member now of: " + PURCHASERS in out


def test_explain_unknown_customer_never_entered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    rc, out, _ = explain(
        capsys,
        *("--audiences", str(EXAMPLES), "--events", str(events)),
        *("--customer", "nobody", "--audience", CART),
    )
    assert rc == 0
    assert "never entered" in out
    assert "ENTER" not in out and "EXIT" not in out


def test_explain_unknown_audience_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path, list(RECORDS))
    rc, _, err = explain(
        capsys,
        *("--audiences", str(EXAMPLES), "--events", str(events)),
        *("--customer", "c1", "--audience", "ACT__NoSuch__1d"),
    )
    assert rc == 2
    assert "ACT__NoSuch__1d" in err


# ---------------------------------------------------------------------------- validate


def test_validate_examples_is_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES)]) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.out
    assert "13 audience(s) checked: 0 error(s)" in captured.err


def test_validate_reports_the_bad_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, bad = _bad_audience_dir(tmp_path)
    capsys.readouterr()
    assert main(["validate", str(root)]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.out.splitlines() if ": error: " in line]
    assert errors
    assert all(line.startswith(f"{bad}:") for line in errors)
    assert any(line.startswith(f"{bad}:8: error:") for line in errors)
    assert any(line.startswith(f"{bad}:9: error:") and "colour" in line for line in errors)
    assert "good.yaml" not in captured.out
    assert "2 audience(s) checked" in captured.err  # the good one and the broken one


def test_validate_counts_an_audience_with_errors_as_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _root, bad = _bad_audience_dir(tmp_path)
    capsys.readouterr()
    assert main(["validate", str(bad)]) == 1
    captured = capsys.readouterr()
    errors = sum(1 for line in captured.out.splitlines() if ": error: " in line)
    assert errors >= 2
    assert captured.err == f"1 audience(s) checked: {errors} error(s), 0 warning(s)\n"


def test_validate_refuses_rules_that_contradict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sticky with an exit and no choice, and an exit equal to the entry: one line each,
    at the line of the rule, and exit status 1 (no traceback)."""
    path = tmp_path / "contradict.yaml"
    path.write_text(
        "audiences:\n"
        "  - name: ACT__Bought__3d\n"
        "    version: 1\n"
        "    owner: o\n"
        "    description: d\n"
        "    entry: {happened: {event: Order Completed}}\n"
        "    exit: {occurred_since_last: {event: Refund, since: {event: Order Completed}}}\n"
        "    sticky_for: 3d\n"  # line 8
        "  - name: ACT__Cart__1d\n"
        "    version: 1\n"
        "    owner: o\n"
        "    description: d\n"
        "    entry: {since_last: {event: Product Added, less_than: 1d}}\n"
        "    exit: {since_last: {event: Product Added, less_than: 1d}}\n",  # line 14
        "utf-8",
    )
    capsys.readouterr()
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    errors = captured.out.splitlines()
    assert len(errors) == 2, captured.out
    assert errors[0].startswith(f"{path}:8: error: audience 'ACT__Bought__3d': sticky_for and")
    assert errors[1].startswith(f"{path}:14: error: audience 'ACT__Cart__1d': the exit is the")
    assert "Traceback" not in captured.err
    assert "2 audience(s) checked: 2 error(s)" in captured.err


def test_validate_reports_invalid_yaml_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: ACT__X__1d\nversion: 1\nentry: {since_last: [\n", "utf-8")
    capsys.readouterr()
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert re.search(rf"^{re.escape(str(path))}:\d+: error: not valid YAML", out, re.M), out


def test_the_operations_guide_says_what_replay_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    argv = ["dev", "generate", "--customers", "50", "--events", "3000", "--out", str(events)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["replay", "--audiences", str(EXAMPLES), "--events", str(events)]) == 0
    err = capsys.readouterr().err.splitlines()
    per_audience = [line for line in err if re.fullmatch(r"  \w+ (enter|exit): [\d,]+", line)]
    assert per_audience  # enter and exit counts per audience, not sizes
    guide = " ".join((REPO / "docs" / "operations.md").read_text("utf-8").split())
    assert "sizes per audience" not in guide
    assert "per audience, how many times customers entered and exited" in guide


@pytest.mark.parametrize("value", ["true", "false"])
def test_holdout_deliver_marker_is_refused_with_the_destination_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    # It was accepted and never read; the destination's holdout: skip|marker decides.
    path = tmp_path / "holdout.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: ACT__Held__10m
            version: 1
            owner: qa@example.com
            description: Half held out.
            entry: {{since_last: {{event: Application Opened, less_than: 10m}}}}
            holdout: {{percent: 50, deliver_marker: {value}}}
            """
        ),
        "utf-8",
    )
    capsys.readouterr()
    assert main(["validate", str(path)]) == 1
    [error] = [line for line in capsys.readouterr().out.splitlines() if ": error: " in line]
    assert error.startswith(f"{path}:6: error:")
    assert "deliver_marker is not supported" in error
    assert "holdout: skip or holdout: marker under destinations.<name>" in error


def test_the_readme_definition_example_validates(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    start = readme.index("```yaml\nname: ACT__CartAbandon__90m")
    block = readme[start + len("```yaml\n") : readme.index("```", start + 7)]
    enabled = re.sub(r"^# (\w+: )", r"\1", block, flags=re.M)  # the commented options too
    path = tmp_path / "readme.yaml"
    path.write_text(enabled, "utf-8")
    assert main(["validate", str(path)]) == 0
