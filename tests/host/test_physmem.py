"""PhysMem over a plain file standing in for /dev/mem (offset = "physical address")."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from pagebuf import cli, uapi
from pagebuf.errors import ModuleNotLoadedError
from pagebuf.physmem import PhysMem, PhysMemError

PAGE = mmap.PAGESIZE


@pytest.fixture
def backing(tmp_path: Path) -> str:
    path = tmp_path / "mem"
    path.write_bytes(os.urandom(8 * PAGE))
    return str(path)


@pytest.mark.parametrize("method", ["mmap", "rw"])
@pytest.mark.parametrize("width", [8, 16, 32, 64])
def test_every_width_round_trips(backing: str, method: str, width: int) -> None:
    phys = 3 * PAGE - 64  # not page-aligned: the window keeps the in-page offset
    with PhysMem(phys, 256, path=backing, sync=False, method=method) as m:
        for off in range(0, 256, width // 8 * 5):
            value = int.from_bytes(os.urandom(width // 8), "little")
            m.write(off, width, value)
            assert m.read(off, width) == value
    raw = Path(backing).read_bytes()
    with PhysMem(phys, 256, path=backing, sync=False, method=method) as m:
        assert m.read_bytes(0, 256) == raw[phys : phys + 256]
        assert m.read64(8) == int.from_bytes(raw[phys + 8 : phys + 16], "little")


def test_methods_agree_across_pages(backing: str) -> None:
    phys, size = PAGE - 100, 2 * PAGE + 200
    with PhysMem(phys, size, path=backing, sync=False) as a:
        a.write_bytes(0, b"\xab" * size)
        a.write32(PAGE - 4, 0xDEADBEEF)  # straddles nothing, sits at a page end
    with PhysMem(phys, size, path=backing, sync=False, method="rw") as b:
        assert b.read_bytes(0, PAGE - 4) == b"\xab" * (PAGE - 4)
        assert b.read32(PAGE - 4) == 0xDEADBEEF


def test_view_sees_writes(backing: str) -> None:
    with PhysMem(PAGE, PAGE, path=backing, sync=False) as m:
        v = m.view()
        m.write64(16, 0x0102030405060708)
        assert bytes(v[16:24]) == bytes(range(8, 0, -1))
        v.release()
    with PhysMem(PAGE, PAGE, path=backing, sync=False, method="rw") as m:
        with pytest.raises(PhysMemError, match="mmap"):
            m.view()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.read32(2), "not aligned"),
        (lambda m: m.read64(PAGE - 4), "outside"),
        (lambda m: m.write8(-1, 0), "outside"),
        (lambda m: m.write16(0, 1 << 16), "does not fit"),
        (lambda m: m.read_bytes(PAGE - 1, 2), "outside"),
    ],
)
def test_bad_accesses_refused(backing: str, call, match: str) -> None:  # noqa: ANN001
    with PhysMem(PAGE, PAGE, path=backing, sync=False) as m:
        with pytest.raises(PhysMemError, match=match) as err:
            call(m)
        assert err.value.errno == 22 and cli.exit_code_of(err.value) == 8


def test_open_errors_name_the_cause(tmp_path: Path) -> None:
    with pytest.raises(PhysMemError, match="no such device"):
        PhysMem(0, 8, path=str(tmp_path / "missing"))
    with pytest.raises(PhysMemError):
        PhysMem(0, 0, path=str(tmp_path / "missing"))


def test_a_caching_mode_is_set_by_a_pagebuf_device(backing: str) -> None:
    """The caching ioctl is the Device's: asked of a file that is not /dev/pagebuf, it
    never reaches an ioctl on a stray file (the Device refuses at open), and no fd leaks."""
    fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ModuleNotLoadedError, match="not a pagebuf device"):
        PhysMem(0, 8, path=backing, sync=False, caching=uapi.CACHING_UC)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_addresses_beyond_any_file_offset_refused(tmp_path: Path) -> None:
    for phys in (2**63 - 4, 2**64):
        with pytest.raises(PhysMemError, match="beyond any physical address") as err:
            PhysMem(phys, 8, path=str(tmp_path / "never-opened"))
        assert cli.exit_code_of(err.value) == 8


def test_close_with_a_view_still_out_does_not_raise(tmp_path: Path) -> None:
    """Ctrl-C during a verify unwinds with a numpy view of the mapping alive in the
    traceback's frames: closing must not replace the interrupt with a BufferError."""
    import numpy as np

    backing = tmp_path / "mem"
    backing.write_bytes(bytes(range(256)) * 32)
    with pytest.raises(KeyboardInterrupt):
        with PhysMem(0, 8192, path=str(backing), sync=False) as m:
            words = np.frombuffer(m.view(), dtype="<u8")
            raise KeyboardInterrupt
    assert words[0] == int.from_bytes(bytes(range(8)), "little")  # still readable
    del words  # the last view goes, and with it the mapping


@pytest.mark.parametrize("method", ["mmap", "rw"])
def test_fill_and_snapshot_cover_the_window_either_way(backing: str, method: str) -> None:
    """One call each, whichever method: the window's bytes and nothing around them."""
    phys, size = PAGE + 64, 2 * PAGE
    before = Path(backing).read_bytes()
    pattern = bytes(range(256)) * (size // 256)
    with PhysMem(phys, size, path=backing, sync=False, method=method) as m:
        m.fill(lambda target: target.__setitem__(slice(0, size), pattern))
        with m.snapshot() as data:
            assert bytes(data) == pattern and len(data) == size
    after = Path(backing).read_bytes()
    assert after[phys : phys + size] == pattern
    assert after[:phys] == before[:phys] and after[phys + size :] == before[phys + size :]
