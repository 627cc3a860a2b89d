"""Loading and validating audience files, with errors that point at a file and line.

A file holds one audience (a mapping), several (a list, or a mapping with an
``audiences:`` list). A directory means every ``*.yaml`` / ``*.yml`` file under it, in
name order. Validation collects *every* problem before reporting, because an author
fixing a file wants the whole list, not one error per run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from streamsync.audiences.definition import NAME_CONVENTION, Audience, Condition
from streamsync.strict_yaml import YamlSyntaxError, YamlTextError, gc_paused, parse_yaml

#: Largest audience file read (a 10 MB file of thousands of audiences loads in seconds).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Longest chain of ``in_audience`` references (A reads B reads C ...).
MAX_REFERENCE_DEPTH = 32


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


class AudienceFileError(ValueError):
    """An audience path cannot be read as YAML text at all: missing, not a regular file,
    too large, not UTF-8, control characters, nested too deep. The message is one line
    that names the file (and the line, when there is one)."""


@dataclass(frozen=True, slots=True)
class _Located:
    audience: Audience
    path: str
    line: int
    #: Line of the first ``in_audience`` naming each referenced audience.
    ref_lines: dict[str, int]
    #: Line of each key of the audience's own mapping (``exit``, ``sticky_for``, ...).
    key_lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


def audience_files(path: str | Path) -> list[Path]:
    """The files ``path`` names: itself, or every ``*.yaml`` / ``*.yml`` under a directory
    in name order. A path that does not exist, or a directory without audience files, is
    an :class:`AudienceFileError`."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
        if not files:
            raise AudienceFileError(f"{root}: no audience files (*.yaml, *.yml) in this directory")
        return files
    if not root.exists():
        raise AudienceFileError(f"{root}: no such file or directory")
    return [root]


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise AudienceFileError(f"{path}: not a regular file")
    try:
        with path.open("rb") as handle:
            # Size first: read(limit) would allocate the whole limit up front.
            too_large = os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES
            raw = b"" if too_large else handle.read()
    except OSError as exc:
        raise AudienceFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if too_large or len(raw) > MAX_FILE_BYTES:
        raise AudienceFileError(
            f"{path}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; split the definitions"
        )
    return raw


def _node_at(node: yaml.Node, loc: Iterable[int | str]) -> yaml.Node:
    """The deepest YAML node along a pydantic error location (for its line number).
    Of two equal keys the later one is taken, as YAML keeps the later value."""
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in reversed(node.value):
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


def _reference_lines(root: yaml.Node) -> dict[str, int]:
    """Line of the first ``in_audience: NAME`` per referenced name under ``root``."""
    lines: dict[str, int] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (
                    isinstance(key, yaml.ScalarNode)
                    and key.value == "in_audience"
                    and isinstance(value, yaml.ScalarNode)
                ):
                    line = value.start_mark.line + 1
                    lines[value.value] = min(line, lines.get(value.value, line))
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return lines


