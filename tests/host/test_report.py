"""report and plot from JSON Lines, including a file cut off mid-run."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pagebuf.report import render_table, summarize
from pagebuf.results import read_records

# `make test` sets PAGEBUF_REQUIRE_KERNELS=1 (tests/host/test_build.py): there what
# `make setup` installs is required, and its absence a failure, not a skip.
REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"

try:
    import matplotlib  # noqa: F401
except ImportError:
    if REQUIRE:  # make test: `make setup` installs it
        raise
    pytest.skip("plots need matplotlib (pagebuf[plot])", allow_module_level=True)


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
    assert table.splitlines()[0].split()[:4] == ["ARM", "VIA", "CHECKED", "CORRUPT"]
    assert table.splitlines()[1].split()[:4] == ["cached", "-", "640", "10"]


def test_a_cut_list_makes_the_row_a_lower_bound_with_the_exact_count() -> None:
    """A check that listed 2 of its 5000 bad lines: the row says >=5000, not 2."""
    recs = [
        {"type": "access", "arm": "cached", "via": "mmap-uc"},
        {"type": "check", "arm": "cached", "t": 0.0, "buffer": 1, "lines_checked": 8192,
         "bad_lines": 5000, "bad": [[0, "stale"], [64, "stale"]], "bad_truncated": True,
         "bytes": 1 << 19, "seconds": 0.01},
    ]  # fmt: skip
    (row,) = summarize(recs)[1]
    assert (row.corrupted_lines, row.exact, row.via, row.stale) == (5000, False, "mmap-uc", 2)
    assert row.first_corruption_s == 0.0 and row.series == [(0.0, 2)]
    assert render_table([row]).splitlines()[1].split()[:4] == [
        "cached",
        "mmap-uc",
        "8192",
        ">=5000",
    ]


def test_truncated_file_renders(tmp_path: Path) -> None:
    """Killed mid-write: the header, five whole checks (t=0 and 1 of both arms, t=2 of
    cached) and half of the sixth. Every whole record counts, the cut one does not, and
    no arm looks finished, let alone clean."""
    path = tmp_path / "run.jsonl"
    lines = [json.dumps(r) + "\n" for r in records()]
    assert [json.loads(line)["t"] for line in lines[1:7]] == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    path.write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])  # cut mid-line
    _, rows = summarize(read_records(path))
    got = [(r.arm, r.checks, r.lines_checked, r.corrupted_lines, r.stale, r.foreign,
            r.first_corruption_s, r.verdict) for r in rows]  # fmt: skip
    assert got == [
        ("cached", 3, 384, 6, 3, 3, 0.0, "incomplete"),
        ("dma", 2, 256, 0, 0, 0, None, "incomplete"),
    ]


def drawn(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[object]]:
    """What the plot hands matplotlib: the heat map's matrix and each arm's step line."""
    from matplotlib.axes import Axes

    seen: dict[str, list[object]] = {"heat": [], "steps": [], "colours": [], "ylim": []}
    imshow, step, set_ylim = Axes.imshow, Axes.step, Axes.set_ylim

    def record_imshow(self: Axes, grid: object, *args: object, **kw: object) -> object:
        seen["heat"].append([[int(v) for v in row] for row in grid])  # type: ignore[attr-defined]
        image = imshow(self, grid, *args, **kw)
        # The colour each cell is drawn in, as matplotlib maps it (RGBA, 0..1).
        seen["colours"].append(image.to_rgba(image.get_array()).tolist())
        return image

    def record_ylim(self: Axes, *args: object, **kw: object) -> object:
        seen["ylim"].append(args)
        return set_ylim(self, *args, **kw)

    def record_step(self: Axes, t: object, n: object, *args: object, **kw: object) -> object:
        arm = str(kw.get("label")).split(":")[0]
        seen["steps"].append((arm, list(t), list(n)))  # type: ignore[call-overload]
        return step(self, t, n, *args, **kw)

    monkeypatch.setattr(Axes, "imshow", record_imshow)
    monkeypatch.setattr(Axes, "step", record_step)
    monkeypatch.setattr(Axes, "set_ylim", record_ylim)
    return seen


WHITE = [1.0, 1.0, 1.0, 1.0]


def clean_run() -> list[dict[str, object]]:
    """Two arms that never found a bad line, three checks each, as a QEMU run reads."""
    recs: list[dict[str, object]] = [{
        "type": "header", "kernel": "6.12.117", "machine": "aarch64",
        "started": "2026-11-26T10:00:00+0000", "params": {"arms": ["cached", "dma"]},
        "doctor": {"summary": "emulated (QEMU): no caches, only the mechanics and the "
                              "detector are tested"},
    }]  # fmt: skip
    for arm in ("cached", "dma"):
        recs.append({"type": "access", "arm": arm, "via": "mmap-uc"})
        recs += [{"type": "check", "arm": arm, "t": float(t), "buffer": 1, "bytes": 8192,
                  "lines_checked": 128, "bad_lines": 0, "bad": [], "seconds": 0.001}
                 for t in range(3)]  # fmt: skip
        recs.append({"type": "arm_summary", "arm": arm, "verdict": "clean"})
    return recs


def test_a_clean_run_looks_like_nothing_happened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curves lie on the bottom of an axis that starts at 0, every page of the heat
    map is drawn white, and the two equal curves are told apart by style and marker."""
    from pagebuf.plot import describe, plot

    seen = drawn(monkeypatch)
    plot(clean_run(), tmp_path / "clean.svg")
    assert seen["ylim"][0] == (0.0, 1.0)  # the first: the curves; the rest are the map's
    assert seen["heat"] == [[[0, 0], [0, 0]]]
    assert seen["colours"] == [[[WHITE, WHITE], [WHITE, WHITE]]]
    fig = describe(*summarize(clean_run()))
    assert [(c.t, c.n) for c in fig.curves] == [([0.0, 1.0, 2.0], [0, 0, 0])] * 2
    assert len({(c.linestyle, c.marker) for c in fig.curves}) == 2
    assert fig.title == ("kernel 6.12.117 (aarch64)  ·  2026-11-26T10:00:00+0000  ·  via mmap-uc"
                         "\nemulated (QEMU): no caches, only the mechanics and the detector "
                         "are tested")  # fmt: skip
    assert fig.title.split("\n")[0] in "".join(
        ET.fromstring((tmp_path / "clean.svg").read_bytes()).itertext()
    )


