"""What the module refuses, and what its mappings cannot be made to do.

Mappings are VM_IO|VM_DONTEXPAND|VM_DONTDUMP: nothing pins their pages past FREE, they
cannot grow, core dumps skip them, /proc/self/pagemap still shows their PFNs. Anything
that changes state needs a file opened for writing; a file-owned buffer is reachable
only through its file. The ABI takes every struct from its first version's size on;
FREE and ALLOC never leave the caller wrong about what happened.
"""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import json
import mmap
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from conftest import pat_on, reload, sysfs_int
from ioctl_opt import IOC, IOC_READ, IOC_WRITE

from pagebuf import Device, PagebufError, uapi

PAGE = mmap.PAGESIZE
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]  # fmt: skip
LIBC.mremap.restype = ctypes.c_void_p
LIBC.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
LIBC.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
LIBC.pread.restype = ctypes.c_ssize_t
LIBC.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
LIBC.vmsplice.restype = ctypes.c_ssize_t
LIBC.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
MAP_FAILED = ctypes.c_void_p(-1).value
MREMAP_MAYMOVE = 1


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def raw_ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes.Array) -> int:
    """The ioctl on `arg` in place: 0, or the errno."""
    try:
        fcntl.ioctl(fd, request, arg, True)
    except OSError as exc:
        return exc.errno or -1
    return 0


def ioctl_at(fd: int, request: int, addr: int) -> int:
    """The ioctl on raw memory at `addr`: 0, or the errno."""
    if LIBC.ioctl(fd, request, addr) == 0:
        return 0
    return ctypes.get_errno()


def with_size(request: int, size: int) -> int:
    """`request` re-encoded with another struct size, as an older or newer caller's."""
    direction = (request >> 30) & 3
    return IOC(direction, uapi.IOC_MAGIC, request & 0xFF, size)


@pytest.fixture
def mapped(dev: Device) -> Iterator[tuple[int, int, int]]:
    """An order-1 buffer mapped shared through a ctypes mmap: (fd, address, buffer id)."""
    buf = dev.alloc(1)
    fd = os.open("/dev/pagebuf", os.O_RDWR)
    addr = LIBC.mmap(None, buf.size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED,
                     fd, buf.phys_addr)  # fmt: skip
    assert addr != MAP_FAILED, os.strerror(ctypes.get_errno())
    yield fd, addr, buf.id
    LIBC.munmap(addr, buf.size)
    os.close(fd)


def vm_flags(addr: int) -> set[str]:
    """The VmFlags of the mapping at `addr`, from /proc/self/smaps."""
    lines = open("/proc/self/smaps").read().splitlines()
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and ":" not in head:
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= addr < end
        elif inside and line.startswith("VmFlags:"):
            return set(line.split()[1:])
    raise AssertionError(f"no mapping at 0x{addr:x}")


# -- mappings ---------------------------------------------------------------------


def test_mapping_flags_are_io_dontexpand_dontdump(mapped: tuple[int, int, int]) -> None:
    _, addr, _ = mapped
    assert {"io", "de", "dd"} <= vm_flags(addr)


def test_nothing_can_pin_the_pages(mapped: tuple[int, int, int]) -> None:
    """vmsplice (GUP) refuses the mapping: a pipe cannot hold its pages past FREE."""
    _, addr, _ = mapped
    r, w = os.pipe()
    try:
        iov = Iovec(addr, PAGE)
        n = LIBC.vmsplice(w, ctypes.byref(iov), 1, 0)
        assert n == -1 and ctypes.get_errno() == E.EFAULT
    finally:
        os.close(r)
        os.close(w)


def test_proc_mem_cannot_reach_the_pages(mapped: tuple[int, int, int]) -> None:
    """/proc/pid/mem (GUP with FOLL_FORCE) reads nothing of the mapping."""
    _, addr, _ = mapped
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        mem.seek(addr)
        with pytest.raises(OSError) as exc:
            mem.read(64)
    assert exc.value.errno == E.EIO


def test_mremap_cannot_grow_the_mapping(dev: Device, mapped: tuple[int, int, int]) -> None:
    _, addr, buf_id = mapped
    size = dev.buffer(buf_id).size
    new = LIBC.mremap(addr, size, 2 * size, MREMAP_MAYMOVE)
    errno = ctypes.get_errno()
    if new != MAP_FAILED:  # grown: unmap it all, or the module stays busy
        LIBC.munmap(new, 2 * size)
    assert new == MAP_FAILED and errno == E.EFAULT


