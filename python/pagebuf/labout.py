"""Lab output: a run's verdicts as KTAP (the kernel's test format: `kunit.py parse` and
kselftest tooling read it) and as JUnit XML (what CI systems show), rebuilt from its JSON
Lines records. numpy-free.

Every arm and control is one test case: passed (clean, injected-detected, fired),
failed (corrupted, broken), skipped with the reason (skipped, did-not-fire, or never
reached by a run that stopped), or incomplete (cut off before its summary: KTAP
`not ok`, a JUnit error). The evidence — checks, corrupted lines and their classes,
first corruption, the access path — is in each case's diagnostics. The run itself is
the one top-level KTAP test around them, whose result line carries the overall verdict,
and the JUnit testsuite, whose properties carry it with the versions and parameters.

The JSON Lines file stays the streaming record. `Outputs` rebuilds these files from it
at each arm boundary while a run goes (replaced atomically, so a kill -9 or a panic
leaves the last whole version, the arm then running shown incomplete) and once more when
the run ends, however it ends.
"""

from __future__ import annotations

import errno as E
import os
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from . import records
from .errors import InvalidRequestError, PagebufError
from .names import MODES
from .records import ArmRow, summarize
from .results import ResultWriter, read_records

PASS, FAIL, ERROR, SKIP = "pass", "fail", "error", "skip"
STATUS = {
    "clean": PASS,
    "injected-detected": PASS,
    "fired": PASS,
    "corrupted": FAIL,
    "broken": FAIL,
    "incomplete": ERROR,
    "skipped": SKIP,
    "did-not-fire": SKIP,
}
NOT_REACHED = "not reached: the run stopped before this arm started"
# Records after which the files are rebuilt while a run goes: an arm starts or ends.
BOUNDARIES = (records.HEADER, records.ACCESS, records.ARM_SUMMARY, records.SUMMARY)


@dataclass(frozen=True)
class Case:
    """One arm or control as a test case."""

    arm: str
    verdict: str
    status: str  # PASS, FAIL, ERROR or SKIP
    reason: str  # why it failed or was skipped, in one line ("" when it passed)
    evidence: tuple[str, ...]  # diagnostic lines, each "what: value"
    seconds: float | None  # when its last check ran, since the user's write


@dataclass(frozen=True)
class Suite:
    """A run as a test suite: its cases, overall verdict and what it ran with."""

    name: str  # pagebuf-run or pagebuf-compare
    overall: str
    reason: str
    cases: tuple[Case, ...]
    properties: tuple[tuple[str, str], ...]
    started: str | None
    strict: bool = False  # an INCONCLUSIVE run fails, as `--strict` exits 10 for it

    @property
    def status(self) -> str:
        """The run's own result: an inconclusive run proved nothing either way, a skip
        (a failure under --strict)."""
        if self.overall == "INCONCLUSIVE":
            return FAIL if self.strict else SKIP
        return PASS if self.overall == "PASS" else FAIL


@dataclass
class _Seen:
    """What the table's rows leave out, collected on the way through the records."""

    access: dict[str, dict[str, Any]] = field(default_factory=dict)
    injected: dict[str, int] = field(default_factory=dict)


def _watch(recs: Iterable[dict[str, Any]], seen: _Seen) -> Iterator[dict[str, Any]]:
    for rec in recs:
        kind, arm = rec.get("type"), rec.get("arm")
        if kind == records.ACCESS and isinstance(arm, str):
            seen.access[arm] = rec
        elif kind == records.ARM_SUMMARY and isinstance(arm, str):
            if isinstance(rec.get("access"), dict) and arm not in seen.access:
                seen.access[arm] = rec["access"]
        elif kind == records.INJECT and isinstance(arm, str):
            lines = rec.get("lines")
            seen.injected[arm] = len(lines) if isinstance(lines, list) else 0
        yield rec


def one_line(text: object) -> str:
    """Any text from a file as one line (KTAP and the messages are line-based)."""
    return " ".join(str(text).split())


def case_name(arm: str) -> str:
    """An arm's name as a test name: a KTAP result line ends its name at `#`."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", arm) or "_"


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _expected(header: dict[str, Any] | None) -> list[str]:
    arms = _dict(_dict(header).get("params")).get("arms")
    return [a for a in arms if isinstance(a, str)] if isinstance(arms, list) else []


def evidence(row: ArmRow, access: dict[str, Any] | None, injected: int | None) -> list[str]:
    """What an arm's verdict rests on, one "what: value" a line."""
    bound = "" if row.exact else ">="
    first = "never" if row.first_corruption_s is None else f"{row.first_corruption_s:.3f} s"
    out = [
        f"verdict: {row.verdict} ({records.VERDICTS.get(row.verdict, 'unknown to pagebuf')})",
        f"checks: {row.checks}, {row.lines_checked} lines checked",
        f"corrupted lines: {bound}{row.corrupted_lines} (stale {row.stale}, foreign "
        f"{row.foreign}, random {row.random})",
        f"first corruption: {first}",
    ]
    if access:
        keys = ("via", "path", "method", "o_sync", "caching")
        out.append("access: " + ", ".join(f"{k} {access[k]}" for k in keys if k in access))
    elif row.via:
        out.append(f"access: via {row.via}")
    if injected is not None:
        out.append(f"injected lines: {injected}")
    if row.throughput_mb_s is not None:
        out.append(f"verified: {row.bytes_verified} bytes at {row.throughput_mb_s:.1f} MB/s")
    if row.note:
        out.append(f"note: {row.note}")
    return [one_line(line) for line in out]


