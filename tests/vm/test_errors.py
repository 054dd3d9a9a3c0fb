"""Every malformed request gets its documented errno, and changes nothing."""

from __future__ import annotations

import ctypes
import errno as E
import fcntl

import pytest
from conftest import sysfs_int
from ioctl_opt import IOC, IOC_NONE, IOC_READ, IOC_WRITE

from pagebuf import Device, uapi


def raw(dev: Device, request: int, arg: ctypes.Structure | bytearray | int = 0) -> int:
    """Issue an ioctl without the library's checks; return 0 or the errno."""
    try:
        if isinstance(arg, int):
            fcntl.ioctl(dev.fileno(), request, arg)  # arg is passed as a raw pointer
        else:
            fcntl.ioctl(dev.fileno(), request, arg, True)
    except OSError as exc:
        return exc.errno or -1
    return 0


def alloc_req(**fields: int) -> uapi.PagebufBuffer:
    return uapi.PagebufBuffer(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"order": 11},
        {"order": 2**32 - 1},
        {"flags": 0x4},
        {"flags": 0x80000000},
        {"reserved": 1},
        {"id": 5},
        {"phys_addr": 0x1000},
        {"dma_addr": 1},
        {"size": 4096},
    ],
    ids=lambda f: ",".join(f"{k}={v:#x}" for k, v in f.items()),
)
def test_alloc_rejects(dev: Device, fields: dict[str, int]) -> None:
    assert raw(dev, uapi.IOC_ALLOC, alloc_req(**fields)) == E.EINVAL
    assert sysfs_int("nr_buffers") == 0


def test_buf_info_rejects(dev: Device) -> None:
    buf = dev.alloc(0)
    assert raw(dev, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=0)) == E.EINVAL
    assert raw(dev, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=buf.id + 1000)) == E.ENOENT
    assert raw(dev, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=buf.id, reserved=1)) == E.EINVAL
    assert raw(dev, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=buf.id, order=1)) == E.EINVAL
    ok = uapi.PagebufBuffer(id=buf.id)
    assert raw(dev, uapi.IOC_BUF_INFO, ok) == 0 and ok.phys_addr == buf.phys_addr


def test_free_rejects(dev: Device) -> None:
    buf = dev.alloc(0)
    free = uapi.PagebufFree
    assert raw(dev, uapi.IOC_FREE, free(id=0)) == E.EINVAL
    assert raw(dev, uapi.IOC_FREE, free(id=buf.id, flags=uapi.FREE_ALL)) == E.EINVAL
    assert raw(dev, uapi.IOC_FREE, free(id=buf.id, flags=0x2)) == E.EINVAL
    assert raw(dev, uapi.IOC_FREE, free(id=buf.id, reserved=1)) == E.EINVAL
    assert raw(dev, uapi.IOC_FREE, free(id=buf.id, count=1)) == E.EINVAL
    assert sysfs_int("nr_buffers") == 1
    assert raw(dev, uapi.IOC_FREE, free(id=buf.id)) == 0
    assert raw(dev, uapi.IOC_FREE, free(id=buf.id)) == E.ENOENT  # double free
    assert raw(dev, uapi.IOC_FREE, free(id=123456)) == E.ENOENT