def _key_lines(node: yaml.Node) -> dict[str, int]:
    """Line of each key of one audience's mapping; of two equal keys the later one, as
    YAML keeps the later value."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        key.value: key.start_mark.line + 1
        for key, _ in node.value
        if isinstance(key, yaml.ScalarNode)
    }


#: pydantic reports a value that fits no member of ``str | int | float | bool | None``
#: once per member, each with the member's tag appended to the location.
_SCALAR_TAGS = {"string_type": "str", "int_type": "int", "float_type": "float", "bool_type": "bool"}
_SCALAR = "a string, number, boolean or null"


@dataclass(slots=True)
class _Union:
    """Errors of one value checked against a union (``Scalar | Comparison``)."""

    mapping_tried: bool = False  # the comparison member rejected a non-mapping
    deeper: list[tuple[tuple[Any, ...], str, str]] = field(default_factory=list)
    nested: bool = False  # an error inside the comparison is reported on its own


def _merged_errors(errors: Sequence[Any]) -> list[tuple[tuple[Any, ...], str, str]]:
    """``(location, type, message)`` per problem, with union member errors merged.

    A value that fits no member of a union (a list where a scalar belongs) is one
    problem, not one per member; when the value was a mapping meant as a comparison
    (``{gt: 5}``), the comparison's own errors are the ones that matter.
    """
    Error = tuple[tuple[Any, ...], str, str]
    order: list[tuple[Error | None, tuple[Any, ...]]] = []  # (error, or None for a union)
    unions: dict[tuple[Any, ...], _Union] = {}

    def union(base: tuple[Any, ...]) -> _Union:
        if base not in unions:
            unions[base] = _Union()
            order.append((None, base))
        return unions[base]

    for error in errors:
        loc, kind, message = tuple(error["loc"]), str(error["type"]), str(error["msg"])
        model = [i for i, part in enumerate(loc) if str(part).startswith("function-")]
        if loc and _SCALAR_TAGS.get(kind) == loc[-1]:
            union(loc[:-1])
            if model:
                union(loc[: model[-1]]).nested = True
        elif model:
            group = union(loc[: model[-1]])
            if kind == "model_type" and model[-1] == len(loc) - 1:
                group.mapping_tried = True
            else:
                group.deeper.append((loc, kind, message))
        else:
            order.append(((loc, kind, message), loc))
    result: list[Error] = []
    for plain, base in order:
        if plain is not None:
            result.append(plain)
            continue
        group = unions[base]
        if group.deeper or group.nested:
            result.extend(group.deeper)
            continue
        choices = (
            "a string, number, boolean, null or a comparison such as {gt: 5}"
            if group.mapping_tried
            else _SCALAR
        )
        result.append((base, "union", f"should be {choices}"))
    return result


def _describe(loc_parts: tuple[Any, ...], kind: str, msg: str) -> str:
    loc = [str(part) for part in loc_parts if not str(part).startswith("function-")]
    where = ".".join("not" if p == "not_" else p for p in loc)
    message = msg.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}" if loc else "unknown key"
        where = ".".join(loc[:-1])
    elif kind == "missing":
        message = f"{loc[-1]!r} is required" if loc else "a required field is missing"
        where = ".".join(loc[:-1])
    return f"{where}: {message}" if where else message


def _documents(path: Path, problems: list[Problem]) -> list[tuple[Any, yaml.Node]]:
    try:
        document = parse_yaml(_read(path))
    except YamlTextError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise AudienceFileError(f"{where}: {exc.reason}") from None
    except YamlSyntaxError as exc:
        problems.append(Problem(str(path), exc.line, f"not valid YAML: {exc.reason}"))
        return []
    for duplicate in document.duplicate_keys:
        problems.append(Problem(str(path), duplicate.line, str(duplicate)))
    root, data = document.node, document.data
    if root is None:
        problems.append(Problem(str(path), 1, "the file is empty"))
        return []
    if isinstance(data, dict) and "audiences" in data:
        for key in data:
            if key != "audiences":
                line = _node_at(root, [key]).start_mark.line + 1
                problems.append(Problem(str(path), line, f"unknown key {key!r} next to audiences:"))
        root = _node_at(root, ["audiences"])
        data = data["audiences"]
    if isinstance(data, dict):
        return [(data, root)]
    if isinstance(data, list) and isinstance(root, yaml.SequenceNode):
        return list(zip(data, root.value, strict=True))
    line = root.start_mark.line + 1
    problems.append(
        Problem(str(path), line, "expected an audience mapping, a list, or an audiences: list")
    )
    return []


def _unbounded(cond: Condition, never_expires: dict[str, str | None]) -> str | None:
    """Why membership from ``cond`` could last for ever with no further record, or None.

    ``never_expires`` holds the answer for every audience already checked (references are
    checked first), so this recurses only within one condition tree.
    """
    kind = cond.kind
    if kind == "since_last" and cond.since_last and cond.since_last.less_than is None:
        return f"since_last {cond.since_last.event!r} has no less_than"
    if kind == "count" and cond.count and cond.count.within is None:
        return f"count of {cond.count.event!r} has no within window and only ever grows"
    if kind == "sum" and cond.sum and cond.sum.within is None and not cond.sum.subtract:
        return "sum has no within window and nothing subtracted, so it only ever grows"
    if kind == "not_" and cond.not_ is not None and cond.not_.kind == "happened":
        return "not happened is true at every instant except a matching record's own"
    if kind == "all":
        reasons = [_unbounded(c, never_expires) for c in cond.all or []]
        return None if any(r is None for r in reasons) else reasons[0]
    if kind == "any":
        for child in cond.any or []:
            if (reason := _unbounded(child, never_expires)) is not None:
                return reason
        return None
    if kind == "in_audience" and cond.in_audience is not None:
        return never_expires.get(cond.in_audience)
    return None


#: A condition with a polarity: ``(c, True)`` stands for ``not c``.
_Signed = tuple[Condition, bool]


class _Logic:
    """Structural facts about conditions that hold whatever the records: "can never be
    true", "always true", "whenever this holds, so does that".

    Only sound rules, each true of every evaluation at one instant (``all``, ``any`` and
    ``not`` are plain boolean combinations of conditions evaluated on the same facts at
    the same ``t``): equal conditions, a condition next to its own negation in an
    ``all`` (never) or an ``any`` (always), double negation, De Morgan, and "a
    conjunction implies each of its parts, each part implies a disjunction". Nothing is
    concluded from what a condition means (windows, thresholds) or from what other
    audiences hold, so an answer of "no" only means "not shown". Memoized per pair, so
    the cost is bounded by the product of the two trees' sizes.
    """

    def __init__(self) -> None:
        self._never: dict[tuple[int, bool], bool] = {}
        self._implies: dict[tuple[int, bool, int, bool], bool] = {}

    @staticmethod
    def _plain(cond: Condition, negated: bool) -> _Signed:
        while cond.not_ is not None:
            cond, negated = cond.not_, not negated
        return cond, negated

    @staticmethod
    def _conjuncts(cond: Condition, negated: bool) -> list[_Signed]:
        """The parts that must all hold (``all``, or ``not any``), else []."""
        if cond.all is not None and not negated:
            return [(c, False) for c in cond.all]
        if cond.any is not None and negated:
            return [(c, True) for c in cond.any]
        return []

    @staticmethod
    def _disjuncts(cond: Condition, negated: bool) -> list[_Signed]:
        """The parts of which one must hold (``any``, or ``not all``), else []."""
        if cond.any is not None and not negated:
            return [(c, False) for c in cond.any]
        if cond.all is not None and negated:
            return [(c, True) for c in cond.all]
        return []

    def same(self, a: _Signed, b: _Signed) -> bool:
        (ca, na), (cb, nb) = self._plain(*a), self._plain(*b)
        return na == nb and ca == cb

    def never(self, cond: Condition, negated: bool = False) -> bool:
        """``cond`` (or its negation) is false at every instant for every customer."""
        cond, negated = self._plain(cond, negated)
        key = (id(cond), negated)
        if key not in self._never:
            parts = self._conjuncts(cond, negated)
            if parts:
                found = any(self.never(*p) for p in parts) or any(
                    self.same(p, (q[0], not q[1]))
                    for i, p in enumerate(parts)
                    for q in parts[i + 1 :]
                )
            else:
                options = self._disjuncts(cond, negated)
                found = bool(options) and all(self.never(*o) for o in options)
            self._never[key] = found
        return self._never[key]

    def always(self, cond: Condition, negated: bool = False) -> bool:
        """``cond`` (or its negation) is true at every instant for every customer."""
        return self.never(cond, not negated)

    def implies(self, a: _Signed, b: _Signed) -> bool:
        """At every instant at which ``a`` holds, ``b`` holds. Each step recurses into a
        part of ``a`` or ``b``, so it ends."""
        a, b = self._plain(*a), self._plain(*b)
        key = (id(a[0]), a[1], id(b[0]), b[1])
        if key not in self._implies:
            self._implies[key] = self._derive(a, b)
        return self._implies[key]

    def _derive(self, a: _Signed, b: _Signed) -> bool:
        if self.never(*a) or self.always(*b) or self.same(a, b):
            return True
        if any(self.implies(p, b) for p in self._conjuncts(*a)):
            return True  # one part of a conjunction already implies b
        options = self._disjuncts(*a)
        if options and all(self.implies(o, b) for o in options):
            return True  # whichever part of a holds, b does
        parts = self._conjuncts(*b)
        if parts and all(self.implies(a, p) for p in parts):
            return True  # a implies every part b needs
        return any(self.implies(a, o) for o in self._disjuncts(*b))


def _contradictions(item: _Located) -> list[Problem]:
    """Rules of one audience that contradict each other or can never take effect.

    Checked: ``sticky_for`` with an ``exit`` says which wins (``exit_during_sticky``),
    and that setting appears only where it decides something; an entry that can never
    be true; an exit that holds whenever the entry does (the same condition, for one),
    so nobody can ever be a member; an exit that can never be true; and, unless an exit
    ends sticky periods, an exit the entry already excludes (``entry: {all: [A, {not:
    B}]}`` with ``exit: B``), which can never end a membership. What :class:`_Logic`
    cannot show is accepted.
    """
    audience = item.audience
    name = audience.name
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(item.path, item.line_of(key), f"audience {name!r}: {message}"))

    sticky, leave, choice = audience.sticky_for, audience.exit, audience.exit_during_sticky
    if sticky is not None and leave is not None and choice is None:
        problem(
            "sticky_for",
            f"sticky_for and an exit (line {item.line_of('exit')}) contradict: add "
            "exit_during_sticky: leave (the exit ends a membership within the sticky period) "
            "or stay (members stay the whole period, as sticky_for with an exit did before)",
        )
    elif choice is not None and (sticky is None or leave is None):
        missing = "sticky_for" if sticky is None else "an exit"
        problem("exit_during_sticky", f"exit_during_sticky has no effect without {missing}")

    logic = _Logic()
    entry: _Signed = (audience.entry, False)
    if logic.never(*entry):
        problem(
            "entry",
            "the entry can never be true (it needs a condition and its own negation), so "
            "no customer can ever be a member",
        )
        return problems
    if leave is None:
        return problems
    exit_: _Signed = (leave, False)
    if logic.always(*exit_):
        problem("exit", "the exit is always true, so no customer can ever be a member")
    elif logic.implies(entry, exit_):
        why = (
            "the exit is the same condition as the entry"
            if logic.same(entry, exit_)
            else "the exit holds whenever the entry does"
        )
        problem("exit", f"{why}, so no customer can ever be a member")
    elif logic.never(*exit_):
        problem(
            "exit",
            "the exit can never be true (it needs a condition and its own negation); remove it",
        )
    elif choice != "leave" and logic.implies(entry, (leave, True)):
        hint = "" if sticky is None else " or say exit_during_sticky: leave"
        problem(
            "exit",
            "the exit can never end a membership: the entry already requires it not to "
            f"hold; remove it{hint}",
        )
    return problems


def validate(located: Sequence[_Located]) -> list[Problem]:
    """Cross-audience checks: unique names, references, cycles, reference depth, expiry,
    naming; and each audience's rules against each other (:func:`_contradictions`)."""
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
        problems.extend(_contradictions(item))
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
        for ref in sorted(r for r in item.audience.references() if r not in by_name):
            problems.append(
                Problem(
                    item.path,
                    item.ref_lines.get(ref, item.line),
                    f"audience {item.audience.name!r} references {ref!r}, "
                    "which is not defined in these files",
                )
            )
    order, cycles = _dependency_order(by_name)
    problems.extend(cycles)
    depth: dict[str, int] = {}
    never_expires: dict[str, str | None] = {}
    for name in order:
        item = by_name[name]
        audience = item.audience
        refs = [r for r in audience.references() if r in depth]
        depth[name] = 1 + max((depth[r] for r in refs), default=0)
        if depth[name] == MAX_REFERENCE_DEPTH + 1:
            problems.append(
                Problem(
                    item.path,
                    item.line,
                    f"audience {name!r} sits at the end of a chain of more than "
                    f"{MAX_REFERENCE_DEPTH} in_audience references",
                )
            )
        if audience.exit is not None or audience.sticky_for is not None:
            never_expires[name] = None
            continue
        reason = _unbounded(audience.entry, never_expires)
        never_expires[name] = reason
        if reason is not None:
            problems.append(
                Problem(
                    item.path,
                    item.line,
                    f"audience {name!r} never expires: {reason}; add a window, "
                    "an exit condition or sticky_for",
                )
            )
    return problems


