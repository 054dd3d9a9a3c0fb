"""mmap of /dev/pagebuf: offset = physical address, only inside buffers, with the
caching attribute the user chose, and pages that outlive a FREE while mapped."""

from __future__ import annotations

import errno as E
import mmap
import os
import platform
import struct
from collections.abc import Iterator

import pytest
from conftest import pat_on, sysfs_int

from pagebuf import Device, PagebufError, uapi

PAGE = mmap.PAGESIZE


def map_phys(fd: int, phys: int, length: int) -> mmap.mmap:
    return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=phys)


def pagemap_pfns(m: mmap.mmap, pages: int) -> list[int]:
    """PFNs of a mapping's pages from /proc/self/pagemap (root sees real PFNs)."""
    import ctypes

    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    pfns = []
    with open("/proc/self/pagemap", "rb") as f:
        for i in range(pages):
            f.seek((addr // PAGE + i) * 8)
            (entry,) = struct.unpack("<Q", f.read(8))
            assert entry >> 63, "page not present"
            pfns.append(entry & ((1 << 55) - 1))
    return pfns


@pytest.fixture(params=["default", "sync", "wb", "uc", "wc"])
def mapping_fd(request: pytest.FixtureRequest, module: None) -> Iterator[int]:
    flags = os.O_RDWR | (os.O_SYNC if request.param == "sync" else 0)
    fd = os.open("/dev/pagebuf", flags)
    modes = {"wb": uapi.CACHING_WB, "uc": uapi.CACHING_UC, "wc": uapi.CACHING_WC}
    if request.param in modes:
        import fcntl

        fcntl.ioctl(fd, uapi.IOC_SET_CACHING, uapi.PagebufCaching(mode=modes[request.param]))
    yield fd
    os.close(fd)


def test_mmap_sees_what_the_kernel_wrote_and_back(dev: Device, mapping_fd: int) -> None:
    buf = dev.alloc(2)
    data = os.urandom(buf.size)
    dev.kwrite(buf.id, 0, data)
    m = map_phys(mapping_fd, buf.phys_addr, buf.size)
    try:
        assert m[:] == data
        m[100:108] = b"pagebuf!"
        assert dev.kread(buf.id, 100, 8) == b"pagebuf!"
        assert pagemap_pfns(m, buf.pages) == [buf.phys_addr // PAGE + i for i in range(buf.pages)]
    finally:
        m.close()


def test_mmap_of_a_sub_range(dev: Device) -> None:
    buf = dev.alloc(3)
    with Device() as other:
        m = map_phys(other.fileno(), buf.phys_addr + 2 * PAGE, 3 * PAGE)
        m[0:4] = b"abcd"
        m.close()
    assert dev.kread(buf.id, 2 * PAGE, 4) == b"abcd"


def test_mmap_outside_buffers_refused(dev: Device) -> None:
    a = dev.alloc(1)
    fd = dev.fileno()
    for phys, length in [
        (a.phys_addr - PAGE, PAGE),  # before
        (a.phys_addr + a.size, PAGE),  # after
        (a.phys_addr + PAGE, 2 * PAGE),  # runs past the end
        (0, PAGE),  # somewhere else entirely
    ]:
        with pytest.raises(OSError) as err:
            map_phys(fd, phys, length)
        assert err.value.errno == E.EINVAL, hex(phys)


def test_mapping_keeps_pages_after_free(dev: Device) -> None:
    buf = dev.alloc(2)
    dev.kwrite(buf.id, 0, b"\xaa" * buf.size)
    m = map_phys(dev.fileno(), buf.phys_addr, buf.size)
    dev.free(buf.id)
    assert sysfs_int("nr_buffers") == 0
    assert sysfs_int("pages_in_use") == 4  # still held by the mapping
    assert m[:16] == b"\xaa" * 16
    m[0:4] = b"live"
    assert m[0:4] == b"live"
    with pytest.raises(PagebufError):
        dev.buffer(buf.id)
    m.close()
    assert sysfs_int("pages_in_use") == 0


def test_set_caching_rejects(dev: Device) -> None:
    for mode in (uapi.CACHING_DEVICE + 1, 2**32 - 1):
        with pytest.raises(PagebufError) as err:
            dev.set_caching(mode)
        assert err.value.errno == E.EINVAL
    from test_errors import raw

    assert raw(dev, uapi.IOC_SET_CACHING, uapi.PagebufCaching(mode=1, reserved=1)) == E.EINVAL


def test_private_mappings_refused(dev: Device) -> None:
    buf = dev.alloc(0)
    with pytest.raises(OSError) as err:
        mmap.mmap(dev.fileno(), PAGE, mmap.MAP_PRIVATE, offset=buf.phys_addr)
    assert err.value.errno == E.EINVAL


def test_read_only_shared_mapping(dev: Device) -> None:
    """A tool that opens O_RDONLY and maps PROT_READ (VM_MAYSHARE without VM_SHARED)."""
    buf = dev.alloc(1)
    dev.kwrite(buf.id, 0, b"readonly" * 8)
    fd = os.open("/dev/pagebuf", os.O_RDONLY)
    try:
        with mmap.mmap(fd, buf.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=buf.phys_addr) as m:
            assert m[:64] == b"readonly" * 8
        with pytest.raises(OSError) as err:  # and no way to write through it
            mmap.mmap(fd, PAGE, mmap.MAP_SHARED, mmap.PROT_WRITE, offset=buf.phys_addr)
        assert err.value.errno == E.EACCES
    finally:
        os.close(fd)


PTDUMP = "/sys/kernel/debug/page_tables/current_user"


def _pte_flags(addr: int) -> set[str]:
    """The x86 page-table flags of the range holding `addr`, from ptdump."""
    with open(PTDUMP) as f:
        for line in f:
            rng = line.split()[0] if line.startswith("0x") else ""
            if "-" in rng:
                lo, hi = (int(x, 16) for x in rng.split("-"))
                if lo <= addr < hi:
                    return set(line.split()[2:])
    raise AssertionError(f"0x{addr:x} not in {PTDUMP}")


ARM64 = platform.machine() == "aarch64"
# What each mode's user PTE must say: x86 PAT bits, or arm64's memory type.
ARM64_TYPES = {
    "default": "MEM/NORMAL",
    "wb": "MEM/NORMAL",
    "sync": "MEM/NORMAL-NC",  # as arm64's /dev/mem maps RAM opened O_SYNC
    "uc": "MEM/NORMAL-NC",
    "wc": "MEM/NORMAL-NC",
    "device": "DEVICE/nGnRnE",
}


# The x86 test kernel, however booted, and the debug kernel built on it have
# CONFIG_PTDUMP_DEBUGFS=y for this test (pagebuf.vm.kbuild.CONFIG_ITEMS).
PTDUMP_KERNELS = ("custom", "custom-pat", "custom-swiotlb", "debug")


def _ptdump_ready() -> None:
    import subprocess

    from conftest import kernel_config

    if not os.path.exists(PTDUMP):
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    if not os.path.exists(PTDUMP):
        kernel = os.environ.get("PAGEBUF_KERNEL", "")
        if kernel in PTDUMP_KERNELS:  # built with PTDUMP_DEBUGFS for this
            pytest.fail(f"the test kernel (KERNEL={kernel}) has no {PTDUMP}")
        if "\nCONFIG_PTDUMP_DEBUGFS=y\n" in f"\n{kernel_config() or ''}":
            pytest.fail(f"CONFIG_PTDUMP_DEBUGFS=y, but there is no {PTDUMP}")
        pytest.skip("no page-table dump (CONFIG_PTDUMP_DEBUGFS): the custom kernel has it")


def _mapping_flags(fd: int, phys: int, size: int) -> set[str]:
    import ctypes

    m = map_phys(fd, phys, size)
    try:
        return _pte_flags(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    finally:
        m.close()


# arm64 has no user page-table dump (its ptdump shows only the kernel's tables):
# tests/vm/ptattr's module hands this process its own PTE of an address instead.
PTATTR = "/sys/kernel/debug/pagebuf_ptattr"
# AttrIndx, PTE bits [4:2], indexes MAIR_EL1; the kernel's MT_* indices (the same in
# arch/arm64/include/asm/memory.h of 6.1 and 6.12), named as arm64's ptdump names them.
ARM64_MT = {
    0: "MEM/NORMAL",  # MT_NORMAL
    1: "MEM/NORMAL-TAGGED",  # MT_NORMAL_TAGGED
    2: "MEM/NORMAL-NC",  # MT_NORMAL_NC
    3: "DEVICE/nGnRnE",  # MT_DEVICE_nGnRnE
    4: "DEVICE/nGnRE",  # MT_DEVICE_nGnRE
}
PTE_VALID = 1 << 0
PTE_USER = 1 << 6  # AP[1]: EL0 may access it
PTE_ADDR = ((1 << 48) - 1) & ~(PAGE - 1)  # the output address, below 2^48


def arm64_mem_type(pte: int) -> str:
    """The memory type of an arm64 PTE, as ptdump prints it."""
    attrindx = (pte >> 2) & 7
    return ARM64_MT.get(attrindx, f"AttrIndx {attrindx}")


@pytest.fixture(scope="module")
def ptattr() -> Iterator[str | None]:
    """On arm64, ptattr.ko loaded (make test-vm builds it and names it in
    PAGEBUF_PTATTR_KO) and unloaded after; None, or why it could not be loaded, which
    _ptattr_ready turns into the test's failure or skip. x86 reads ptdump instead."""
    import subprocess

    if not ARM64:
        yield None
        return
    ko = os.environ.get("PAGEBUF_PTATTR_KO", "")
    if not ko or not os.path.isfile(ko):
        yield f"PAGEBUF_PTATTR_KO={ko!r} names no module"
        return
    if not os.path.ismount("/sys/kernel/debug"):
        subprocess.run(["mount", "-t", "debugfs", "none", "/sys/kernel/debug"], check=False)
    loaded = os.path.exists("/sys/module/ptattr")  # then it is left loaded
    if not loaded:
        proc = subprocess.run(["insmod", ko], capture_output=True, text=True)
        if proc.returncode != 0:
            yield f"insmod {ko}: {proc.stderr.strip()}"
            return
    try:
        yield None if os.path.exists(PTATTR) else f"ptattr.ko is loaded, but no {PTATTR}"
    finally:
        if not loaded:
            subprocess.run(["rmmod", "ptattr"], check=True, capture_output=True)


def _ptattr_ready(why_not: str | None) -> None:
    if why_not is None:
        return
    if os.environ.get("PAGEBUF_KERNEL") == "custom":  # the harness builds it for the guest
        pytest.fail(f"tests/vm/ptattr: {why_not}")
    pytest.skip(f"no reader of arm64's user page tables: {why_not}")


def _pte(addr: int) -> int:
    """This process's arm64 PTE of `addr`, from ptattr."""
    fd = os.open(PTATTR, os.O_RDWR)
    try:
        os.write(fd, f"{addr:#x}\n".encode())
        return int(os.pread(fd, 64, 0), 16)
    finally:
        os.close(fd)


def _mapping_type(fd: int, phys: int, size: int) -> str:
    """The arm64 memory type of the first page of a mapping of `phys`."""
    import ctypes

    m = map_phys(fd, phys, size)
    try:
        m[0]  # noqa: B018 -- touched: a driver may fill its PTEs only on a fault
        pte = _pte(ctypes.addressof(ctypes.c_char.from_buffer(m)))
    finally:
        m.close()
    assert pte & PTE_VALID and pte & PTE_USER, hex(pte)
    assert pte & PTE_ADDR == phys, f"PTE 0x{pte:x} does not map 0x{phys:x}"
    return arm64_mem_type(pte)


@pytest.mark.parametrize("mode", list(ARM64_TYPES))
def test_the_caching_mode_reaches_the_page_tables(
    module: None, ptattr: str | None, mode: str
) -> None:
    import fcntl

    if ARM64:
        _ptattr_ready(ptattr)
    else:
        _ptdump_ready()
    fd = os.open("/dev/pagebuf", os.O_RDWR | (os.O_SYNC if mode == "sync" else 0))
    try:
        modes = {"wb": uapi.CACHING_WB, "uc": uapi.CACHING_UC, "wc": uapi.CACHING_WC,
                 "device": uapi.CACHING_DEVICE}  # fmt: skip
        if mode in modes:
            fcntl.ioctl(fd, uapi.IOC_SET_CACHING, uapi.PagebufCaching(mode=modes[mode]))
        with Device() as dev:
            buf = dev.alloc(2)
            if ARM64:
                mem_type = _mapping_type(fd, buf.phys_addr, buf.size)
            else:
                flags = _mapping_flags(fd, buf.phys_addr, buf.size)
    finally:
        os.close(fd)
    if ARM64:
        assert mem_type == ARM64_TYPES[mode]
        return
    assert {"USR", "RW"} <= flags, flags
    # The PTE's cache bits index the PAT (4 KiB pages: PAT, PCD, PWT). Linux programs it
    # WB at 0, WC at PWT, UC- at PCD; booted nopat the CPU's default table has no WC,
    # and Linux maps WC as UC- (PCD).
    want: set[str]
    if mode in ("default", "wb"):
        want = set()  # write-back, as the kernel's alias
    elif mode in ("sync", "uc", "device"):
        want = {"PCD"}  # uncached (UC-), as /dev/mem with O_SYNC
    else:
        want = {"PWT"} if pat_on() else {"PCD"}  # write-combining, or its UC- fallback
    assert flags & {"PAT", "PCD", "PWT"} == want, flags


def test_dev_pagebuf_o_sync_maps_ram_as_dev_mem_does(dev: Device, ptattr: str | None) -> None:
    """The same page mapped O_SYNC through /dev/mem and through /dev/pagebuf gets the same
    page-table attributes (on arm64 the memory type): pagebuf's uncached alias is the one
    the reference note used."""
    if ARM64:
        _ptattr_ready(ptattr)
    else:
        _ptdump_ready()
    mapping_attrs = _mapping_type if ARM64 else _mapping_flags
    buf = dev.alloc(0)
    ours = os.open("/dev/pagebuf", os.O_RDWR | os.O_SYNC)
    try:
        theirs = os.open("/dev/mem", os.O_RDWR | os.O_SYNC)
    except OSError as exc:
        os.close(ours)
        pytest.skip(f"no /dev/mem: {exc}")
    try:
        try:
            via_devmem = mapping_attrs(theirs, buf.phys_addr, PAGE)
        except OSError as exc:  # STRICT_DEVMEM (EPERM), or x86 PAT (EINVAL)
            if os.environ.get("PAGEBUF_KERNEL") == "custom":
                raise  # the test kernel is built and booted to allow it
            pytest.skip(f"/dev/mem refuses to map RAM here: {exc}")
        via_pagebuf = mapping_attrs(ours, buf.phys_addr, PAGE)
    finally:
        os.close(ours)
        os.close(theirs)
    assert via_pagebuf == via_devmem


def test_read_and_write_at_physical_offsets(dev: Device) -> None:
    """read()/write()/lseek() as on /dev/mem: the position is the physical address."""
    import subprocess

    from pagebuf.physmem import PhysMem

    buf = dev.alloc(1)
    data = os.urandom(buf.size)
    dev.kwrite(buf.id, 0, data)
    fd = os.open("/dev/pagebuf", os.O_RDWR)
    try:
        assert os.pread(fd, 64, buf.phys_addr + 100) == data[100:164]
        assert os.pread(fd, 4096, buf.phys_addr + buf.size - 10) == data[-10:]  # stops at end
        assert os.pwrite(fd, b"pagebuf!", buf.phys_addr + PAGE - 4) == 8  # across a page
        assert dev.kread(buf.id, PAGE - 4, 8) == b"pagebuf!"
        for phys in (buf.phys_addr + buf.size, buf.phys_addr - 1, 0):
            with pytest.raises(OSError) as err:
                os.pread(fd, 8, phys)
            assert err.value.errno == E.EINVAL, hex(phys)
        assert os.lseek(fd, buf.phys_addr + 8, os.SEEK_SET) == buf.phys_addr + 8
        assert os.read(fd, 8) == data[8:16]
        assert os.lseek(fd, 0, os.SEEK_CUR) == buf.phys_addr + 16
    finally:
        os.close(fd)
    with PhysMem(buf.phys_addr, buf.size, path="/dev/pagebuf", sync=False, method="rw") as m:
        m.write64(8, 0x0123456789ABCDEF)
        assert m.read32(12) == 0x01234567 and m.read8(8) == 0xEF
    # dd seeks and reads as it would on /dev/mem.
    dd = subprocess.run(["dd", "if=/dev/pagebuf", "bs=4096", f"skip={buf.phys_addr // PAGE}",
                         "count=2", "status=none"], capture_output=True)  # fmt: skip
    assert dd.returncode == 0, dd.stderr
    assert dd.stdout == dev.kread(buf.id, 0, buf.size)