def test_pagemap_still_shows_the_pfns(dev: Device, mapped: tuple[int, int, int]) -> None:
    _, addr, buf_id = mapped
    buf = dev.buffer(buf_id)
    pfns = []
    with open("/proc/self/pagemap", "rb") as f:
        for i in range(buf.pages):
            f.seek((addr // PAGE + i) * 8)
            (entry,) = struct.unpack("<Q", f.read(8))
            pfns.append(entry & ((1 << 55) - 1) if entry >> 63 else None)
    assert pfns == [buf.phys_addr // PAGE + i for i in range(buf.pages)]


def test_memory_accounting_survives_fork_and_free(dev: Device) -> None:
    """A mapping inherited by a child keeps the pages; both unmapped, they go back."""
    buf = dev.alloc(2)
    fd = os.open("/dev/pagebuf", os.O_RDWR)
    m = mmap.mmap(fd, buf.size, mmap.MAP_SHARED, offset=buf.phys_addr)
    pid = os.fork()
    if pid == 0:  # the child writes through its copy of the mapping
        m[:8] = b"childwas"
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    dev.free(buf.id)
    assert m[:8] == b"childwas"
    assert sysfs_int("bytes_in_use") == buf.size
    m.close()
    os.close(fd)
    assert sysfs_int("bytes_in_use") == 0


# -- who may do what ----------------------------------------------------------------


def kaccess(buf_id: int, length: int, data: ctypes.Array | None) -> uapi.PagebufKaccess:
    addr = ctypes.addressof(data) if data is not None else 0
    return uapi.PagebufKaccess(id=buf_id, length=length, data=addr)


def test_read_only_file_cannot_change_anything(dev: Device) -> None:
    buf = dev.alloc(0, dma=True)
    data = ctypes.create_string_buffer(b"x" * 64)
    fd = os.open("/dev/pagebuf", os.O_RDONLY)
    try:
        refused = {
            "ALLOC": raw_ioctl(fd, uapi.IOC_ALLOC, uapi.PagebufBuffer(order=0)),
            "FREE": raw_ioctl(fd, uapi.IOC_FREE, uapi.PagebufFree(id=buf.id)),
            "FREE_ALL": raw_ioctl(fd, uapi.IOC_FREE, uapi.PagebufFree(flags=uapi.FREE_ALL)),
            "KWRITE": raw_ioctl(fd, uapi.IOC_KWRITE, kaccess(buf.id, 64, data)),
            "INJECT": raw_ioctl(fd, uapi.IOC_INJECT, kaccess(buf.id, 64, data)),
            "KFLUSH": raw_ioctl(fd, uapi.IOC_KFLUSH, kaccess(buf.id, 64, None)),
            "SYNC": raw_ioctl(
                fd, uapi.IOC_SYNC, uapi.PagebufSync(id=buf.id, direction=uapi.SYNC_FOR_CPU)
            ),
        }
        assert refused == dict.fromkeys(refused, E.EBADF)
        allowed = {
            "GET_INFO": raw_ioctl(fd, uapi.IOC_GET_INFO, uapi.PagebufInfo()),
            "BUF_INFO": raw_ioctl(fd, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=buf.id)),
            "KREAD": raw_ioctl(fd, uapi.IOC_KREAD, kaccess(buf.id, 64, data)),
            "KCHECKSUM": raw_ioctl(fd, uapi.IOC_KCHECKSUM, kaccess(buf.id, 64, None)),
            "SET_CACHING": raw_ioctl(
                fd, uapi.IOC_SET_CACHING, uapi.PagebufCaching(mode=uapi.CACHING_WB)
            ),
        }
        assert allowed == dict.fromkeys(allowed, 0)
        with pytest.raises(PermissionError):  # shared and writable needs FMODE_WRITE
            mmap.mmap(fd, buf.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                      offset=buf.phys_addr)  # fmt: skip
        m = mmap.mmap(fd, buf.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=buf.phys_addr)
        assert m[:64] == bytes(64)
        m.close()
        with pytest.raises(OSError) as exc:
            os.pwrite(fd, b"y", buf.phys_addr)
        assert exc.value.errno == E.EBADF
    finally:
        os.close(fd)
    assert [b.id for b in dev.buffers()] == [buf.id]
    assert dev.kread(buf.id, 0, 64) == bytes(64)


def _other_process(sock: socket.socket, buf: uapi.PagebufBuffer) -> dict[str, int]:
    """In a separate process, with its own open of /dev/pagebuf, then with the owner's fd."""
    own = os.open("/dev/pagebuf", os.O_RDWR)
    data = ctypes.create_string_buffer(64)
    seen = {
        "BUF_INFO": raw_ioctl(own, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=buf.id)),
        "KREAD": raw_ioctl(own, uapi.IOC_KREAD, kaccess(buf.id, 64, data)),
        "KWRITE": raw_ioctl(own, uapi.IOC_KWRITE, kaccess(buf.id, 64, data)),
        "KCHECKSUM": raw_ioctl(own, uapi.IOC_KCHECKSUM, kaccess(buf.id, 64, None)),
        "FREE": raw_ioctl(own, uapi.IOC_FREE, uapi.PagebufFree(id=buf.id)),
    }
    for name, call in (
        ("mmap", lambda fd: mmap.mmap(fd, PAGE, mmap.MAP_SHARED, offset=buf.phys_addr)),
        ("pread", lambda fd: os.pread(fd, 8, buf.phys_addr)),
        ("pwrite", lambda fd: os.pwrite(fd, b"intruder", buf.phys_addr)),
    ):
        try:
            call(own)
            seen[name] = 0
        except OSError as exc:
            seen[name] = exc.errno or -1
    # The owner's own open file, passed over a Unix socket, is the owner.
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    seen["passed fd KWRITE"] = raw_ioctl(
        fds[0], uapi.IOC_KWRITE, kaccess(buf.id, 8, ctypes.create_string_buffer(b"passedfd"))
    )
    os.close(fds[0])
    os.close(own)
    return seen


def test_file_owned_buffer_reachable_only_through_its_file(module: None) -> None:
    owner = os.open("/dev/pagebuf", os.O_RDWR)
    buf = uapi.PagebufBuffer(order=0, flags=uapi.BUF_FILE_OWNED)
    assert raw_ioctl(owner, uapi.IOC_ALLOC, buf) == 0
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(owner)  # the child's copy of the owner's fd would make it the owner
        seen = _other_process(child, buf)
        os.write(w, json.dumps(seen).encode())
        os._exit(0)
    os.close(w)
    socket.send_fds(parent, [b"fd"], [owner])
    assert os.waitpid(pid, 0)[1] == 0
    seen = json.loads(os.read(r, 4096))
    os.close(r)
    assert seen == {
        "BUF_INFO": 0,
        "KREAD": E.EPERM,
        "KWRITE": E.EPERM,
        "KCHECKSUM": E.EPERM,
        "FREE": E.EPERM,
        "mmap": E.EPERM,
        "pread": E.EPERM,
        "pwrite": E.EPERM,
        "passed fd KWRITE": 0,
    }
    assert os.pread(owner, 8, buf.phys_addr) == b"passedfd"
    os.close(owner)
    assert sysfs_int("nr_buffers") == 0


# -- the ABI ------------------------------------------------------------------------

INFO_V1 = 48  # struct pagebuf_info up to dma_mask, interface version 1


def test_get_info_from_a_version_1_caller(dev: Device) -> None:
    raw = ctypes.create_string_buffer(INFO_V1)
    assert ioctl_at(dev.fileno(), with_size(uapi.IOC_GET_INFO, INFO_V1),
                    ctypes.addressof(raw)) == 0  # fmt: skip
    info = uapi.PagebufInfo.from_buffer_copy(raw.raw + bytes(ctypes.sizeof(uapi.PagebufInfo) - 48))
    assert info.api_version == uapi.API_VERSION and info.page_size == PAGE


def test_get_info_from_a_newer_caller(dev: Device) -> None:
    size = ctypes.sizeof(uapi.PagebufInfo) + 16
    raw = ctypes.create_string_buffer(size)
    ctypes.memset(ctypes.addressof(raw) + size - 16, 0xFF, 16)
    request = with_size(uapi.IOC_GET_INFO, size)
    assert ioctl_at(dev.fileno(), request, ctypes.addressof(raw)) == E.EINVAL  # junk tail
    ctypes.memset(raw, 0, size)
    assert ioctl_at(dev.fileno(), request, ctypes.addressof(raw)) == 0
    info = uapi.PagebufInfo.from_buffer_copy(raw.raw[: ctypes.sizeof(uapi.PagebufInfo)])
    assert info.max_bytes == sysfs_int("max_bytes")
    assert raw.raw[-16:] == bytes(16)


def test_get_info_input_must_be_zero(dev: Device) -> None:
    s = uapi.PagebufInfo(reserved=1)
    assert raw_ioctl(dev.fileno(), uapi.IOC_GET_INFO, s) == E.EINVAL
    s = uapi.PagebufInfo(api_version=3)
    assert raw_ioctl(dev.fileno(), uapi.IOC_GET_INFO, s) == E.EINVAL


def test_shorter_than_version_1_is_enotty(dev: Device) -> None:
    raw = ctypes.create_string_buffer(64)
    for request, v1 in ((uapi.IOC_GET_INFO, 48), (uapi.IOC_ALLOC, 40), (uapi.IOC_FREE, 16)):
        assert ioctl_at(dev.fileno(), with_size(request, v1 - 8), ctypes.addressof(raw)) == (
            E.ENOTTY
        )
    # Right size, wrong direction: another command.
    wrong = IOC(IOC_READ | IOC_WRITE, uapi.IOC_MAGIC, 0x00, 48)
    assert ioctl_at(dev.fileno(), wrong, ctypes.addressof(raw)) == E.ENOTTY


def test_alloc_from_a_longer_struct_zeroes_the_tail(dev: Device) -> None:
    size = ctypes.sizeof(uapi.PagebufBuffer) + 8
    raw = ctypes.create_string_buffer(size)
    request = with_size(uapi.IOC_ALLOC, size)
    assert ioctl_at(dev.fileno(), request, ctypes.addressof(raw)) == 0
    s = uapi.PagebufBuffer.from_buffer_copy(raw.raw[:-8])
    assert s.id and s.size == PAGE and raw.raw[-8:] == bytes(8)
    assert dev.buffer(s.id).phys_addr == s.phys_addr


def read_only_struct(s: ctypes.Structure) -> int:
    """`s` copied into a page of its own that is then made read-only: its address."""
    page = LIBC.mmap(None, PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)  # fmt: skip
    ctypes.memmove(page, ctypes.addressof(s), ctypes.sizeof(s))
    assert LIBC.mprotect(page, PAGE, mmap.PROT_READ) == 0
    return page


def test_free_that_cannot_answer_frees_nothing(dev: Device) -> None:
    buf = dev.alloc(0)
    page = read_only_struct(uapi.PagebufFree(id=buf.id))
    try:
        assert ioctl_at(dev.fileno(), uapi.IOC_FREE, page) == E.EFAULT
    finally:
        LIBC.munmap(page, PAGE)
    assert [b.id for b in dev.buffers()] == [buf.id]


def test_alloc_that_cannot_answer_leaves_nothing(dev: Device) -> None:
    page = read_only_struct(uapi.PagebufBuffer(order=3))
    try:
        assert ioctl_at(dev.fileno(), uapi.IOC_ALLOC, page) == E.EFAULT
    finally:
        LIBC.munmap(page, PAGE)
    assert dev.buffers() == []
    assert sysfs_int("bytes_in_use") == 0


def test_read_counts_what_it_copied_before_a_fault(dev: Device) -> None:
    """As /dev/mem: a read into memory that ends half-way returns the bytes copied."""
    buf = dev.alloc(1)
    dev.kwrite(buf.id, 0, b"\xab" * buf.size)
    area = LIBC.mmap(None, 2 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)  # fmt: skip
    try:
        assert LIBC.mprotect(area + PAGE, PAGE, 0) == 0
        n = LIBC.pread(dev.fileno(), area, 2 * PAGE, buf.phys_addr)
        assert n == PAGE
        assert ctypes.string_at(area, PAGE) == b"\xab" * PAGE
        n = LIBC.pread(dev.fileno(), area + PAGE, PAGE, buf.phys_addr)
        assert n == -1 and ctypes.get_errno() == E.EFAULT
    finally:
        LIBC.munmap(area, 2 * PAGE)


def test_many_buffers_found_by_physical_address(dev: Device) -> None:
    """Lookup by physical address: every page of every buffer, first and last byte."""
    bufs = [dev.alloc(i % 3) for i in range(64)]
    for buf in bufs:
        dev.kwrite(buf.id, 0, buf.id.to_bytes(4, "little"))
        dev.kwrite(buf.id, buf.size - 4, buf.id.to_bytes(4, "little"))
    for buf in bufs:
        assert os.pread(dev.fileno(), 4, buf.phys_addr) == buf.id.to_bytes(4, "little")
        end = buf.phys_addr + buf.size - 4
        assert os.pread(dev.fileno(), 8, end) == buf.id.to_bytes(4, "little")  # stops at end
    for buf in bufs[::2]:
        dev.free(buf.id)
    for buf in bufs[::2]:
        with pytest.raises(OSError) as exc:
            os.pread(dev.fileno(), 4, buf.phys_addr)
        assert exc.value.errno == E.EINVAL
    for buf in bufs[1::2]:
        assert os.pread(dev.fileno(), 4, buf.phys_addr) == buf.id.to_bytes(4, "little")


# -- limits and DMA -----------------------------------------------------------------


def test_limit_is_in_bytes(module: None) -> None:
    reload(f"max_bytes={3 * PAGE}")
    with Device() as dev:
        info = dev.info()
        assert (info.max_bytes, info.max_pages) == (3 * PAGE, 3)
        a = dev.alloc(1)
        with pytest.raises(PagebufError) as exc:
            dev.alloc(1)
        assert exc.value.errno == E.ENOMEM
        assert dev.info().bytes_in_use == a.size == sysfs_int("bytes_in_use")
        dev.free(a.id)


def test_dma_max_size_reported(dev: Device) -> None:
    info = dev.info()
    limit = sysfs_int("dma_max_size")
    assert info.dma_max_size == limit
    if not info.dma_bounce:
        assert limit == 2**64 - 1  # dma-direct without bouncing: no limit


def test_buffers_charged_to_the_memory_cgroup(dev: Device) -> None:
    """__GFP_ACCOUNT: a buffer counts against the allocating task's cgroup."""
    root = "/sys/fs/cgroup"
    if not os.path.exists(f"{root}/cgroup.controllers"):
        try:
            os.makedirs(root, exist_ok=True)
        except OSError:
            pytest.skip("no cgroup filesystem in this kernel")
        if os.system(f"mount -t cgroup2 none {root} 2>/dev/null") != 0:
            pytest.skip("no cgroup2 here")
    if "memory" not in open(f"{root}/cgroup.controllers").read().split():
        pytest.skip("no memory controller in this kernel")
    with open(f"{root}/cgroup.subtree_control", "w") as f:
        f.write("+memory")
    group = f"{root}/pagebuf-test"
    os.makedirs(group, exist_ok=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        with open(f"{group}/cgroup.procs", "w") as f:
            f.write("0")
        before = int(open(f"{group}/memory.current").read())
        with Device() as d:
            d.alloc(8)  # 1 MiB with 4K pages, module-owned: it stays
        after = int(open(f"{group}/memory.current").read())
        os.write(w, f"{before} {after}".encode())
        os._exit(0)
    os.close(w)
    assert os.waitpid(pid, 0)[1] == 0
    before, after = map(int, os.read(r, 100).split())
    os.close(r)
    dev.free_all()
    os.rmdir(group)
    assert after - before >= 256 * PAGE


# -- x86 PAT ------------------------------------------------------------------------


def tainted() -> int:
    return int(open("/proc/sys/kernel/tainted").read())


TAINT_USER = 1 << 6


@pytest.mark.skipif(not pat_on(), reason="x86 booted with PAT only")
def test_pat_refuses_uncached_maps_without_the_opt_in(module: None) -> None:
    reload("x86_pat_alias=0")
    with Device() as dev:
        info = dev.info()
        assert info.x86_pat and not info.pat_alias
        buf = dev.alloc(0)
        for mode in (uapi.CACHING_UC, uapi.CACHING_WC, uapi.CACHING_DEVICE):
            dev.set_caching(mode)
            with pytest.raises(PermissionError):
                mmap.mmap(dev.fileno(), PAGE, mmap.MAP_SHARED, offset=buf.phys_addr)
        dev.set_caching(uapi.CACHING_WB)
        mmap.mmap(dev.fileno(), PAGE, mmap.MAP_SHARED, offset=buf.phys_addr).close()
        fd = os.open("/dev/pagebuf", os.O_RDWR | os.O_SYNC)  # O_SYNC means uncached
        try:
            with pytest.raises(PermissionError):
                mmap.mmap(fd, PAGE, mmap.MAP_SHARED, offset=buf.phys_addr)
        finally:
            os.close(fd)


@pytest.mark.skipif(not pat_on(), reason="x86 booted with PAT only")
def test_pat_opt_in_maps_and_taints(module: None) -> None:
    reload("x86_pat_alias=1")
    assert tainted() & TAINT_USER
    with Device() as dev:
        assert dev.info().pat_alias
        buf = dev.alloc(0)
        dev.set_caching(uapi.CACHING_UC)
        mmap.mmap(dev.fileno(), PAGE, mmap.MAP_SHARED, offset=buf.phys_addr).close()


@pytest.mark.skipif(os.uname().machine != "x86_64" or pat_on(), reason="x86 booted nopat only")
def test_nopat_says_wc_is_uc_and_needs_no_opt_in(module: None) -> None:
    before = tainted()
    reload("x86_pat_alias=1")  # no PAT to go behind: no taint
    assert tainted() == before
    with Device() as dev:
        info = dev.info()
        assert info.wc_is_uc and not info.x86_pat and not info.pat_alias