def _dependency_order(by_name: dict[str, _Located]) -> tuple[list[str], list[Problem]]:
    """Audiences with every (non-cyclic) reference before its referrer, and one problem
    per reference that closes a cycle, at that ``in_audience`` line. Iterative: a chain
    of references may be longer than the interpreter's stack."""
    problems: list[Problem] = []
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def refs(name: str) -> Iterator[str]:
        return iter(sorted(by_name[name].audience.references()))

    for start in by_name:
        if start in state:
            continue
        state[start] = 1
        trail = [start]
        stack = [(start, refs(start))]
        while stack:
            name, pending = stack[-1]
            ref = next(pending, None)
            if ref is None:
                state[name] = 2
                order.append(name)
                stack.pop()
                trail.pop()
                continue
            if ref not in by_name:
                continue
            if state.get(ref) == 1:
                item = by_name[name]
                cycle = [*trail[trail.index(ref) :], ref]
                problems.append(
                    Problem(
                        item.path,
                        item.ref_lines.get(ref, item.line),
                        "audience references form a cycle: " + " -> ".join(cycle),
                    )
                )
            elif ref not in state:
                state[ref] = 1
                trail.append(ref)
                stack.append((ref, refs(ref)))
    return order, problems


def check_audiences(path: str | Path) -> tuple[list[Audience], list[Problem]]:
    """Parse and validate every audience under ``path``; return what loaded and all
    problems (errors and warnings). A path that cannot be read as YAML text at all
    raises :class:`AudienceFileError` instead: there is nothing to validate."""
    audiences, problems, _checked = check_audience_count(path)
    return audiences, problems


