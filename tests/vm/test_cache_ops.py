"""Cache maintenance of the kernel's alias, on every architecture: KFLUSH cleans and
invalidates, KFLUSH with PAGEBUF_KFLUSH_CLEAN only cleans, the feature bits say exactly
what works, `cache_ops=` picks the mechanism, INJECT is all or nothing, and the uncached
mappings are the ones /dev/mem gives (arm64: Normal non-cacheable, not Device memory).

QEMU models no caches, so these tests prove the mechanics (the calls run, keep the data,
are refused where they cannot work); the corruption they exist for needs real hardware.
"""

from __future__ import annotations

import errno as E
import json
import mmap
import os
import platform
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import insmod, module_loaded, reload, rmmod
from test_errors import raw

from pagebuf import Device, PagebufError, uapi

ARM64 = platform.machine() == "aarch64"
CACHE_OPS = "/sys/class/misc/pagebuf/cache_ops"


def cache_ops() -> str:
    with open(CACHE_OPS) as f:
        return f.read().strip()


@pytest.fixture
def reloads(module: None) -> Iterator[None]:
    """A test that reloads the module with other parameters; defaults afterwards."""
    yield
    reload()


def test_every_kernel_here_can_clean_and_flush(dev: Device) -> None:
    info = dev.info()
    assert info.can_flush and info.can_clean, hex(info.features)
    assert not info.can_inject  # not loaded with inject=1
    # x86_64 and arm64 with ARM64_PMEM have the pmem cache API; arm64 falls back to the
    # DMA API on the module's non-coherent device where a kernel lacks it.
    assert cache_ops() in (("pmem", "dma") if ARM64 else ("pmem",))


def test_kflush_and_clean_keep_the_data(dev: Device) -> None:
    buf = dev.alloc(2)
    data = os.urandom(buf.size)
    dev.kwrite(buf.id, 0, data)
    dev.kflush(buf.id)
    dev.kflush(buf.id, 64, 64)
    dev.kflush(buf.id, clean_only=True)
    dev.kflush(buf.id, 4000, 200, clean_only=True)  # across a page boundary
    assert dev.kread(buf.id, 0, buf.size) == data


def test_kflush_flags(dev: Device) -> None:
    buf = dev.alloc(0)
    req = uapi.PagebufKaccess
    assert raw(dev, uapi.IOC_KFLUSH, req(id=buf.id, length=64, flags=uapi.KFLUSH_CLEAN)) == 0
    assert raw(dev, uapi.IOC_KFLUSH, req(id=buf.id, length=64, flags=0x2)) == E.EINVAL
    assert raw(dev, uapi.IOC_KFLUSH, req(id=buf.id, length=64, flags=2**31)) == E.EINVAL
    # The flag is KFLUSH's alone.
    out = bytearray(64)
    import ctypes

    p = ctypes.addressof((ctypes.c_char * 64).from_buffer(out))
    for cmd in (uapi.IOC_KREAD, uapi.IOC_KWRITE):
        assert raw(dev, cmd, req(id=buf.id, length=64, data=p, flags=uapi.KFLUSH_CLEAN)) == (
            E.EINVAL
        )
    assert raw(dev, uapi.IOC_KCHECKSUM, req(id=buf.id, length=64, flags=1)) == E.EINVAL


