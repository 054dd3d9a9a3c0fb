"""Turn a run's JSON Lines into one row per arm and a table a person can read.

Rows are rebuilt from the per-check records alone, so a file cut off mid-run (kill -9,
a panic) renders as far as it goes; the arm summaries the run writes at the end only
add the verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

CLASSES = ("stale", "foreign", "random")


@dataclass
class ArmRow:
    arm: str
    checks: int = 0
    lines_checked: int = 0
    corrupted_lines: int = 0
    first_corruption_s: float | None = None
    stale: int = 0
    foreign: int = 0
    random: int = 0
    bytes_verified: int = 0
    verify_seconds: float = 0.0
    verdict: str = "incomplete"
    note: str = ""
    bad: dict[tuple[int, int], str] = field(default_factory=dict, repr=False)

    @property
    def throughput_mb_s(self) -> float | None:
        if not self.verify_seconds:
            return None
        return self.bytes_verified / self.verify_seconds / 1e6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("bad")
        d["throughput_mb_s"] = self.throughput_mb_s
        return d


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


def parse_check(rec: dict[str, Any]) -> Check | None:
    """A check record, or None for anything else, malformed records included (a file
    edited or written by something else renders as far as it makes sense)."""
    if rec.get("type") != "check" or not isinstance(rec.get("arm"), str):
        return None
    try:
        return Check(
            arm=rec["arm"],
            t=float(rec.get("t", 0.0)),
            buffer=int(rec.get("buffer", 0)),
            bytes=int(rec.get("bytes", 0)),
            lines_checked=int(rec.get("lines_checked", 0)),
            seconds=float(rec.get("seconds", 0.0)),
            bad=tuple((int(off), str(cls)) for off, cls in rec.get("bad") or ()),
        )
    except (TypeError, ValueError):
        return None


def summarize(records: Iterable[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[ArmRow]]:
    """The header (if any) and one row per arm, in the order arms first appear."""
    header = None
    rows: dict[str, ArmRow] = {}
    for rec in records:
        kind = rec.get("type")
        if kind == "header":
            header = rec
            continue
        check = parse_check(rec)
        if check is not None:
            _add_check(rows.setdefault(check.arm, ArmRow(check.arm)), check)
        elif kind == "arm_summary" and isinstance(rec.get("arm"), str):
            row = rows.setdefault(rec["arm"], ArmRow(rec["arm"]))
            row.verdict = str(rec.get("verdict", row.verdict))
            row.note = str(rec.get("note", ""))
    for row in rows.values():
        for cls in CLASSES:
            setattr(row, cls, sum(1 for c in row.bad.values() if c == cls))
        row.corrupted_lines = len(row.bad)
    return header, list(rows.values())


def _add_check(row: ArmRow, check: Check) -> None:
    row.checks += 1
    row.lines_checked += check.lines_checked
    row.bytes_verified += check.bytes
    row.verify_seconds += check.seconds
    if check.bad and row.first_corruption_s is None:
        row.first_corruption_s = check.t
    for offset, cls in check.bad:
        row.bad[(check.buffer, offset)] = cls


def render_table(rows: list[ArmRow]) -> str:
    head = ("ARM", "CHECKED", "CORRUPT", "FIRST(s)", "STALE", "FOREIGN", "RANDOM", "MB/s",
            "VERDICT")  # fmt: skip
    body = [
        (
            r.arm,
            str(r.lines_checked),
            str(r.corrupted_lines),
            "-" if r.first_corruption_s is None else f"{r.first_corruption_s:.1f}",
            str(r.stale),
            str(r.foreign),
            str(r.random),
            "-" if r.throughput_mb_s is None else f"{r.throughput_mb_s:.1f}",
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in (head, *body)]  # fmt: skip
    notes = [f"{r.arm}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + notes)
