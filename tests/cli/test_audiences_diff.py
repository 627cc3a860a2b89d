"""``streamsync audiences diff`` on a file of records, and its user errors (no broker)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from streamsync.cli import main
from tests.cli.test_audiences_cli import track, write_events

CART = "ACT__CartAbandon"
APP = "ACT__ActiveApp__10m"
TWO = "ACT__TwoCarts__1d"
DESC = "SUP__Viewed"

_AUDIENCE = """
  - name: {name}
    version: {version}
    owner: retention@example.com
    description: {description}
    entry:
      {entry}
"""


def _definitions(path: Path, *audiences: tuple[str, int, str, str]) -> Path:
    text = "audiences:\n" + "".join(
        _AUDIENCE.format(name=n, version=v, description=d, entry=e) for n, v, d, e in audiences
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _current(tmp_path: Path) -> Path:
    return _definitions(
        tmp_path / "current" / "audiences.yaml",
        (
            CART,
            1,
            "Cart, no order for 90 minutes.",
            _since("Product Added", "at_least: 90m, less_than: 7d"),
        ),
        (APP, 1, "Opened the app in the last 10 minutes.", _since("Application Opened", "")),
        (DESC, 1, "Viewed a page within a day.", _since("Page Viewed", "less_than: 1d")),
    )


def _new(tmp_path: Path) -> Path:
    return _definitions(
        tmp_path / "new" / "audiences.yaml",
        (
            CART,
            2,
            "Cart, no order for 60 minutes.",
            _since("Product Added", "at_least: 60m, less_than: 7d"),
        ),
        (DESC, 1, "Edited, only the description.", _since("Page Viewed", "less_than: 1d")),
        (
            TWO,
            1,
            "Two carts within a day.",
            "count: {event: Product Added, at_least: 2, within: 1d}",
        ),
    )


def _since(event: str, bound: str) -> str:
    bound = bound or "less_than: 10m"
    return f"since_last: {{event: {event}, {bound}}}"


def _config(tmp_path: Path, audiences: Path) -> Path:
    path = tmp_path / "config.yaml"
    config = {
        # Nothing listens there: file mode must never connect.
        "kafka": {"bootstrap_servers": "127.0.0.1:1"},
        "ingest": {
            "dead_letter_topic": "dl",
            "topics": [{"name": "cio.pipelines", "format": "pipelines_json"}],
        },
        "deltas": {"topic": "deltas"},
        "evaluate": {"audiences": str(audiences), "state_dir": str(tmp_path / "state")},
    }
    path.write_text(json.dumps(config))
    return path


def _at(minutes_before_end: int) -> str:
    total = 24 * 60 - minutes_before_end  # the file ends at 2026-01-02T00:00Z
    return f"2026-01-01T{total // 60:02d}:{total % 60:02d}:00.000Z"


#: c1 carted 75 minutes before the end (in after 60m, not after 90m); c2 120 minutes
#: before (in either way); c3 twice within a day, the last 70 minutes before; c4 opened
#: the app a minute before the end; c5's page view is the end.
RECORDS: list[dict[str, Any]] = [
    track("c3", "Product Added", _at(20 * 60), "a3-1", product_id="p"),
    track("c2", "Product Added", _at(120), "a2", product_id="p"),
    track("c1", "Product Added", _at(75), "a1", product_id="p"),
    track("c3", "Product Added", _at(70), "a3-2", product_id="p"),
    track("c4", "Application Opened", _at(1), "o4"),
    track("c5", "Page Viewed", "2026-01-02T00:00:00.000Z", "v5"),
]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["audiences", "diff", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_diff_on_a_file_predicts_per_audience_enters_and_leaves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _current(tmp_path))
    events = write_events(tmp_path, list(RECORDS))
    new = str(_new(tmp_path))
    rc, out, _ = _run(capsys, "--config", str(config), "--input", str(events), "--json", new)
    assert rc == 0
    report = json.loads(out)
    by = {a["audience"]: a for a in report["audiences"]}
    assert set(by) == {CART, APP, TWO, DESC}
    cart = by[CART]
    assert (cart["kind"], cart["version_before"], cart["version_after"]) == ("changed", 1, 2)
    assert (cart["enter"], cart["leave"], cart["size_before"], cart["size_after"]) == (2, 0, 1, 3)
    assert cart["sample_enter"] == ["c1", "c3"]
    assert cart["missing"] == []
    two = by[TWO]
    assert (two["kind"], two["enter"], two["leave"], two["size_after"]) == ("added", 1, 0, 1)
    assert two["sample_enter"] == ["c3"]
    app = by[APP]
    assert (app["kind"], app["enter"], app["leave"], app["size_before"]) == ("removed", 0, 1, 1)
    assert app["sample_leave"] == ["c4"]
    assert app["size_after"] == 0
    desc = by[DESC]  # a description edit changes nobody
    assert (desc["kind"], desc["enter"], desc["leave"]) == ("unchanged", 0, 0)
    assert desc["size_before"] == desc["size_after"] == 1
    assert (report["enter"], report["leave"]) == (3, 1)
    assert report["instants_ms"] == [1767312000000]  # the file's end


def test_diff_text_summarises_unchanged_audiences_in_one_line_and_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _current(tmp_path))
    events = write_events(tmp_path, list(RECORDS))
    new = str(_new(tmp_path))
    rc, out, _ = _run(capsys, "--config", str(config), "--input", str(events), "--sample", "1", new)
    assert rc == 0
    assert f"{CART}: changed (version 1 -> 2)" in out
    assert "  enter 2, leave 0; size 1 -> 3" in out
    assert "  entering: c1 (and 1 more)" in out
    assert f"{APP}: removed (version 1 -> -)" in out
    assert "  leaving: c4" in out
    assert f"{TWO}: added (version - -> 1)" in out
    assert "evaluate rebuilds it from state and the input history" in out
    assert f"unchanged, nothing emitted: 1 audience(s): {DESC} (1)" in out
    assert out.count(DESC) == 1
    assert "total: 3 enter(s), 1 leave(s)" in out


def test_diff_with_the_same_definitions_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    current = _current(tmp_path)
    config = _config(tmp_path, current)
    events = write_events(tmp_path, list(RECORDS))
    rc, out, _ = _run(
        capsys, "--config", str(config), "--input", str(events), "--json", str(current)
    )
    assert rc == 0
    report = json.loads(out)
    assert {a["kind"] for a in report["audiences"]} == {"unchanged"}
    assert (report["enter"], report["leave"]) == (0, 0)


# ------------------------------------------------------------------------ user errors


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamsync audiences diff: "), err
    return lines[0]


def test_bad_new_definitions_are_printed_like_validate_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _current(tmp_path))
    events = write_events(tmp_path, list(RECORDS))
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """\
            audiences:
              - name: ACT__Broken
                version: 1
                owner: a@example.com
                description: x
                entry:
                  since_last: {event: Product Added, at_least: ninety}
            """
        )
    )
    rc, out, err = _run(capsys, "--config", str(config), "--input", str(events), str(bad))
    assert rc == 1
    assert "Traceback" not in out + err
    assert f"{bad}:7: error:" in out
    assert _one_line_error(err).endswith(f"error(s) in {bad}: nothing compared")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing input", "--input"),
        ("missing config", "absent.yaml"),
        ("missing new definitions", "nowhere.yaml"),
        ("no evaluate section", "no evaluate section"),
        ("sample not a number", "--sample"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, expected: str
) -> None:
    config = _config(tmp_path, _current(tmp_path))
    events = str(write_events(tmp_path, list(RECORDS)))
    new = str(_new(tmp_path))
    args = ["--config", str(config), "--input", events, new]
    if case == "missing input":
        args[3] = str(tmp_path / "absent.jsonl")
    elif case == "missing config":
        args[1] = str(tmp_path / "absent.yaml")
    elif case == "missing new definitions":
        args[4] = str(tmp_path / "nowhere.yaml")
    elif case == "no evaluate section":
        data = json.loads(config.read_text())
        del data["evaluate"]
        config.write_text(json.dumps(data))
    else:
        args += ["--sample", "many"]
    capsys.readouterr()
    if case == "sample not a number":
        with pytest.raises(SystemExit) as stopped:
            main(["audiences", "diff", *args])
        rc = stopped.value.code
    else:
        rc = main(["audiences", "diff", *args])
    _, err = capsys.readouterr()
    assert rc == 2
    assert expected in _one_line_error(err)


def test_an_unreachable_cluster_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, _current(tmp_path))
    rc, _, err = _run(capsys, "--config", str(config), "--timeout", "2", str(_new(tmp_path)))
    assert rc == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in _one_line_error(err)
