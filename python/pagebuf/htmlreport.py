"""`pagebuf report FILE --html out.html`: one page a person can send — the overall
verdict, the table, what a compare run showed, the plots, doctor's findings, versions
and parameters — that opens offline: the plots are data: URIs, the style is inline, there
is no script, and its Content-Security-Policy lets the page load nothing else. Every
text that comes from the file is escaped.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, records
from .errors import PagebufError
from .labout import check_outputs, suite, write_text
from .records import ArmRow, summarize
from .report import COLUMNS
from .results import read_records

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 76em;
       padding: 0 1em; color: #1a1a1a; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
.source { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
#overall { padding: .7em 1em; border-radius: 4px; font-size: 1.1em; border: 2px solid; }
.PASS { background: #e7f6e7; border-color: #3a8f3a; }
.FAIL, .BROKEN { background: #fbe7e7; border-color: #b52a2a; }
.INCONCLUSIVE { background: #fdf5dc; border-color: #b08a00; }
tr.corrupted td, tr.broken td, tr.incomplete td { background: #fbe7e7; }
tr.skipped td, tr.did-not-fire td { color: #666; }
.risk { color: #b52a2a; font-weight: bold; } .warn { color: #8a6d00; font-weight: bold; }
pre { background: #f6f6f6; padding: .8em; white-space: pre-wrap; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
footer { margin-top: 2.5em; color: #777; font-size: .9em; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cells(r: ArmRow) -> list[tuple[str, bool]]:
    """A row's cells, as `pagebuf report` prints them, each with whether it is a number."""
    first = "-" if r.first_corruption_s is None else f"{r.first_corruption_s:.1f}"
    speed = "-" if r.throughput_mb_s is None else f"{r.throughput_mb_s:.1f}"
    return [(r.arm, False), (r.via or "-", False), (str(r.lines_checked), True),
            (("" if r.exact else ">=") + str(r.corrupted_lines), True), (first, True),
            (str(r.stale), True), (str(r.foreign), True), (str(r.random), True), (speed, True),
            (r.verdict, False), (r.note, False)]  # fmt: skip


def _table(ident: str, head: Sequence[str], rows: Iterable[Sequence[tuple[str, bool]]],
           classes: Iterable[str] | None = None) -> str:  # fmt: skip
    """A table of escaped text; `classes`: one per row (verdicts, escaped too)."""
    out = [f'<table id="{ident}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    body = list(rows)
    for row, cls in zip(body, list(classes) if classes is not None else [""] * len(body)):
        out.append(f'<tr class="{_e(cls)}">' if cls else "<tr>")
        out += [f'<td class="n">{_e(v)}</td>' if num else f"<td>{_e(v)}</td>" for v, num in row]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _pairs(d: dict[str, Any]) -> list[list[tuple[str, bool]]]:
    return [[(str(k), False), (_text(v), False)] for k, v in d.items()]


def _text(v: object) -> str:
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def page(recs: Sequence[dict[str, Any]], source: str, plot_png: bytes | None,
         plot_note: str = "", strict: bool = False) -> str:  # fmt: skip
    """The page for a run's records; `plot_png`: `pagebuf report --plot`'s drawing, or
    None and `plot_note` saying why there is none."""
    from .advice import for_records

    header, rows = summarize(recs)
    s = suite(recs, source, strict)
    h = _dict(header)
    command = s.name.removeprefix("pagebuf-")
    title = f"pagebuf {command}: {s.overall}"
    facts = [f"results: {source}"]
    facts += [f"{k}: {h[k]}" for k in ("started", "kernel", "machine") if k in h]
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="source">{_e(" · ".join(facts))}</p>',
        f'<p id="overall" class="{_e(s.overall)}"><strong>{_e(s.overall)}</strong> '
        f"{_e(s.reason)}</p>",
        "<h2>Arms</h2>",
        _table("arms", [*COLUMNS, "NOTE"], (_cells(r) for r in rows), (r.verdict for r in rows)),
    ]
    rec = for_records(recs)
    if rec is not None:
        body += ["<h2>What the run showed</h2>", f'<pre id="recommendation">{_e(rec.text)}</pre>']
    body.append("<h2>Corruption over time, and where</h2>")
    if plot_png is not None:
        data = base64.b64encode(plot_png).decode("ascii")
        body.append(f'<figure><img id="plot" src="data:image/png;base64,{data}" alt="corrupted '
                    'cache lines over time per arm, and per page"></figure>')  # fmt: skip
    else:
        body.append(f'<p id="no-plot">{_e(plot_note or "no plot")}</p>')
    doctor = _dict(h.get("doctor"))
    findings = [f for f in doctor.get("findings") or () if isinstance(f, dict)]
    body.append("<h2>What doctor found on the machine that ran it</h2>")
    body.append(_table("doctor", ("VERDICT", "FINDING", "VALUE", "DETAIL"),
                       ([(str(f.get(k, "")), False) for k in ("verdict", "name", "value",
                                                               "detail")] for f in findings),
                       (str(f.get("verdict", "")) for f in findings)))  # fmt: skip
    if doctor.get("summary"):
        body.append(f'<p id="doctor-summary">=&gt; {_e(doctor["summary"])}</p>')
    versions = {k: h[k] for k in ("pagebuf_version", "kernel", "machine", "line_size") if k in h}
    versions.update({f"module {k}": v for k, v in _dict(h.get("module")).items()})
    body += ["<h2>Versions</h2>", _table("versions", ("WHAT", "VALUE"), _pairs(versions))]
    params = _dict(h.get("params"))
    body += ["<h2>Parameters</h2>", _table("params", ("PARAMETER", "VALUE"), _pairs(params))]
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    body.append(f"<footer>pagebuf {_e(__version__)} report --html, {_e(made)}; overall: "
                f"{_e(records.OVERALL.get(s.overall, s.overall))}</footer>")  # fmt: skip
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def draw(recs: Sequence[dict[str, Any]]) -> tuple[bytes | None, str]:
    """The plot as PNG bytes, or None and why not (no matplotlib, nothing checked)."""
    from .plot import plot

    with tempfile.TemporaryDirectory(prefix="pagebuf-html-") as tmp:
        out = Path(tmp) / "plot.png"
        try:
            plot(recs, out)
        except PagebufError as exc:
            return None, f"no plot: {exc.message}"
        return out.read_bytes(), ""


def write(source: str, out: str, strict: bool = False) -> None:
    """The page for the run in `source`, written to `out` (replaced atomically)."""
    check_outputs(source, out)
    try:
        recs = list(read_records(source))
    except OSError as exc:
        raise PagebufError(f"{source}: {exc.strerror}", exc.errno) from None
    png, note = draw(recs)
    write_text(out, page(recs, source, png, note, strict))