def test_list_rejects(dev: Device) -> None:
    dev.alloc(0)
    size = ctypes.sizeof(uapi.PagebufBuffer)
    array = (uapi.PagebufBuffer * 4)()
    lst = uapi.PagebufList
    addr = ctypes.addressof(array)
    v1 = uapi.PagebufBuffer.dma_dir.offset  # version 1's entry: 40 bytes
    assert raw(dev, uapi.IOC_LIST, lst(entry_size=v1 - 8)) == E.EINVAL
    assert raw(dev, uapi.IOC_LIST, lst(entry_size=8192)) == E.EINVAL
    assert raw(dev, uapi.IOC_LIST, lst(capacity=1, entry_size=size)) == E.EINVAL
    assert raw(dev, uapi.IOC_LIST, lst(entry_size=size, count=1)) == E.EINVAL
    assert raw(dev, uapi.IOC_LIST, lst(buffers=8, capacity=1, entry_size=size)) == E.EFAULT
    # A larger entry from a newer caller: the kernel zero-fills the tail it does not know.
    wide = (ctypes.c_uint8 * (2 * (size + 16)))(*([0xAA] * (2 * (size + 16))))
    req = lst(buffers=ctypes.addressof(wide), capacity=2, entry_size=size + 16)
    assert raw(dev, uapi.IOC_LIST, req) == 0 and (req.count, req.total) == (1, 1)
    assert bytes(wide[size : size + 16]) == bytes(16)
    assert bytes(wide[size + 16 :]) == b"\xaa" * (size + 16)  # untouched beyond count
    assert raw(dev, uapi.IOC_LIST, lst(buffers=addr, capacity=4, entry_size=size)) == 0
    # A version-1 caller's shorter entries: each cut to its size, none past it.
    old = (ctypes.c_uint8 * (2 * v1))(*([0xAA] * (2 * v1)))
    req = lst(buffers=ctypes.addressof(old), capacity=2, entry_size=v1)
    assert raw(dev, uapi.IOC_LIST, req) == 0 and req.count == 1
    assert bytes(old[:v1]) == bytes(array[0])[:v1] and bytes(old[v1:]) == b"\xaa" * v1


def test_unknown_and_malformed_commands(dev: Device) -> None:
    size = ctypes.sizeof(uapi.PagebufBuffer)
    buf = bytearray(256)
    rw = IOC_READ | IOC_WRITE
    assert raw(dev, IOC(rw, 0xB9, 0x01, size), buf) == E.ENOTTY  # wrong magic
    assert raw(dev, IOC(rw, uapi.IOC_MAGIC, 0x7F, size), buf) == E.ENOTTY  # unknown nr
    assert raw(dev, IOC(IOC_WRITE, uapi.IOC_MAGIC, 0x01, size), buf) == E.ENOTTY  # wrong dir
    v1 = uapi.PagebufBuffer.dma_dir.offset
    assert raw(dev, IOC(rw, uapi.IOC_MAGIC, 0x01, v1 - 8), buf) == E.ENOTTY  # too short
    assert raw(dev, IOC(IOC_NONE, uapi.IOC_MAGIC, 0x00, 0)) == E.ENOTTY
    assert raw(dev, 0x5401) == E.ENOTTY  # TCGETS
    assert sysfs_int("nr_buffers") == 0


def test_longer_struct_from_a_newer_caller(dev: Device) -> None:
    size = ctypes.sizeof(uapi.PagebufBuffer)
    cmd = IOC(IOC_READ | IOC_WRITE, uapi.IOC_MAGIC, 0x01, size + 8)
    req = bytearray(size + 8)
    req[size:] = b"\x01" + bytes(7)  # an unknown, non-zero field
    assert raw(dev, cmd, req) == E.EINVAL
    req[size:] = bytes(8)
    req[4] = 2  # order 2
    assert raw(dev, cmd, req) == 0
    out = uapi.PagebufBuffer.from_buffer_copy(bytes(req[:size]))
    assert out.order == 2 and out.size == 4 * 4096 and out.id > 0
    assert dev.buffer(out.id).phys_addr == out.phys_addr


def test_bad_user_pointers(dev: Device) -> None:
    assert raw(dev, uapi.IOC_ALLOC, 16) == E.EFAULT
    assert raw(dev, uapi.IOC_GET_INFO, 16) == E.EFAULT
    assert sysfs_int("nr_buffers") == 0


def test_list_with_a_huge_capacity_and_limit(module: None) -> None:
    """Kernel memory for LIST follows what exists, not what the caller or max_bytes say:
    capacity U32_MAX under max_pages=10^8 once asked kvmalloc for gigabytes (a WARN).
    max_bytes may be no more than the RAM now: all of it is the largest limit."""
    from conftest import reload
    from test_limits import all_ram

    reload(f"max_bytes={all_ram()}")
    with Device() as dev:
        dev.alloc(0)
        array = (uapi.PagebufBuffer * 2)()
        req = uapi.PagebufList(buffers=ctypes.addressof(array), capacity=2**32 - 1,
                               entry_size=ctypes.sizeof(uapi.PagebufBuffer))  # fmt: skip
        assert raw(dev, uapi.IOC_LIST, req) == 0
        assert (req.count, req.total) == (1, 1) and array[0].id > 0 and array[1].id == 0
        dev.free_all()
    reload()
