"""JSON Lines results survive a crash mid-write."""

from __future__ import annotations

import json
import os
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


def test_each_record_is_on_disk_before_write_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flushed is not enough: a panic loses what the page cache holds. Each write syncs
    this file, after its record reached the file, before it returns."""
    path = tmp_path / "run.jsonl"
    synced: list[tuple[int, str]] = []  # (inode, the file's text) at each sync
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, path.read_text()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fsync)  # as good, for a file that only grows
    w = ResultWriter(path)
    text = ""
    for rec in ({"type": "header"}, {"type": "check", "bad": 0}):
        before = len(synced)
        w.write(rec)
        text += json.dumps(rec, separators=(",", ":")) + "\n"
        assert path.read_text() == text  # visible without close()
        assert (path.stat().st_ino, text) in synced[before:], synced
    w.close()
