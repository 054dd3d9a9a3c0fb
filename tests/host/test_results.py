"""JSON Lines results survive a crash mid-write."""

from __future__ import annotations

from pathlib import Path

import pytest

from pagebuf.errors import PagebufError
from pagebuf.results import ResultWriter, read_records


def test_round_trip_and_truncated_tail(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with ResultWriter(path) as w:
        w.write({"type": "header", "n": 1})
        w.write({"type": "check", "bad": 0})
    with path.open("a") as f:
        f.write('{"type": "check", "ba')  # what a kill -9 mid-line leaves
    assert [r["type"] for r in read_records(path)] == ["header", "check"]


def test_writer_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text("precious\n")
    with pytest.raises(PagebufError, match="never overwrites") as err:
        ResultWriter(path)
    assert err.value.errno == 17  # EEXIST
    assert path.read_text() == "precious\n"


def test_each_record_is_on_disk_before_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    w = ResultWriter(path)
    w.write({"type": "header"})
    assert path.read_text() == '{"type":"header"}\n'  # visible without close()
    w.close()
