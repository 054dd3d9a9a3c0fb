"""`pagebuf report FILE --plot out.svg|png`: corrupted lines over time per arm, and a
per-page heat map of where corruption struck. matplotlib draws it (Agg, no display)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import PagebufError
from .report import parse_check


def plot(records: Iterable[dict[str, Any]], out: str | Path, page_size: int = 4096) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise PagebufError("plotting needs matplotlib: pip install 'pagebuf[plot]'") from None

    out = Path(out)
    if out.suffix.lower() not in (".svg", ".png", ".pdf"):
        raise PagebufError(f"{out}: the plot is written as .svg, .png or .pdf", None)

    series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    seen: dict[str, set[tuple[int, int]]] = defaultdict(set)
    pages: dict[str, dict[tuple[int, int], int]] = defaultdict(lambda: defaultdict(int))
    npages: dict[int, int] = {}
    for rec in records:
        check = parse_check(rec)
        if check is None:
            continue
        arm, buf = check.arm, check.buffer
        npages[buf] = max(npages.get(buf, 1), check.bytes // page_size)
        for offset, _cls in check.bad:
            key = (buf, offset)
            if key not in seen[arm]:
                seen[arm].add(key)
                pages[arm][(buf, offset // page_size)] += 1
        series[arm].append((check.t, len(seen[arm])))
    if not series:
        raise PagebufError("no check records to plot", None)

    arms = list(series)
    all_pages = [(buf, i) for buf in sorted(npages) for i in range(npages[buf])]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), constrained_layout=True)
    for arm in arms:
        t, n = zip(*series[arm])
        ax1.step(t, n, where="post", label=arm)
    ax1.set_xlabel("time since the user write (s)")
    ax1.set_ylabel("corrupted cache lines (cumulative)")
    ax1.set_title("Corruption over time")
    ax1.legend()
    grid = [[pages[arm].get(p, 0) for p in all_pages] for arm in arms]
    im = ax2.imshow(grid, aspect="auto", cmap="magma_r", interpolation="nearest")
    ax2.set_yticks(range(len(arms)), arms)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_xlabel(f"page (all {len(all_pages)} pages checked, buffer by buffer)")
    ax2.set_title("Where corruption struck (corrupted lines per page)")
    fig.colorbar(im, ax=ax2, label="lines")
    try:
        fig.savefig(out)
    except OSError as exc:
        raise PagebufError(f"{out}: cannot write the plot: {exc.strerror}", exc.errno) from None
    finally:
        plt.close(fig)
    return out
