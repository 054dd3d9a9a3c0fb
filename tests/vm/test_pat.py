"""x86 with PAT on and CONFIG_STRICT_DEVMEM off: mmap of RAM through /dev/mem is refused
(EINVAL, "to avoid cache aliasing"), read()/write() still work, and pagebuf explains it
and takes the other paths. Runs on the test kernel booted with PAT (KERNEL=custom-pat,
part of `make test`); elsewhere these facts do not hold and the file skips.
"""

from __future__ import annotations

import errno as E
import json
import mmap
import os
import subprocess
from pathlib import Path

import pytest

from pagebuf import Buffer, Device, access
from pagebuf.experiment import open_user_path
from pagebuf.physmem import PhysMem, PhysMemError
from pagebuf.results import read_records

pytestmark = pytest.mark.skipif(
    os.environ.get("PAGEBUF_KERNEL") != "custom-pat",
    reason="needs the test kernel booted with PAT: make test-vm KERNEL=custom-pat",
)


def pagebuf(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pagebuf", *argv], capture_output=True, text=True)


@pytest.fixture
def buf(dev: Device) -> Buffer:
    b = dev.alloc(0)
    dev.kwrite(b.id, 0, os.urandom(b.size))
    return b


def test_this_guest_is_the_case_under_test() -> None:
    assert "nopat" not in Path("/proc/cmdline").read_text().split()
    assert "pat" in Path("/proc/cpuinfo").read_text().split()


def test_mmap_of_ram_refused_read_works(dev: Device, buf: Buffer) -> None:
    for flags in (os.O_RDWR | os.O_SYNC, os.O_RDWR):
        fd = os.open("/dev/mem", flags)
        try:
            with pytest.raises(OSError) as err:
                mmap.mmap(fd, mmap.PAGESIZE, offset=buf.phys_addr)
            assert err.value.errno == E.EINVAL
            assert os.pread(fd, 64, buf.phys_addr) == dev.kread(buf.id, 0, 64)
        finally:
            os.close(fd)


def test_pagebuf_explains_and_falls_back(dev: Device, buf: Buffer) -> None:
    with pytest.raises(PhysMemError, match="PAT") as err:
        PhysMem(buf.phys_addr, buf.size, path="/dev/mem", method="mmap")
    assert err.value.errno == E.EINVAL and "mmap-uc" in err.value.message
    addr = hex(buf.phys_addr + 8)
    w = pagebuf("mem", "write", addr, "0x600DF00D")  # --method auto
    assert w.returncode == 0, w.stderr
    assert "read()/write()" in w.stderr and "cached mapping" in w.stderr
    assert dev.kread(buf.id, 8, 4) == (0x600DF00D).to_bytes(4, "little")
    r = pagebuf("mem", "read", addr, "--via", "devmem", "--method", "mmap")
    assert r.returncode == 8 and "PAT" in r.stderr and len(r.stderr.splitlines()) == 1
    # The default, auto, asked for a mapping: /dev/pagebuf's uncached one, and says so.
    r = pagebuf("mem", "read", addr, "--method", "mmap", "--json")
    assert r.returncode == 0 and r.stderr == f"pagebuf: {access.AUTO_NOTE}\n", r.stderr
    assert json.loads(r.stdout)["values"] == [0x600DF00D]
    assert json.loads(r.stdout)["via"] == "mmap-uc"
    # An experiment's uncached user path: /dev/mem cannot map it, /dev/pagebuf does.
    mem, via = open_user_path(buf, "auto", None)
    with mem:
        assert via == "mmap-uc" and mem.read_bytes(0, 64) == dev.kread(buf.id, 0, 64)


def test_an_experiment_never_falls_back_to_the_cached_devmem_path(
    module: None, tmp_path: Path
) -> None:
    """read()/write() of /dev/mem copy through the kernel's cached map: a run there would
    compare the kernel's view with itself. Asked for /dev/mem, it refuses instead."""
    out = tmp_path / "run.jsonl"
    args = ("--no-controls", "--buffers", "1", "--order", "0", "--duration", "0")
    proc = pagebuf("run", "--via", "devmem", *args, "--output", str(out))
    assert proc.returncode == 8 and len(proc.stderr.strip().splitlines()) == 2, proc.stderr
    assert "x86 PAT refuses to mmap RAM" in proc.stderr and "--via devmem-rw" in proc.stderr
    assert not [r for r in read_records(out) if r["type"] == "check"]
    proc = pagebuf("run", "--via", "devmem-rw", *args, "--output", str(tmp_path / "rw.jsonl"))
    assert proc.returncode == 0, proc.stderr
    access = [r for r in read_records(tmp_path / "rw.jsonl") if r["type"] == "access"]
    assert [(a["via"], a["method"], a["caching"][:6]) for a in access] == [
        ("devmem-rw", "rw", "cached")]  # fmt: skip


def test_doctor_says_which_case_this_is(module: None) -> None:
    proc = pagebuf("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    found = {f["name"]: f for f in json.loads(proc.stdout)["findings"]}
    assert found["x86 PAT"]["value"] == "on" and "refused" in found["x86 PAT"]["detail"]
    assert found["CONFIG_STRICT_DEVMEM"]["value"] == "n"
    assert found["/dev/mem mmap O_SYNC"]["value"] == "refused (EINVAL)"
    assert "PAT" in found["/dev/mem mmap O_SYNC"]["detail"]
    assert found["/dev/mem read()"]["value"] == "works"
