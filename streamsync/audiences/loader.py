"""Loading and validating audience files, with errors that point at a file and line.

A file holds one audience (a mapping), several (a list, or a mapping with an
``audiences:`` list). A directory means every ``*.yaml`` / ``*.yml`` file under it, in
name order. Validation collects *every* problem before reporting, because an author
fixing a file wants the whole list, not one error per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from streamsync.audiences.definition import NAME_CONVENTION, Audience, Condition


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: ``error`` makes the set unusable, ``warning`` does not."""

    path: str
    line: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


class AudienceDefinitionError(ValueError):
    """The audience files have errors; ``problems`` lists every one."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class _Located:
    audience: Audience
    path: str
    line: int


def audience_files(path: str | Path) -> list[Path]:
    root = Path(path)
    if root.is_dir():
        return sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
    return [root]


def _node_at(node: yaml.Node, loc: Iterable[int | str]) -> yaml.Node:
    """The deepest YAML node along a pydantic error location (for its line number)."""
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == step or (step == "not_" and key.value == "not"):
                    node = value
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if step >= len(node.value):
                return node
            node = node.value[step]
        else:
            return node
    return node


def _describe(error: Any) -> str:
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    where = ".".join("not" if p == "not_" else p for p in loc)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        where = ".".join(loc[:-1])
    elif error["type"] == "missing":
        message = f"{loc[-1]!r} is required" if loc else "a required field is missing"
        where = ".".join(loc[:-1])
    return f"{where}: {message}" if where else message


def _documents(path: Path, problems: list[Problem]) -> list[tuple[Any, yaml.Node]]:
    try:
        text = path.read_text("utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as exc:
        problems.append(Problem(str(path), 0, f"cannot read: {exc.strerror or exc}"))
        return []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problems.append(Problem(str(path), line, f"not valid YAML: {exc}"))
        return []
    if root is None:
        problems.append(Problem(str(path), 1, "the file is empty"))
        return []
    if isinstance(data, dict) and "audiences" in data:
        node = _node_at(root, ["audiences"])
        data = data["audiences"]
        root = node
    if isinstance(data, dict):
        return [(data, root)]
    if isinstance(data, list) and isinstance(root, yaml.SequenceNode):
        return list(zip(data, root.value, strict=True))
    line = root.start_mark.line + 1
    problems.append(
        Problem(str(path), line, "expected an audience mapping, a list, or an audiences: list")
    )
    return []


def _unbounded(cond: Condition, by_name: dict[str, Audience], seen: frozenset[str]) -> str | None:
    """Why membership from ``cond`` could last for ever with no further record, or None."""
    kind = cond.kind
    if kind == "since_last" and cond.since_last and cond.since_last.less_than is None:
        return f"since_last {cond.since_last.event!r} has no less_than"
    if kind == "count" and cond.count and cond.count.within is None:
        return f"count of {cond.count.event!r} has no within window and only ever grows"
    if kind == "sum" and cond.sum and cond.sum.within is None and not cond.sum.subtract:
        return "sum has no within window and nothing subtracted, so it only ever grows"
    if kind == "all":
        reasons = [_unbounded(c, by_name, seen) for c in cond.all or []]
        return None if any(r is None for r in reasons) else reasons[0]
    if kind == "any":
        for child in cond.any or []:
            if (reason := _unbounded(child, by_name, seen)) is not None:
                return reason
        return None
    if kind == "in_audience" and cond.in_audience in by_name and cond.in_audience not in seen:
        ref = by_name[cond.in_audience]
        if ref.exit is None and ref.sticky_for is None:
            return _unbounded(ref.entry, by_name, seen | {ref.name})
    return None


def validate(located: Sequence[_Located]) -> list[Problem]:
    """Cross-audience checks: unique names, references, cycles, expiry, naming."""
    problems: list[Problem] = []
    by_name: dict[str, _Located] = {}
    for item in located:
        audience = item.audience
        if audience.name in by_name:
            first = by_name[audience.name]
            problems.append(
                Problem(
                    item.path,
                    item.line,
                    f"audience {audience.name!r} is defined twice "
                    f"(first at {first.path}:{first.line})",
                )
            )
            continue
        by_name[audience.name] = item
        if not NAME_CONVENTION.match(audience.name):
            problems.append(
                Problem(
                    item.path,
                    item.line,
                    f"audience {audience.name!r} does not follow the naming convention "
                    "ACT__Name__Qualifier or SUP__Name__Qualifier",
                    "warning",
                )
            )
    for item in by_name.values():
        for ref in sorted(item.audience.references() - by_name.keys()):
            problems.append(
                Problem(
                    item.path,
                    item.line,
                    f"audience {item.audience.name!r} references {ref!r}, "
                    "which is not defined in these files",
                )
            )
    problems.extend(_cycles(by_name))
    audiences = {name: item.audience for name, item in by_name.items()}
    for item in by_name.values():
        audience = item.audience
        if audience.exit is not None or audience.sticky_for is not None:
            continue
        reason = _unbounded(audience.entry, audiences, frozenset({audience.name}))
        if reason is not None:
            problems.append(
                Problem(
                    item.path,
                    item.line,
                    f"audience {audience.name!r} never expires: {reason}; add a window, "
                    "an exit condition or sticky_for",
                )
            )
    return problems


def _cycles(by_name: dict[str, _Located]) -> list[Problem]:
    problems: list[Problem] = []
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for ref in sorted(by_name[name].audience.references()):
            if ref not in by_name:
                continue
            if state.get(ref) == 1:
                cycle = [*trail[trail.index(ref) :], ref] if ref in trail else [name, ref]
                item = by_name[ref]
                problems.append(
                    Problem(
                        item.path,
                        item.line,
                        "audience references form a cycle: " + " -> ".join(cycle),
                    )
                )
            elif ref not in state:
                visit(ref, [*trail, ref])
        state[name] = 2

    for name in by_name:
        if name not in state:
            visit(name, [name])
    return problems


def check_audiences(path: str | Path) -> tuple[list[Audience], list[Problem]]:
    """Parse and validate every audience under ``path``; return what loaded and all
    problems (errors and warnings)."""
    problems: list[Problem] = []
    located: list[_Located] = []
    files = audience_files(path)
    if not files or not files[0].exists():
        problems.append(Problem(str(path), 0, "no audience files found"))
    for file in files:
        for data, node in _documents(file, problems):
            line = node.start_mark.line + 1
            try:
                audience = Audience.model_validate(data)
            except ValidationError as exc:
                name = data.get("name") if isinstance(data, dict) else None
                label = f"audience {name!r}: " if isinstance(name, str) else ""
                for error in exc.errors():
                    where = _node_at(node, error["loc"])
                    problems.append(
                        Problem(str(file), where.start_mark.line + 1, label + _describe(error))
                    )
                continue
            located.append(_Located(audience, str(file), line))
    problems.extend(validate(located))
    return [item.audience for item in located], problems


def load_audiences(path: str | Path) -> list[Audience]:
    """Every audience under ``path``; raises :class:`AudienceDefinitionError` on any error
    (warnings are not errors)."""
    audiences, problems = check_audiences(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise AudienceDefinitionError(errors)
    return audiences
