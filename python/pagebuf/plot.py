"""`pagebuf report FILE --plot out.svg|png`: corrupted lines over time per arm, and a
per-page heat map of where corruption struck. matplotlib draws it (Agg, no display).

Arms often coincide (every clean arm sits at zero), so each line has its own style and
its legend entry carries the arm's total and verdict. In the heat map every arm's row
spans that arm's own buffers, page by page, in the order the arm checked them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import PagebufError
from .report import parse_check

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

    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    seen: dict[str, set[tuple[int, int]]] = defaultdict(set)
    hits: dict[str, dict[tuple[int, int], int]] = defaultdict(lambda: defaultdict(int))
    buffers: dict[str, dict[int, int]] = defaultdict(dict)  # arm -> buffer -> pages
    verdicts: dict[str, str] = {}
    for rec in records:
        if rec.get("type") == "arm_summary" and isinstance(rec.get("arm"), str):
            verdicts[rec["arm"]] = str(rec.get("verdict", ""))
        check = parse_check(rec)
        if check is None:
            continue
        arm, buf = check.arm, check.buffer
        buffers[arm][buf] = max(buffers[arm].get(buf, 1), check.bytes // page_size)
        for offset, _cls in check.bad:
            if (buf, offset) not in seen[arm]:
                seen[arm].add((buf, offset))
                hits[arm][(buf, offset // page_size)] += 1
        series[arm].append((check.t, len(seen[arm])))
    if not series:
        raise PagebufError("no check records to plot", None)

    arms = list(series)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7.5), constrained_layout=True)
    for i, arm in enumerate(arms):
        t, n = zip(*series[arm])
        label = f"{arm}: {len(seen[arm])} lines" + (
            f" ({verdicts[arm]})" if arm in verdicts else ""
        )
        ax1.step(t, n, where="post", label=label, linestyle=_STYLES[i % len(_STYLES)],
                 linewidth=2.2 - 0.25 * (i % 4))  # fmt: skip
    ax1.set_xlabel("time since the user write (s)")
    ax1.set_ylabel("corrupted cache lines (cumulative)")
    ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.set_title("Corruption over time")
    ax1.legend(fontsize="small")

    # One row per arm over that arm's own buffers; a column per page.
    width = max(sum(b.values()) for b in buffers.values())
    grid, bounds = [], []
    for arm in arms:
        row: list[int] = []
        for buf, pages in buffers[arm].items():
            row += [hits[arm].get((buf, p), 0) for p in range(pages)]
            bounds.append((len(grid), len(row)))
        grid.append(row + [0] * (width - len(row)))
    im = ax2.imshow(grid, aspect="auto", cmap="magma_r", interpolation="nearest", vmin=0)
    for y, x in bounds:  # the end of each buffer, in its own arm's row
        if x < width:
            ax2.vlines(x - 0.5, y - 0.5, y + 0.5, color="grey", linewidth=0.8)
    ax2.set_yticks(range(len(arms)), arms)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    nbufs = max(len(b) for b in buffers.values())
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