def check_audience_count(path: str | Path) -> tuple[list[Audience], list[Problem], int]:
    """:func:`check_audiences`, and how many audience definitions were checked: those
    that loaded and those refused, so ``validate`` counts a file holding one audience
    with errors as one audience checked, not zero."""
    problems: list[Problem] = []
    located: list[_Located] = []
    with gc_paused():
        checked = _check_files(audience_files(path), problems, located)
    problems.extend(validate(located))
    return [item.audience for item in located], problems, checked


def _check_files(files: list[Path], problems: list[Problem], located: list[_Located]) -> int:
    """Check each definition of ``files``; how many definitions there were."""
    checked = 0
    for file in files:
        for data, node in _documents(file, problems):
            checked += 1
            line = node.start_mark.line + 1
            try:
                audience = Audience.model_validate(data)
            except ValidationError as exc:
                name = data.get("name") if isinstance(data, dict) else None
                label = f"audience {name[:80]!r}: " if isinstance(name, str) else ""
                for loc, kind, message in _merged_errors(exc.errors()):
                    where = _node_at(node, loc)
                    line = where.start_mark.line + 1
                    problems.append(Problem(str(file), line, label + _describe(loc, kind, message)))
                continue
            located.append(
                _Located(audience, str(file), line, _reference_lines(node), _key_lines(node))
            )
    return checked


def load_audiences(path: str | Path) -> list[Audience]:
    """Every audience under ``path``; raises :class:`AudienceDefinitionError` on any error
    (warnings are not errors), :class:`AudienceFileError` when a file cannot be read."""
    audiences, problems = check_audiences(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise AudienceDefinitionError(errors)
    return audiences
