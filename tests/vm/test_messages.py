"""The real module's refusals reach the user as one line with the real cause: a
read-only file (EBADF), another open file's buffer (EPERM), x86 PAT without the
opt-in (EPERM from mmap). The errnos themselves are tested in test_hardening.py."""

from __future__ import annotations

import errno as E
import subprocess
from collections.abc import Iterator

import pytest
from conftest import pat_on, reload

from pagebuf import Buffer, Device, PermissionDeniedError
from pagebuf.physmem import PhysMem, PhysMemPermissionError


def pagebuf(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pagebuf", *argv], capture_output=True, text=True)


def mapped(buf: Buffer, via: str) -> PhysMem:
    from pagebuf.access import open_region

    return open_region(buf.phys_addr, buf.size, via=via)[0]


def test_a_read_only_file_is_told_to_open_for_writing(dev: Device) -> None:
    buf = dev.alloc(0)
    with Device(readonly=True) as ro:
        assert ro.buffer(buf.id) == buf and ro.info().nr_buffers == 1
        for call in (lambda: ro.alloc(0), lambda: ro.free(buf.id),
                     lambda: ro.kwrite(buf.id, 0, b"x")):  # fmt: skip
            with pytest.raises(PermissionDeniedError) as err:
                call()
            assert err.value.errno == E.EBADF
            assert "needs /dev/pagebuf opened for writing" in err.value.message


def test_another_files_buffer_is_named(module: None) -> None:
    with Device() as owner, Device() as other:
        buf = owner.alloc(0, file_owned=True)
        for call in (lambda: other.kread(buf.id, 0, 8), lambda: other.free(buf.id)):
            with pytest.raises(PermissionDeniedError) as err:
                call()
            assert err.value.errno == E.EPERM
            assert f"buffer {buf.id} belongs to another open file" in err.value.message
        with pytest.raises(PhysMemPermissionError) as mm:
            mapped(buf, "mmap-wb")  # its own open of /dev/pagebuf
        assert "belongs to another open file" in mm.value.message
        proc = pagebuf("mem", "read", hex(buf.phys_addr), "--via", "mmap-wb")
        assert proc.returncode == 5 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert "belongs to another open file" in proc.stderr and "CAP_SYS_RAWIO" not in proc.stderr


@pytest.fixture
def pat_without_opt_in(module: None) -> Iterator[None]:
    if not pat_on():
        pytest.skip("needs x86 booted with PAT (Debian's kernel, KERNEL=custom-pat)")
    reload("x86_pat_alias=0")
    yield
    reload()


def test_pat_refusal_says_how_to_opt_in(pat_without_opt_in: None) -> None:
    with Device() as dev:
        assert dev.info().uncached_refused
        buf = dev.alloc(0)
        with pytest.raises(PhysMemPermissionError) as err:
            mapped(buf, "mmap-uc")
        assert err.value.errno == E.EPERM
        assert "x86 PAT: load pagebuf with x86_pat_alias=1" in err.value.message
        with mapped(buf, "mmap-wb") as wb:  # write-back is PAT's own type: allowed
            wb.write32(0, 0xC0FFEE)
        assert dev.kread(buf.id, 0, 4) == (0xC0FFEE).to_bytes(4, "little")
    proc = pagebuf("mem", "read", hex(buf.phys_addr), "--via", "mmap-uc")
    assert proc.returncode == 5 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "x86_pat_alias=1" in proc.stderr
    status = pagebuf("status").stdout
    assert "note: x86 PAT is on and pagebuf was loaded without x86_pat_alias=1" in status
    doctor = pagebuf("doctor")
    assert "uncached maps: refused (x86 PAT)" in doctor.stdout, doctor.stderr
