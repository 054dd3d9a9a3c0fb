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
  summary      once, last: `exit_code`, every arm's verdict, and the run's `overall`
               verdict with its `overall_reason`

`summarize()` rebuilds one row per arm from them, the check records alone if need be (a
file cut off mid-run renders as far as it goes), and feeds the table (report), the plot
and the recommendation (advice) alike. `overall()` turns a run's rows into its one
verdict, and `exit_code()` is the only place verdicts become an exit status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
EXIT_CLEAN, EXIT_CORRUPT, EXIT_BROKEN, EXIT_INCONCLUSIVE = 0, 1, 3, 10

# A run's one verdict, over all its arms (overall()).
OVERALL = {
    "PASS": "no corruption, and the controls showed that this run could have found it",
    "FAIL": "corruption found",
    "BROKEN": "a control failed: the detector cannot be trusted, no verdict stands",
    "INCONCLUSIVE": "no corruption found, but this run could not have shown it (the reason "
    "says why)",
}


NO_FIRE = (
    "the positive control did not fire: the aliases stayed coherent here (an emulator, or "
    "a coherent platform), so clean arms show nothing"
)


def exit_code(verdicts: Iterable[str], overall: str | None = None, strict: bool = False) -> int:
    """A run's exit status: broken controls over corruption over clean; with `strict`,
    an INCONCLUSIVE overall verdict exits EXIT_INCONCLUSIVE instead of 0."""
    seen = set(verdicts)
    if "broken" in seen:
        return EXIT_BROKEN
    if "corrupted" in seen:
        return EXIT_CORRUPT
    return EXIT_INCONCLUSIVE if strict and overall == "INCONCLUSIVE" else EXIT_CLEAN


def _effective(header: dict[str, Any] | None, rows: Iterable[ArmRow]) -> list[tuple[str, str]]:
    """(arm, verdict) per row, where an arm cut off (no summary) after it found lines that
    were not injected counts as corrupted, not as clean."""
    params = (header or {}).get("params") or {}
    injecting = {"inject", params.get("inject_into")}
    return [
        (r.arm, "corrupted")
        if r.verdict == "incomplete" and r.corrupted_lines and r.arm not in injecting
        else (r.arm, r.verdict)
        for r in rows
    ]


def rows_exit_code(header: dict[str, Any] | None, rows: list[ArmRow], strict: bool = False) -> int:
    """exit_code() of a file's rows, as its overall verdict has it."""
    verdicts = _effective(header, rows)
    verdict, _ = _overall(header, rows, verdicts)
    return exit_code((v for _, v in verdicts), verdict, strict)


def overall(header: dict[str, Any] | None, rows: list[ArmRow]) -> tuple[str, str]:
    """overall_of() a file: the arms its header asked for, and its rows."""
    return _overall(header, rows, _effective(header, rows))


def _overall(
    header: dict[str, Any] | None, rows: list[ArmRow], verdicts: list[tuple[str, str]]
) -> tuple[str, str]:
    params = (header or {}).get("params") or {}
    asked = [str(a) for a in params.get("arms") or [r.arm for r in rows]]
    return overall_of(asked, params.get("inject_into"), verdicts)


def overall_of(
    asked: Sequence[str], inject_into: str | None, verdicts: list[tuple[str, str]]
) -> tuple[str, str]:
    """A run's one verdict (a key of OVERALL) and its reason in words, from the arms it
    asked for and the (arm, verdict) of those that ran.

    BROKEN if a control failed; FAIL if any arm found corruption; otherwise PASS only if
    every arm asked for ran to its end, the positive control fired (this platform can
    corrupt, so a clean mitigation means something) and an injection was found (the
    detector works); else INCONCLUSIVE, with every reason."""
    broken = [a for a, v in verdicts if v == "broken"]
    if broken:
        return "BROKEN", f"the detector failed its injection check in {', '.join(broken)}"
    corrupted = [a for a, v in verdicts if v == "corrupted"]
    if corrupted:
        return "FAIL", f"corruption in {', '.join(corrupted)}"
    ran = dict(verdicts)
    reasons = [f"{a} never ran (the run was cut)" for a in asked if a not in ran]
    reasons += [f"{a} was cut off" for a, v in verdicts if v == "incomplete"]
    reasons += [f"{a} was skipped" for a, v in verdicts if v == "skipped"]
    if "positive" not in asked:
        reasons.append("no positive control ran, so nothing shows this platform can corrupt")
    elif ran.get("positive") == "did-not-fire":
        reasons.append(NO_FIRE)
    if "inject" not in asked and not inject_into:
        reasons.append("no injection ran, so nothing shows the detector finds corruption")
    if reasons:
        return "INCONCLUSIVE", "; ".join(reasons)
    return "PASS", OVERALL["PASS"]


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
    dma: dict[str, Any] | None = None  # the dma arm's device and what it is (DMA_FACTS)
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
                row.dma = rec["dma"] if isinstance(rec.get("dma"), dict) else None
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