def _case(row: ArmRow, seen: _Seen) -> Case:
    status = STATUS.get(row.verdict, ERROR)
    reason = ""
    if row.verdict == "did-not-fire":
        reason = row.note or "the positive control did not fire"
    elif status != PASS:
        reason = row.note or f"{row.verdict}: {records.VERDICTS.get(row.verdict, 'unknown')}"
    seconds = row.series[-1][0] if row.series else None
    return Case(row.arm, row.verdict, status, one_line(reason),
                tuple(evidence(row, seen.access.get(row.arm), seen.injected.get(row.arm))),
                seconds)  # fmt: skip


def suite(recs: Iterable[dict[str, Any]], source: str | None = None, strict: bool = False
          ) -> Suite:  # fmt: skip
    """A run's records as a Suite: its arms in the order the run meant to run them
    (those it never reached skipped, as such), then any others the file holds. `source`:
    the results file's name; `strict`: as --strict (which the properties record)."""
    seen = _Seen()
    header, rows = summarize(_watch(recs, seen))
    verdict, reason = records.overall(header, rows)
    by_arm = {r.arm: r for r in rows}
    cases = [_case(by_arm[a], seen) if a in by_arm else
             Case(a, "skipped", SKIP, NOT_REACHED, (f"verdict: {NOT_REACHED}",), None)
             for a in _expected(header)]  # fmt: skip
    cases += [_case(r, seen) for r in rows if r.arm not in {c.arm for c in cases}]
    h = _dict(header)
    command = "compare" if _is_compare(h) else "run"
    props = [("overall", verdict), ("overall_reason", one_line(reason)), ("command", command),
             ("strict", "yes" if strict else "no")]  # fmt: skip
    props += [(k, one_line(h[k])) for k in ("pagebuf_version", "kernel", "machine", "started",
                                            "line_size") if k in h]  # fmt: skip
    if source is not None:
        props.append(("results", source))
    props += [(f"module.{k}", one_line(v)) for k, v in _dict(h.get("module")).items()]
    props += [(f"params.{k}", one_line(_param(v))) for k, v in _dict(h.get("params")).items()]
    doctor = _dict(h.get("doctor")).get("summary")
    if doctor:
        props.append(("doctor", one_line(doctor)))
    started = h.get("started")
    return Suite(f"pagebuf-{command}", verdict, one_line(reason), tuple(cases), tuple(props),
                 started if isinstance(started, str) else None, strict)  # fmt: skip


def _is_compare(header: dict[str, Any]) -> bool:
    return set(MODES) <= set(_expected(header))


def _param(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


# --- KTAP ---

INDENT = "    "


def ktap(s: Suite) -> str:
    """KTAP version 1: the run as one test whose subtests are its arms."""
    props = dict(s.properties)
    about = " ".join(f"{k} {props[k]}" for k in ("kernel", "machine") if k in props)
    lines = ["KTAP version 1", f"# pagebuf {props.get('pagebuf_version', '?')}: {about}".rstrip()]
    lines += [f"# {k}: {one_line(v)}" for k, v in s.properties if k in ("results", "doctor")]
    lines += ["1..1", INDENT + "KTAP version 1", f"{INDENT}# Subtest: {s.name}"]
    lines += [f"{INDENT}# {k}: {v}" for k, v in s.properties if k.startswith("params.")]
    lines.append(f"{INDENT}1..{len(s.cases)}")
    for n, c in enumerate(s.cases, 1):
        name = case_name(c.arm)
        lines += [f"{INDENT}# {name}: {e}" for e in c.evidence]
        lines.append(INDENT + _result(c.status, n, name, c.reason))
    lines.append(f"# overall: {s.overall}: {s.reason}")
    lines.append(_result(s.status, 1, s.name, f"{s.overall}: {s.reason}"))
    return "\n".join(lines) + "\n"


def _result(status: str, n: int, name: str, why: str) -> str:
    """A result line: a skip's reason or a failure's after ` # ` (without another `#`,
    where a parser would end the name or the directive)."""
    why = why.replace("#", "") or "-"
    if status == PASS:
        return f"ok {n} {name}"
    if status == SKIP:
        return f"ok {n} {name} # SKIP {why}"
    return f"not ok {n} {name} # {why}"


# --- JUnit XML ---

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: object) -> str:
    """Text XML 1.0 can hold (ElementTree escapes markup, not control characters)."""
    return _NOT_XML.sub("\ufffd", str(text))


