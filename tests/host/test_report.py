"""report and plot from JSON Lines, including a file cut off mid-run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pagebuf.report import render_table, summarize
from pagebuf.results import read_records

pytest.importorskip("matplotlib", reason="plots need matplotlib (pagebuf[plot])")


def records() -> list[dict[str, object]]:
    recs: list[dict[str, object]] = [{"type": "header", "params": {"seed": 1}}]
    for t in range(5):
        for arm, bad in (("cached", [[64 * t, "stale"], [4096 + 64 * t, "foreign"]]),
                         ("dma", [])):  # fmt: skip
            recs.append({"type": "check", "arm": arm, "t": float(t), "buffer": 1,
                         "lines_checked": 128, "bad_lines": len(bad), "bad": bad,
                         "bytes": 8192, "seconds": 0.001})  # fmt: skip
    recs.append({"type": "arm_summary", "arm": "cached", "verdict": "corrupted"})
    return recs


def test_summarize_counts_distinct_lines() -> None:
    header, rows = summarize(records())
    assert header is not None and header["params"] == {"seed": 1}
    cached, dma = rows
    assert (cached.arm, cached.checks, cached.lines_checked) == ("cached", 5, 640)
    assert cached.corrupted_lines == 10 and cached.stale == 5 and cached.foreign == 5
    assert cached.first_corruption_s == 0.0 and cached.verdict == "corrupted"
    assert dma.corrupted_lines == 0 and dma.first_corruption_s is None
    assert dma.verdict == "incomplete"  # no arm summary: the run was cut off
    assert cached.throughput_mb_s == pytest.approx(8192 / 0.001 / 1e6)
    table = render_table(rows)
    assert table.splitlines()[0].split()[:3] == ["ARM", "CHECKED", "CORRUPT"]
    assert table.splitlines()[1].split()[:3] == ["cached", "640", "10"]


def test_truncated_file_renders(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in records())
    path.write_text(text[: len(text) // 2])  # cut mid-line
    _, rows = summarize(read_records(path))
    assert rows and rows[0].arm == "cached" and rows[0].checks >= 1


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_plot_is_written_and_not_trivial(tmp_path: Path, suffix: str) -> None:
    from pagebuf.plot import plot

    out = plot(records(), tmp_path / f"p{suffix}")
    data = out.read_bytes()
    assert len(data) > 10_000
    if suffix == ".svg":
        root = ET.fromstring(data)
        texts = "".join(root.itertext())
        assert "Corruption over time" in texts
        # Arms that coincide on the chart stay apart in the legend: totals and verdicts.
        assert "cached: 10 lines (corrupted)" in texts and "dma: 0 lines" in texts
    else:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_empty_and_unknown_formats(tmp_path: Path) -> None:
    from pagebuf.errors import PagebufError
    from pagebuf.plot import plot

    with pytest.raises(PagebufError, match="no check records"):
        plot([{"type": "header"}], tmp_path / "x.svg")
    with pytest.raises(PagebufError, match=".svg, .png"):
        plot(records(), tmp_path / "x.gif")


def test_malformed_records_are_skipped_not_fatal(tmp_path: Path) -> None:
    from pagebuf.plot import plot

    bad = [
        {"type": "check", "arm": "cached", "bad": [[1]]},
        {"type": "check", "arm": "cached", "lines_checked": "x"},
        {"type": "check", "arm": "cached", "bad": 5},
        {"type": "check", "arm": 3},
    ]
    recs = records()[:3] + bad + records()[3:]
    _, rows = summarize(recs)
    want = {r.arm: r for r in summarize(records())[1]}
    assert [(r.arm, r.checks, r.corrupted_lines) for r in rows] == [
        (a, want[a].checks, want[a].corrupted_lines) for a in ("cached", "dma")
    ]
    assert plot(recs, tmp_path / "p.svg").stat().st_size > 10_000