def test_only_corrupted_pages_are_coloured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pagebuf.plot import plot

    seen = drawn(monkeypatch)
    plot(records(), tmp_path / "p.svg")
    (heat,), (colours,) = seen["heat"], seen["colours"]
    for row, row_colours in zip(heat, colours):  # type: ignore[call-overload]
        for lines, rgba in zip(row, row_colours):
            assert (rgba == WHITE) == (lines == 0), (lines, rgba)
    assert seen["ylim"][0][0] == 0.0 and seen["ylim"][0][1] >= 10  # type: ignore[index]


@pytest.mark.parametrize("suffix", [".svg", ".png"])
def test_plot_is_written_and_not_trivial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    from pagebuf.plot import plot

    seen = drawn(monkeypatch)
    out = plot(records(), tmp_path / f"p{suffix}")
    data = out.read_bytes()
    assert len(data) > 10_000
    # cached: lines 64*t of page 0 and 4096+64*t of page 1, t = 0..4; dma: nothing.
    assert seen["heat"] == [[[5, 5], [0, 0]]]
    assert seen["steps"] == [
        ("cached", [0.0, 1.0, 2.0, 3.0, 4.0], [2, 4, 6, 8, 10]),
        ("dma", [0.0, 1.0, 2.0, 3.0, 4.0], [0, 0, 0, 0, 0]),
    ]
    if suffix == ".svg":
        root = ET.fromstring(data)
        texts = "".join(root.itertext())
        assert "Corruption over time" in texts
        # Arms that coincide on the chart stay apart in the legend: totals and verdicts.
        assert "cached: 10 lines (corrupted)" in texts and "dma: 0 lines" in texts
    else:
        assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_heat_map_rows_span_each_arms_own_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two buffers of different sizes in one arm, one in the other: each row is its own
    arm's pages in the order it checked them, zero-padded to the widest; a line found
    again in a later check is counted once."""
    from pagebuf.plot import plot

    def check(arm: str, t: float, buf: int, pages: int, bad: list[int]) -> dict[str, object]:
        return {"type": "check", "arm": arm, "t": t, "buffer": buf, "bytes": 4096 * pages,
                "lines_checked": 64 * pages, "bad_lines": len(bad),
                "bad": [[off, "stale"] for off in bad], "seconds": 0.001}  # fmt: skip

    recs = [
        {"type": "header", "params": {}},
        check("cached", 0.0, 3, 2, [4096 + 128]),  # buffer 3: page 1
        check("cached", 0.0, 4, 1, [0, 64, 192]),  # buffer 4: page 0, the row's third
        check("dma", 0.0, 5, 1, [128]),
        check("cached", 1.0, 3, 2, [4096 + 128, 0]),  # the first line again, and page 0
        check("cached", 1.0, 4, 1, []),
        check("dma", 1.0, 5, 1, [128]),
    ]
    seen = drawn(monkeypatch)
    plot(recs, tmp_path / "h.svg")
    assert seen["heat"] == [[[1, 1, 3], [1, 0, 0]]]
    assert seen["steps"] == [("cached", [0.0, 0.0, 1.0, 1.0], [1, 4, 5, 5]),
                             ("dma", [0.0, 1.0], [1, 1])]  # fmt: skip


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


def test_a_run_cut_off_after_corruption_exits_1_not_0(tmp_path: Path) -> None:
    """No arm summary (kill -9 mid-arm), but the checks found stale lines: corrupted. An
    injecting arm cut off the same way proves nothing either way: no verdict from it."""
    from pagebuf import cli

    def write(name: str, params: dict[str, object]) -> str:
        recs = [{"type": "header", "params": params},
                {"type": "check", "arm": "cached", "t": 0.0, "buffer": 1, "bytes": 4096,
                 "lines_checked": 64, "bad_lines": 3, "seconds": 0.001,
                 "bad": [[0, "stale"], [64, "stale"], [128, "stale"]]}]  # fmt: skip
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in recs))
        return str(path)

    assert cli.main(["report", write("cut.jsonl", {"arms": ["cached"]})]) == 1
    injected = write("inj.jsonl", {"arms": ["cached"], "inject_into": "cached"})
    assert cli.main(["report", injected]) == 0
