"""CPU offlining bookkeeping against a fake sysfs tree (the real one is used in the VM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pagebuf import cpus
from pagebuf.errors import PagebufError


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    root = tmp_path / "cpu"
    root.mkdir()
    (root / "online").write_text("0-3\n")
    for c in range(4):
        (root / f"cpu{c}").mkdir()
        if c:  # cpu0 cannot be taken offline, as on most x86 machines
            (root / f"cpu{c}" / "online").write_text("1\n")
    return root


def states(sysfs: Path) -> list[str]:
    return [(sysfs / f"cpu{c}" / "online").read_text().strip() for c in (1, 2, 3)]


@pytest.mark.parametrize(
    ("text", "want"), [("0-3", [0, 1, 2, 3]), ("0,2-3\n", [0, 2, 3]), ("5", [5]), ("", [])]
)
def test_parse_cpulist(text: str, want: list[int]) -> None:
    assert cpus.parse_cpulist(text) == want


def test_offline_then_restore(sysfs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert cpus.offline_others(0, sysfs, state) == [1, 2, 3]
    assert states(sysfs) == ["0", "0", "0"]
    assert json.loads(state.read_text())["offlined"] == [1, 2, 3]
    assert cpus.restore(sysfs, state) == [1, 2, 3]
    assert states(sysfs) == ["1", "1", "1"]
    assert not state.exists()
    assert cpus.restore(sysfs, state) == []  # nothing recorded: nothing to do


def test_a_leftover_state_file_blocks_a_new_run(sysfs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    cpus.offline_others(0, sysfs, state)  # then the tool "dies"
    with pytest.raises(PagebufError, match="pagebuf cpus restore"):
        cpus.offline_others(0, sysfs, state)
    cpus.restore(sysfs, state)


def test_failure_midway_restores_what_went(sysfs: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    (sysfs / "cpu3" / "online").unlink()
    (sysfs / "cpu3" / "online").mkdir()  # writing it fails (EISDIR)
    (sysfs / "online").write_text("0-3")
    with pytest.raises(PagebufError, match="cpu3"):
        cpus.offline_others(0, sysfs, state)
    assert (sysfs / "cpu1" / "online").read_text() == "1"
    assert (sysfs / "cpu2" / "online").read_text() == "1"


@pytest.mark.parametrize("text", ["not json", '{"pid": 1}', '{"offlined": "1,2"}', "[1]"])
def test_a_damaged_state_file_is_a_clear_error(sysfs: Path, tmp_path: Path, text: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(text)
    with pytest.raises(PagebufError, match="damaged") as err:
        cpus.restore(sysfs, state)
    assert "online" in err.value.message  # says how to finish by hand
    assert state.exists()  # kept for the person to look at


def test_an_unwritable_state_dir_is_a_clear_error(sysfs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PagebufError, match="PAGEBUF_STATE_DIR"):
        cpus.offline_others(0, sysfs, blocker / "sub" / "state.json")
    assert states(sysfs) == ["1", "1", "1"]  # nothing went offline unrecorded
