"""The records of a run, in one place (numpy-free: `report` needs no numpy).

A run writes JSON Lines (results.ResultWriter), one record a line, each with a `type`:

  header       once, first: `params` (what was asked), `module`, `doctor`, `line_size`
  access       per arm: the user path it really took (`via`, `path`, `method`, `o_sync`,
               `caching`)
  inject       per injecting arm: the `lines` [buffer, offset] that were injected
  check        per check of a buffer: `bad_lines` and the per-class counts are exact,
               `bad` lists [offset, class] of at most `listed` of them, and
               `bad_truncated` says when the list was cut
  arm_summary  per arm, at its end: `verdict`, `note`, `access`
  summary      once, last: `exit_code` and every arm's verdict

`summarize()` rebuilds one row per arm from them, the check records alone if need be (a
file cut off mid-run renders as far as it goes), and feeds the table (report), the plot
and the recommendation (advice) alike. `exit_code()` is the only place a set of
verdicts becomes an exit status.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

HEADER, ACCESS, INJECT, CHECK, ARM_SUMMARY, SUMMARY = (
    "header", "access", "inject", "check", "arm_summary", "summary")  # fmt: skip

# What a line that reads wrong holds: the previous generation's bytes (what a write-back
# of the kernel's stale lines leaves), another line's or buffer's bytes, or neither.
CLASSES = ("stale", "foreign", "random")

VERDICTS = {
    "clean": "no line ever read wrong",
    "corrupted": "lines read wrong: the aliases were not coherent",
    "injected-detected": "the injected lines, and nothing else, were found",
    "broken": "the detector missed injected lines or found others: no verdict stands",
    "fired": "the positive control corrupted, as it must where aliases are not coherent",
    "did-not-fire": "the positive control found nothing: these aliases stayed coherent",
    "skipped": "the arm did not run, for the reason in its note",
    "incomplete": "the run ended before the arm's summary",
}
EXIT_CLEAN, EXIT_CORRUPT, EXIT_BROKEN = 0, 1, 3


def exit_code(verdicts: Iterable[str]) -> int:
    """A run's exit status: broken controls over corruption over clean."""
    seen = set(verdicts)
    if "broken" in seen:
        return EXIT_BROKEN
    return EXIT_CORRUPT if "corrupted" in seen else EXIT_CLEAN


def rows_exit_code(header: dict[str, Any] | None, rows: Iterable[ArmRow]) -> int:
    """exit_code() of a file's rows: an arm cut off (no summary) after it found lines that
    were not injected counts as corrupted, not as clean."""
    params = (header or {}).get("params") or {}
    injecting = {"inject", params.get("inject_into")}
    return exit_code(
        "corrupted"
        if r.verdict == "incomplete" and r.corrupted_lines and r.arm not in injecting
        else r.verdict
        for r in rows
    )


@dataclass(frozen=True)
class Check:
    """One check record of one buffer, its fields typed."""

    arm: str
    t: float
    buffer: int
    bytes: int
    lines_checked: int
    seconds: float
    bad: tuple[tuple[int, str], ...]
    bad_lines: int  # exact, even where `bad` was cut
    truncated: bool


def parse_check(rec: dict[str, Any]) -> Check | None:
    """A check record, or None for anything else, malformed records included (a file
    edited or written by something else renders as far as it makes sense)."""
    if rec.get("type") != CHECK or not isinstance(rec.get("arm"), str):
        return None
    try:
        bad = tuple((int(off), str(cls)) for off, cls in rec.get("bad") or ())
        return Check(
            arm=rec["arm"],
            t=float(rec.get("t", 0.0)),
            buffer=int(rec.get("buffer", 0)),
            bytes=int(rec.get("bytes", 0)),
            lines_checked=int(rec.get("lines_checked", 0)),
            seconds=float(rec.get("seconds", 0.0)),
            bad=bad,
            bad_lines=max(int(rec.get("bad_lines", len(bad))), len(bad)),
            truncated=bool(rec.get("bad_truncated", False)),
        )
    except (TypeError, ValueError):
        return None


@dataclass
class ArmRow:
    """One arm of a run, rebuilt from its records."""

    arm: str
    checks: int = 0
    lines_checked: int = 0
    corrupted_lines: int = 0  # distinct lines; a lower bound where `exact` is False
    first_corruption_s: float | None = None
    stale: int = 0
    foreign: int = 0
    random: int = 0
    bytes_verified: int = 0
    verify_seconds: float = 0.0
    verdict: str = "incomplete"
    note: str = ""
    exact: bool = True  # False when a check listed only some of its bad lines
    via: str | None = None  # the user path the arm really took
    bad: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)
    # For the plot: (t, corrupted lines so far) per check, and pages per buffer.
    series: list[tuple[float, int]] = field(default_factory=list, repr=False)
    buffer_pages: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def throughput_mb_s(self) -> float | None:
        if not self.verify_seconds:
            return None
        return self.bytes_verified / self.verify_seconds / 1e6

    def page_hits(self, page_size: int) -> dict[tuple[int, int], int]:
        """Corrupted lines per (buffer, page)."""
        hits: dict[tuple[int, int], int] = {}
        for buf, offset in self.bad:
            key = (buf, offset // page_size)
            hits[key] = hits.get(key, 0) + 1
        return hits

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for private in ("bad", "series", "buffer_pages"):
            d.pop(private)
        d["throughput_mb_s"] = self.throughput_mb_s
        return d


def summarize(
    records: Iterable[dict[str, Any]], page_size: int = 4096
) -> tuple[dict[str, Any] | None, list[ArmRow]]:
    """The header (if any) and one row per arm, in the order arms first appear."""
    header = None
    rows: dict[str, ArmRow] = {}
    most: dict[str, int] = {}  # the largest exact count of one check, per arm
    for rec in records:
        kind = rec.get("type")
        if kind == HEADER:
            header = rec
            continue
        check = parse_check(rec)
        if check is not None:
            row = rows.setdefault(check.arm, ArmRow(check.arm))
            _add_check(row, check, page_size)
            most[check.arm] = max(most.get(check.arm, 0), check.bad_lines)
        elif kind in (ACCESS, ARM_SUMMARY) and isinstance(rec.get("arm"), str):
            row = rows.setdefault(rec["arm"], ArmRow(rec["arm"]))
            if kind == ACCESS:
                row.via = str(rec.get("via"))
            else:
                row.verdict = str(rec.get("verdict", row.verdict))
                row.note = str(rec.get("note", ""))
    for row in rows.values():
        for cls in CLASSES:
            setattr(row, cls, sum(1 for c in row.bad.values() if c == cls))
        row.corrupted_lines = max(len(row.bad), most.get(row.arm, 0))
    return header, list(rows.values())


def _add_check(row: ArmRow, check: Check, page_size: int) -> None:
    row.checks += 1
    row.lines_checked += check.lines_checked
    row.bytes_verified += check.bytes
    row.verify_seconds += check.seconds
    row.buffer_pages[check.buffer] = max(row.buffer_pages.get(check.buffer, 1),
                                         check.bytes // page_size)  # fmt: skip
    if check.bad_lines and row.first_corruption_s is None:
        row.first_corruption_s = check.t
    if check.truncated or check.bad_lines > len(check.bad):
        row.exact = False
    for offset, cls in check.bad:
        row.bad[(check.buffer, offset)] = cls
    row.series.append((check.t, len(row.bad)))
