"""`pagebuf mem read/write` through every access path, against the kernel's view, across
page boundaries, and against programs nobody here wrote (busybox devmem, memtester)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pagebuf import Buffer, Device, access
from pagebuf.physmem import PhysMem, PhysMemError

KERNEL = os.environ.get("PAGEBUF_KERNEL", "")
STRICT = KERNEL == "debian"  # Debian's kernel: CONFIG_STRICT_DEVMEM=y
PAGE = os.sysconf("SC_PAGE_SIZE")
FMT = {8: "<B", 16: "<H", 32: "<I", 64: "<Q"}
PATHS = [  # as the CLI spells them
    ["--via", "devmem"],
    ["--via", "devmem", "--cached"],
    ["--via", "devmem", "--method", "rw"],
    ["--via", "mmap-uc"],
    ["--via", "mmap-wc"],
    ["--via", "mmap-wb"],
]


def pagebuf(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pagebuf", *argv], capture_output=True, text=True)


def path_id(path: list[str]) -> str:
    return "-".join(a.lstrip("-") for a in path[1:])


@pytest.fixture
def buf(dev: Device) -> Buffer:
    b = dev.alloc(1)
    dev.kwrite(b.id, 0, os.urandom(b.size))
    return b


def open_path(buf: Buffer, path: list[str]) -> PhysMem:
    """The library call behind `pagebuf mem ... <path>`."""
    via = path[1]
    method = path[path.index("--method") + 1] if "--method" in path else "auto"
    mem, taken = access.open_region(buf.phys_addr, buf.size, via=via,
                                    cached="--cached" in path, method=method)  # fmt: skip
    assert taken == ("devmem-rw" if method == "rw" else via), taken  # as asked: no fallback
    return mem


@pytest.mark.parametrize("path", PATHS, ids=path_id)
def test_every_width_reads_back(dev: Device, buf: Buffer, path: list[str]) -> None:
    """In-process: each CLI call costs seconds in an emulated guest."""
    if STRICT and path[1] == "devmem":
        pytest.skip("CONFIG_STRICT_DEVMEM=y: covered by test_devmem_refused_names_strict_devmem")
    with open_path(buf, path) as mem:
        for width in (8, 16, 32, 64):
            nbytes = width // 8
            for offset in (0, PAGE - nbytes, PAGE, buf.size - nbytes):
                value = int.from_bytes(os.urandom(nbytes), "little")
                mem.write(offset, width, value)
                assert mem.read(offset, width) == value
                # The kernel's cached alias sees the same bytes, little-endian.
                assert dev.kread(buf.id, offset, nbytes) == struct.pack(FMT[width], value)
        # Page-crossing bulk access agrees with the kernel too.
        assert mem.read_bytes(PAGE - 16, 32) == dev.kread(buf.id, PAGE - 16, 32)


CLI_PATHS = [["--via", "devmem"], ["--via", "devmem", "--method", "rw"], ["--via", "mmap-wc"]]


@pytest.mark.parametrize("path", CLI_PATHS, ids=path_id)
def test_cli_write_then_read(dev: Device, buf: Buffer, path: list[str]) -> None:
    if STRICT and path[1] == "devmem":
        pytest.skip("CONFIG_STRICT_DEVMEM=y")
    addr = hex(buf.phys_addr + PAGE - 8)
    w = pagebuf("mem", "write", addr, "0xdeadbeefcafe0042", "--width", "64", *path)
    assert w.returncode == 0, w.stderr
    r = pagebuf("mem", "read", addr, "--width", "32", "--count", "4", "--json", *path)
    assert r.returncode == 0, r.stderr
    want = list(struct.unpack("<4I", dev.kread(buf.id, PAGE - 8, 16)))
    assert json.loads(r.stdout)["values"] == want  # across the page boundary
    assert want[:2] == [0xCAFE0042, 0xDEADBEEF]
    r = pagebuf("mem", "read", addr, "--width", "16", *path)
    assert r.stdout == "0x0042\n"  # busybox devmem's format: zero-padded, upper case


@pytest.mark.skipif(not STRICT, reason="only Debian's kernel has CONFIG_STRICT_DEVMEM=y")
def test_devmem_refused_names_strict_devmem(dev: Device, buf: Buffer) -> None:
    r = pagebuf("mem", "read", hex(buf.phys_addr), "--via", "devmem")
    assert r.returncode == 5, r.stderr
    assert "CONFIG_STRICT_DEVMEM" in r.stderr and "/dev/pagebuf" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    # The default, auto, takes /dev/pagebuf instead, says so, and records it.
    dev.kwrite(buf.id, 0, bytes.fromhex("78563412"))
    r = pagebuf("mem", "read", hex(buf.phys_addr), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"phys_addr": buf.phys_addr, "width": 32,
                                    "values": [0x12345678], "via": "mmap-uc"}  # fmt: skip
    assert r.stderr == f"pagebuf: {access.AUTO_NOTE}\n"
    for path in (["--via", "devmem", "--method", "rw"], ["--via", "devmem", "--cached"]):
        with pytest.raises(PhysMemError, match="CONFIG_STRICT_DEVMEM") as err:
            open_path(buf, path).read(0, 32)
        assert isinstance(err.value, PermissionError) and err.value.errno == errno.EPERM


def test_refused_outside_buffers(dev: Device, buf: Buffer) -> None:
    before = dev.kchecksum(buf.id)
    r = pagebuf("mem", "write", hex(buf.phys_addr + buf.size - 4), "1", "--width", "64",
                "--via", "mmap-wb")  # fmt: skip
    assert r.returncode == 8, r.stderr
    assert "outside every pagebuf buffer" in r.stderr and "--force" in r.stderr
    assert dev.kchecksum(buf.id) == before  # the straddling write touched nothing
    for phys, length in ((buf.phys_addr + buf.size, 4), (buf.phys_addr - 8, 8)):
        with pytest.raises(access.OutsideBuffersError):
            access.owning_buffer(dev, phys, length)
    assert access.owning_buffer(dev, buf.phys_addr + buf.size - 8, 8) == buf


def kernel_code() -> int:
    """The physical address of the kernel's code: RAM outside every buffer that holds
    the same bytes all along (its first bytes are never patched at run time)."""
    for line in Path("/proc/iomem").read_text().splitlines():
        span, _, name = line.strip().partition(" : ")
        if name == "Kernel code":
            return int(span.split("-")[0], 16)
    raise AssertionError("no 'Kernel code' in /proc/iomem")


@pytest.mark.skipif(STRICT, reason="CONFIG_STRICT_DEVMEM=y: /dev/mem refuses RAM")
def test_force_reads_outside_buffers(buf: Buffer) -> None:
    addr = kernel_code()
    assert not buf.phys_addr <= addr < buf.phys_addr + buf.size
    refused = pagebuf("mem", "read", hex(addr))
    assert refused.returncode == 8 and "outside every pagebuf buffer" in refused.stderr
    r = pagebuf("mem", "read", hex(addr), "--force")
    assert r.returncode == 0, r.stderr
    fd = os.open("/dev/mem", os.O_RDONLY)  # read(): through the kernel's own mapping
    try:
        (want,) = struct.unpack("<I", os.pread(fd, 4, addr))
    finally:
        os.close(fd)
    assert r.stdout == f"0x{want:08X}\n", (r.stdout, hex(want))


def test_value_must_fit_width(buf: Buffer) -> None:
    r = pagebuf("mem", "write", hex(buf.phys_addr), "0x100", "--width", "8", "--via", "mmap-wb")
    assert r.returncode == 8 and "does not fit" in r.stderr


def test_unaligned_access_refused(dev: Device, buf: Buffer) -> None:
    """One load or store of exactly the width, aligned: anything else is refused before
    it touches memory (exit 8, invalid request), and nothing is printed as a value."""
    addr = buf.phys_addr + 2
    r = pagebuf("mem", "read", hex(addr), "--width", "32", "--via", "mmap-wb")
    assert (r.returncode, r.stdout) == (8, ""), r.stderr
    assert r.stderr == f"pagebuf: 0x{addr:x} is not aligned for a 32-bit access\n"
    before = dev.kread(buf.id, 0, 16)
    w = pagebuf("mem", "write", hex(addr), "0xffffffff", "--width", "32", "--via", "mmap-wb")
    assert (w.returncode, w.stdout) == (8, "")
    assert w.stderr == f"pagebuf: 0x{addr:x} is not aligned for a 32-bit access\n"
    assert dev.kread(buf.id, 0, 16) == before


@pytest.mark.skipif(STRICT, reason="busybox devmem needs RAM through /dev/mem")
def test_busybox_devmem_interop(dev: Device, buf: Buffer) -> None:
    busybox = shutil.which("busybox")
    assert busybox, "busybox is installed by make setup"
    addr = hex(buf.phys_addr + 0x40)
    assert pagebuf("mem", "write", addr, "0xC0FFEE42").returncode == 0
    bb = subprocess.run([busybox, "devmem", addr, "32"], capture_output=True, text=True)
    assert bb.stdout.strip() == "0xC0FFEE42"
    subprocess.run([busybox, "devmem", addr, "64", "0x1122334455667788"], check=True)
    assert pagebuf("mem", "read", addr, "--width", "64").stdout.strip() == "0x1122334455667788"
    assert dev.kread(buf.id, 0x40, 8) == bytes.fromhex("8877665544332211")
    # busybox's own order, ADDR WIDTH [VALUE], with an address from `alloc -q`, all shell.
    script = ('a=$(pagebuf alloc --order 0 -q) && echo "$a" && '
              'pagebuf mem write "$a" 16 0xBEEF && busybox devmem "$a" 16 && '
              'pagebuf mem read "$a" 16')  # fmt: skip
    sh = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert sh.returncode == 0, sh.stderr
    phys, *read = sh.stdout.split()
    (new,) = [b for b in dev.buffers() if b.phys_addr == int(phys, 16)]
    dev.free(new.id)
    assert read == ["0xBEEF", "0xBEEF"]


def test_memtester_on_dev_pagebuf(dev: Device) -> None:
    """memtester maps physical memory from a device with -p/-d: /dev/pagebuf works as-is."""
    memtester = shutil.which("memtester")
    assert memtester, "memtester is installed by make setup"
    big = dev.alloc(5)  # 128 KiB
    proc = subprocess.run(
        [memtester, "-p", hex(big.phys_addr), "-d", "/dev/pagebuf", "64K", "1"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Done." in proc.stdout