def test_dma_cache_ops_where_the_device_is_not_coherent(reloads: None) -> None:
    """arm64 gives a device no firmware describes non-coherent DMA: the DMA API's syncs
    are real cache maintenance there, and pagebuf can clean through them. On x86 DMA is
    coherent, so asking for it is refused at load time with a reason."""
    rmmod()
    proc = insmod("cache_ops=dma", "inject=1")
    if not ARM64:
        assert proc.returncode != 0
        log = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
        assert "cache_ops=dma: DMA here is coherent or bounced" in log
        return
    assert proc.returncode == 0, proc.stderr
    assert cache_ops() == "dma"
    with Device() as dev:
        info = dev.info()
        assert info.can_flush and info.can_clean and info.can_inject
        assert not info.dma_coherent
        buf = dev.alloc(3)
        assert dev.kchecksum(buf.id) == zlib.crc32(bytes(buf.size))  # cleaned zeroes
        data = os.urandom(buf.size)
        dev.kwrite(buf.id, 0, data)
        dev.kflush(buf.id)
        dev.kflush(buf.id, 100, 1000, clean_only=True)
        dev.inject(buf.id, 4096, b"\xee" * 64)
        assert dev.kread(buf.id, 0, buf.size) == data[:4096] + b"\xee" * 64 + data[4160:]


@pytest.mark.parametrize("value", ["junk", "", "PMEM"])
def test_unknown_cache_ops_refused(reloads: None, value: str) -> None:
    rmmod()
    proc = insmod(f"cache_ops={value}")
    assert proc.returncode != 0
    assert not module_loaded()


def test_without_cache_ops_inject_writes_nothing(reloads: None) -> None:
    reload("cache_ops=none", "inject=1")
    assert cache_ops() == "none"
    with Device() as dev:
        info = dev.info()
        assert not (info.can_flush or info.can_clean or info.can_inject), hex(info.features)
        buf = dev.alloc(0)
        for call in (
            lambda: dev.inject(buf.id, 0, b"\xee" * 64),
            lambda: dev.kflush(buf.id),
            lambda: dev.kflush(buf.id, clean_only=True),
        ):
            with pytest.raises(PagebufError) as err:
                call()
            assert err.value.errno == E.EOPNOTSUPP
        assert dev.kchecksum(buf.id) == zlib.crc32(bytes(buf.size))  # all or nothing


