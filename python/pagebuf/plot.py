"""`pagebuf report FILE --plot out.svg|png`: corrupted lines over time per arm, and a
per-page heat map of where corruption struck. matplotlib draws it (Agg, no display).

Arms often coincide (every clean arm sits at zero), so each line has its own style and
its legend entry carries the arm's total and verdict. In the heat map every arm's row
spans that arm's own buffers, page by page, in the order the arm checked them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import PagebufError
from .records import ArmRow, summarize

_STYLES = ("-", "--", ":", "-.")
FORMATS = (".svg", ".png", ".pdf")


def check_output(out: str | Path) -> Path:
    """The plot's path, if matplotlib can write that format (checked before any work)."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise PagebufError(f"{out}: the plot is written as .svg, .png or .pdf", None)
    return out


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
    _header, rows = summarize(records, page_size)
    rows = [r for r in rows if r.checks]
    if not rows:
        raise PagebufError("no check records to plot", None)
    arms = [r.arm for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7.5), constrained_layout=True)
    for i, row in enumerate(rows):
        t, n = zip(*row.series)
        bound = "" if row.exact else ">="
        label = f"{row.arm}: {bound}{row.corrupted_lines} lines ({row.verdict})"
        ax1.step(t, n, where="post", label=label, linestyle=_STYLES[i % len(_STYLES)],
                 linewidth=2.2 - 0.25 * (i % 4))  # fmt: skip
    ax1.set_xlabel("time since the user write (s)")
    ax1.set_ylabel("corrupted cache lines (cumulative)")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title("Corruption over time")
    ax1.legend(fontsize="small")

    grid, bounds = heat_map(rows, page_size)
    width = len(grid[0])
    im = ax2.imshow(grid, aspect="auto", cmap="magma_r", interpolation="nearest", vmin=0)
    for y, x in bounds:  # the end of each buffer, in its own arm's row
        if x < width:
            ax2.vlines(x - 0.5, y - 0.5, y + 0.5, color="grey", linewidth=0.8)
    ax2.set_yticks(range(len(arms)), arms)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    nbufs = max(len(r.buffer_pages) for r in rows)
    ax2.set_xlabel(f"page within the arm's buffers ({nbufs} buffer(s), {width} pages)")
    ax2.set_title("Where corruption struck (corrupted lines per page)")
    bar = fig.colorbar(im, ax=ax2, label="lines")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
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
