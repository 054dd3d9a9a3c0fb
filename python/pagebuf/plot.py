"""`pagebuf report FILE --plot out.svg|png`: corrupted lines over time per arm, and a
per-page heat map of where corruption struck. matplotlib draws it (Agg, no display).

`describe()` turns a run into a Figure (what is drawn, as data); `plot()` draws it. Zero
looks like nothing happened on every run: the curves start at a y of 0 and reach at
least 1, and a page with no corrupted line is blank in the heat map. Arms often coincide
(every clean arm sits at zero), so each line has its own style and marker, and its
legend entry carries the arm's total and verdict. In the heat map every arm's row spans
that arm's own buffers, page by page, in the order the arm checked them. The title says
the kernel, the date, the access path and doctor's case (e.g. "emulated: no caches").
"""

from __future__ import annotations

import errno as E
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidRequestError, PagebufError
from .records import ArmRow, summarize

_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "x", "+", "*")
FORMATS = (".svg", ".png", ".pdf")
# A page with no corrupted line is drawn blank, whatever else the map holds: counts start
# at 1, and everything below HEAT_VMIN takes the colour map's "under" colour, white.
HEAT_VMIN = 0.5
HEAT_CMAP = "YlOrRd"


def check_output(out: str | Path) -> Path:
    """The plot's path, if matplotlib can write that format (checked before any work)."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise InvalidRequestError(f"{out}: the plot is written as .svg, .png or .pdf", E.EINVAL)
    return out


@dataclass(frozen=True)
class Curve:
    """One arm's cumulative corrupted lines over time, and how it is told apart."""

    arm: str
    t: list[float]
    n: list[int]
    label: str
    linestyle: str
    marker: str


@dataclass(frozen=True)
class Figure:
    """Everything the plot shows, before matplotlib: what the tests check."""

    title: str
    curves: list[Curve]
    ylim: tuple[float, float]  # from 0: a clean run is a flat line at the bottom
    arms: list[str]
    grid: list[list[int]]
    bounds: list[tuple[int, int]]
    vmax: int
    heat_xlabel: str


def describe(header: dict[str, Any] | None, rows: list[ArmRow], page_size: int = 4096) -> Figure:
    """The figure of a run's rows (records.summarize) and header."""
    rows = [r for r in rows if r.checks]
    if not rows:
        raise InvalidRequestError("no check records to plot", E.EINVAL)
    curves = []
    for i, row in enumerate(rows):
        t, n = zip(*row.series)
        bound = "" if row.exact else ">="
        curves.append(Curve(row.arm, list(t), list(n),
                            f"{row.arm}: {bound}{row.corrupted_lines} lines ({row.verdict})",
                            _STYLES[i % len(_STYLES)], _MARKERS[i % len(_MARKERS)]))  # fmt: skip
    top = max(max(c.n) for c in curves)
    grid, bounds = heat_map(rows, page_size)
    nbufs = max(len(r.buffer_pages) for r in rows)
    return Figure(
        title=title(header, rows),
        curves=curves,
        ylim=(0.0, max(1.0, top * 1.08)),
        arms=[r.arm for r in rows],
        grid=grid,
        bounds=bounds,
        vmax=max(1, *(max(row) for row in grid)),
        heat_xlabel=f"page within the arm's buffers ({nbufs} buffer(s), {len(grid[0])} pages)",
    )


def title(header: dict[str, Any] | None, rows: list[ArmRow]) -> str:
    """Kernel, date, the access path(s) and doctor's case, from the header and rows."""
    h = header or {}
    vias = sorted({r.via for r in rows if r.via})
    parts = [
        f"kernel {h.get('kernel', '?')} ({h.get('machine', '?')})",
        str(h.get("started", "date unknown")),
        "via " + (", ".join(vias) if vias else "?"),
    ]
    case = (h.get("doctor") or {}).get("summary")
    return "  ·  ".join(parts) + (f"\n{case}" if case else "")


def plot(records: Iterable[dict[str, Any]], out: str | Path, page_size: int = 4096) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise PagebufError("plotting needs matplotlib: pip install 'pagebuf[plot]'") from None

    out = check_output(out)
    fig_data = describe(*summarize(records, page_size), page_size=page_size)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 8), constrained_layout=True)
    fig.suptitle(fig_data.title, fontsize="small")
    for i, c in enumerate(fig_data.curves):
        ax1.step(c.t, c.n, where="post", label=c.label, linestyle=c.linestyle, marker=c.marker,
                 markevery=max(1, len(c.t) // 12), markersize=5,
                 linewidth=2.2 - 0.25 * (i % 4))  # fmt: skip
    ax1.set_ylim(*fig_data.ylim)
    ax1.set_xlabel("time since the user write (s)")
    ax1.set_ylabel("corrupted cache lines (cumulative)")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title("Corruption over time")
    ax1.legend(fontsize="small")

    cmap = matplotlib.colormaps[HEAT_CMAP].with_extremes(under="white")
    width = len(fig_data.grid[0])
    im = ax2.imshow(fig_data.grid, aspect="auto", cmap=cmap, interpolation="nearest",
                    vmin=HEAT_VMIN, vmax=max(fig_data.vmax, 1) + 0.5)  # fmt: skip
    for y, x in fig_data.bounds:  # the end of each buffer, in its own arm's row
        if x < width:
            ax2.vlines(x - 0.5, y - 0.5, y + 0.5, color="grey", linewidth=0.8)
    ax2.set_yticks(range(len(fig_data.arms)), fig_data.arms)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel(fig_data.heat_xlabel)
    ax2.set_title("Where corruption struck (corrupted lines per page; blank: none)")
    bar = fig.colorbar(im, ax=ax2, label="lines", extend="min")
    bar.set_ticks(MaxNLocator(nbins=min(fig_data.vmax, 8), integer=True, min_n_ticks=1)
                  .tick_values(1, fig_data.vmax))  # fmt: skip
    bar.ax.set_ylim(HEAT_VMIN, fig_data.vmax + 0.5)
    try:
        fig.savefig(out)
    except OSError as exc:
        raise PagebufError(f"{out}: cannot write the plot: {exc.strerror}", exc.errno) from None
    finally:
        plt.close(fig)
    return out


def heat_map(
    rows: list[ArmRow], page_size: int = 4096
) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Corrupted lines per page: a row per arm over that arm's own buffers, in the order
    it checked them, zero-padded to the widest; and (row, column) where each buffer ends."""
    width = max(sum(r.buffer_pages.values()) for r in rows)
    grid: list[list[int]] = []
    bounds: list[tuple[int, int]] = []
    for r in rows:
        hits = r.page_hits(page_size)
        cells: list[int] = []
        for buf, pages in r.buffer_pages.items():
            cells += [hits.get((buf, p), 0) for p in range(pages)]
            bounds.append((len(grid), len(cells)))
        grid.append(cells + [0] * (width - len(cells)))
    return grid, bounds
