"""A run's rows (records.summarize) as a table a person can read.

Rows are rebuilt from the per-check records alone, so a file cut off mid-run (kill -9,
a panic) renders as far as it goes; the arm summaries the run writes at the end only
add the verdicts. A count with ">=" is a lower bound: some check listed only part of
its bad lines (its exact count is in the record).
"""

from __future__ import annotations

from typing import Any

from .records import ArmRow, Check, parse_check, summarize

__all__ = ["ArmRow", "Check", "parse_check", "render_table", "summarize"]


COLUMNS = ("ARM", "VIA", "CHECKED", "CORRUPT", "FIRST(s)", "STALE", "FOREIGN", "RANDOM", "MB/s",
           "VERDICT")  # fmt: skip


def render_table(rows: list[ArmRow]) -> str:
    head = COLUMNS
    body = [
        (
            r.arm,
            r.via or "-",
            str(r.lines_checked),
            ("" if r.exact else ">=") + str(r.corrupted_lines),
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
    lines = ["  ".join(c.ljust(w) if i in (0, 1, 9) else c.rjust(w)
                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in (head, *body)]  # fmt: skip
    notes = [f"{r.arm}: {r.note}" for r in rows if r.note]
    notes += [_mapped_for(r.arm, r.dma) for r in rows if r.dma and r.dma.get("dma_device")]
    return "\n".join(lines + notes)


def _mapped_for(arm: str, dma: dict[str, Any]) -> str:
    """The device a dma arm's buffers were mapped for (--dma-device), and what it is."""
    syncs = "needed" if dma.get("dma_syncs") else "not needed"
    return (f"{arm}: mapped for {dma.get('dma_device')} (mask {dma.get('dma_mask_hex')}, "
            f"firmware says {dma.get('dma_coherence')}, IOMMU {dma.get('dma_iommu')}): "
            f"syncs {syncs}")  # fmt: skip