def junit(s: Suite) -> str:
    """JUnit XML: <testsuites> holding one <testsuite> of one <testcase> per arm, and a
    last one, `overall`, whose result is the run's (what a CI page shows of it; the
    properties say it too)."""
    reason = f"{s.overall}: {s.reason}"
    cases = [*s.cases, Case("overall", s.overall, s.status, reason, (reason,), None)]
    count = {k: sum(c.status == k for c in cases) for k in (FAIL, ERROR, SKIP)}
    total = sum(c.seconds or 0.0 for c in cases)
    attrs = {"tests": str(len(cases)), "failures": str(count[FAIL]), "errors": str(count[ERROR]),
             "skipped": str(count[SKIP]), "time": f"{total:.3f}"}  # fmt: skip
    root = ET.Element("testsuites", {"name": "pagebuf", **attrs})
    ts = ET.SubElement(root, "testsuite", {"name": _x(s.name), **attrs})
    stamp = _timestamp(s.started)
    if stamp:
        ts.set("timestamp", stamp)
    props = ET.SubElement(ts, "properties")
    for k, v in s.properties:
        ET.SubElement(props, "property", {"name": _x(k), "value": _x(v)})
    classname = s.name.replace("-", ".")
    for c in cases:
        tc = ET.SubElement(ts, "testcase", {"name": _x(c.arm), "classname": classname,
                                            "time": f"{c.seconds or 0.0:.3f}"})  # fmt: skip
        text = _x("\n".join(c.evidence))
        if c.status == SKIP:
            ET.SubElement(tc, "skipped", {"message": _x(c.reason)})
        elif c.status in (FAIL, ERROR):
            tag = "failure" if c.status == FAIL else "error"
            el = ET.SubElement(tc, tag, {"type": _x(c.verdict), "message": _x(c.reason)})
            el.text = text
        ET.SubElement(tc, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _timestamp(started: str | None) -> str | None:
    """The header's start as JUnit's timestamp (ISO 8601, no zone)."""
    m = re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", started or "")
    return m.group(0) if m else None


# --- Files ---


def write_text(path: str, text: str) -> None:
    """`text` to `path` ("-": stdout), replaced atomically and synced: a reader, or a
    crash, never sees half a file."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:  # the rename itself survives a crash
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PagebufError(f"{path}: cannot write: {exc.strerror}", exc.errno) from None


def check_outputs(results: str, *outs: str | None) -> None:
    """Before any work: each output can be written, and none is the results file (nor
    the same as another, stdout aside)."""
    named = [o for o in outs if o and o != "-"]
    for out in named:
        p = Path(out)
        if p.is_dir() or not p.parent.is_dir():
            raise PagebufError(f"{out}: cannot write: no such directory, or a directory",
                               E.ENOENT)  # fmt: skip
        if p.resolve() == Path(results).resolve():
            raise InvalidRequestError(f"{out}: that is the run's results file", E.EINVAL)
    if len({Path(o).resolve() for o in named}) < len(named):
        raise InvalidRequestError(f"{', '.join(named)}: two outputs name one file", E.EINVAL)


class Outputs:
    """The KTAP and JUnit files a run asked for, rebuilt from its JSON Lines file.
    `follow` wraps the run's writer to rebuild them at each arm boundary; leaving the
    `with` block rebuilds them a last time, whatever ended the run."""

    def __init__(self, results: str, ktap: str | None = None, junit: str | None = None,
                 strict: bool = False) -> None:  # fmt: skip
        check_outputs(results, ktap, junit)
        self.results, self.ktap, self.junit, self.strict = results, ktap, junit, strict
        self.warned = False

    def __bool__(self) -> bool:
        return bool(self.ktap or self.junit)

    def write(self, *, final: bool = True) -> None:
        """Rebuild from the results file (stdout only at the end: it cannot be rewritten)."""
        if not self:
            return
        try:
            s = suite(read_records(self.results), self.results, self.strict)
        except OSError as exc:
            raise PagebufError(f"{self.results}: {exc.strerror}", exc.errno) from None
        for path, render in ((self.ktap, ktap), (self.junit, junit)):
            if path and (final or path != "-"):
                write_text(path, render(s))

    def follow(self, out: ResultWriter) -> ResultWriter:
        return _Following(out, self._refresh) if self else out

    def _refresh(self) -> None:
        try:
            self.write(final=False)
        except (PagebufError, OSError) as exc:  # the run goes on; the last write tells
            if not self.warned:
                print(f"pagebuf: lab output: {exc}", file=sys.stderr)
                self.warned = True

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        if exc is None:
            self.write()
            return
        try:  # the run is failing already: say why this failed too, and hide nothing
            self.write()
        except (PagebufError, OSError) as err:
            print(f"pagebuf: lab output: {err}", file=sys.stderr)


class _Following(ResultWriter):
    """`inner`'s writes, each followed at an arm boundary by `refresh`. The file is
    `inner`'s, opened and closed by its owner."""

    def __init__(self, inner: ResultWriter, refresh: Callable[[], None]) -> None:
        self.path = inner.path  # no super().__init__(): that would create a file
        self._inner, self._refresh = inner, refresh

    def write(self, record: dict[str, Any]) -> None:
        self._inner.write(record)
        if record.get("type") in BOUNDARIES:
            self._refresh()

    def close(self) -> None:
        return None