def test_flush_and_positive_arms_run(reloads: None, tmp_path: Path) -> None:
    """With cache maintenance every arm runs, none is skipped for want of a clean: the
    flush arm, the positive control (which QEMU's missing caches keep from firing) and
    the injection control."""
    reload("inject=1")
    out = tmp_path / "flush.jsonl"
    proc = subprocess.run(["pagebuf", "run", "--mode", "flush", "--duration", "0.5",
                           "--interval", "0.5", "--buffers", "1", "--order", "1",
                           "--via", "mmap-uc", "--output", str(out), "--json"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    verdicts = {r["arm"]: r["verdict"] for r in json.loads(proc.stdout)}
    assert verdicts == {"flush": "clean", "positive": "did-not-fire",
                        "inject": "injected-detected"}, verdicts  # fmt: skip


# --- The uncached mappings: what /dev/mem gives RAM, and Device memory by name ---

PROBE = r"""
import ctypes, mmap, os, struct, sys
phys, size, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
fd = os.open("/dev/pagebuf", os.O_RDWR)
if mode >= 0:
    import fcntl
    from pagebuf import uapi
    fcntl.ioctl(fd, uapi.IOC_SET_CACHING, uapi.PagebufCaching(mode=mode))
else:
    os.close(fd)
    fd = os.open("/dev/pagebuf", os.O_RDWR | os.O_SYNC)
m = mmap.mmap(fd, size, mmap.MAP_SHARED, offset=phys)
addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
what = sys.argv[4]
if what == "memset":
    ctypes.memset(addr, 0, size)          # glibc: DC ZVA on arm64
    ctypes.memset(addr, 0x5A, size // 2)
elif what == "memcpy":
    src = bytes(range(256)) * (size // 256)
    ctypes.memmove(addr + 3, src, size - 64)   # unaligned destination
elif what == "unaligned":
    struct.pack_into("<Q", m, 1, 0x0123456789ABCDEF)
    struct.pack_into("<I", m, 4093, 0xDEADBEEF)
    m[17:29] = b"pagebuf!abcd"
sys.stdout.write(m[: 64].hex())
"""


def probe(buf_phys: int, size: int, mode: int, what: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, str(buf_phys), str(size), str(mode),
                           what], capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("mode", [uapi.CACHING_UC, uapi.CACHING_WC, -1], ids=["uc", "wc", "sync"])
def test_uncached_mapping_takes_memset_memcpy_and_unaligned(dev: Device, mode: int) -> None:
    """Python slices, memcpy and memset of zero work on the uncached alias, as on an
    O_SYNC mapping of /dev/mem: on arm64 that is Normal non-cacheable, where Device
    memory would fault (SIGBUS)."""
    buf = dev.alloc(1)
    expect = bytearray(buf.size)
    proc = probe(buf.phys_addr, buf.size, mode, "memset")
    assert proc.returncode == 0, proc.stderr
    expect[: buf.size // 2] = b"\x5a" * (buf.size // 2)
    assert dev.kread(buf.id, 0, buf.size) == expect
    proc = probe(buf.phys_addr, buf.size, mode, "memcpy")
    assert proc.returncode == 0, proc.stderr
    expect[3 : 3 + buf.size - 64] = (bytes(range(256)) * (buf.size // 256))[: buf.size - 64]
    assert dev.kread(buf.id, 0, buf.size) == expect
    proc = probe(buf.phys_addr, buf.size, mode, "unaligned")
    assert proc.returncode == 0, proc.stderr
    got = dev.kread(buf.id, 0, buf.size)
    assert got[1:9] == (0x0123456789ABCDEF).to_bytes(8, "little")
    assert got[4093:4097] == (0xDEADBEEF).to_bytes(4, "little")
    assert got[17:29] == b"pagebuf!abcd"


def test_device_mapping(dev: Device) -> None:
    """PAGEBUF_CACHING_DEVICE is pgprot_noncached(): aligned accesses of every width work.
    On arm64 it is Device-nGnRnE, where an unaligned store faults on hardware (which is
    why the uncached mode, /dev/mem's, is Normal non-cacheable there); QEMU 7.2 does not
    model that fault, so on arm64 the memory type itself is checked, in ptdump
    (test_mmap.py::test_the_caching_mode_reaches_the_page_tables[device])."""
    from pagebuf.physmem import PhysMem

    buf = dev.alloc(1)
    with PhysMem(buf.phys_addr, buf.size, path="/dev/pagebuf", sync=False, method="mmap",
                 caching=uapi.CACHING_DEVICE) as m:  # fmt: skip
        m.write64(8, 0x0123456789ABCDEF)
        m.write32(16, 0xCAFEF00D)
        assert m.read64(8) == 0x0123456789ABCDEF and m.read32(16) == 0xCAFEF00D
    assert dev.kread(buf.id, 8, 12) == bytes.fromhex("efcdab8967452301 0df0feca")
    if not ARM64:  # x86: the same as UC, which takes unaligned stores
        proc = probe(buf.phys_addr, buf.size, uapi.CACHING_DEVICE, "unaligned")
        assert proc.returncode == 0, proc.stderr


def test_fresh_buffers_read_zero_through_an_uncached_alias(dev: Device) -> None:
    """Fill and free much memory in other processes, then allocate: every byte of every
    new buffer reads zero through the uncached alias (the zeroes reached memory), not
    the previous owner's data."""
    filler = "b = bytearray(b'\\xa5' * (256 << 20)); b[::4096] = b'\\x5a' * len(b[::4096])"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", filler], check=True)
    bufs = [dev.alloc(order) for order in (0, 3, 6, 9)]
    fd = os.open("/dev/pagebuf", os.O_RDWR | os.O_SYNC)  # UC: /dev/mem's O_SYNC alias
    try:
        for b in bufs:
            with mmap.mmap(fd, b.size, mmap.MAP_SHARED, offset=b.phys_addr) as m:
                assert m[:].count(0) == b.size, f"buffer {b.id} (order {b.order})"
    finally:
        os.close(fd)
