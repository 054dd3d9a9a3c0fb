"""The kernel's own view of a buffer: KREAD, KWRITE, KCHECKSUM through its cached
linear mapping, and the DMA sync calls."""

from __future__ import annotations

import ctypes
import errno as E
import os
import zlib

import pytest
from test_errors import raw

from pagebuf import Device, PagebufError, uapi


def test_kwrite_kread_kchecksum_agree(dev: Device) -> None:
    buf = dev.alloc(2)
    data = os.urandom(buf.size)
    dev.kwrite(buf.id, 0, data)
    assert dev.kread(buf.id, 0, buf.size) == data
    assert dev.kchecksum(buf.id) == zlib.crc32(data)
    assert dev.kread(buf.id, 4000, 200) == data[4000:4200]  # across a page boundary
    assert dev.kchecksum(buf.id, 4000, 200) == zlib.crc32(data[4000:4200])
    dev.kwrite(buf.id, buf.size - 8, b"\x01" * 8)
    assert dev.kread(buf.id, buf.size - 16, 16) == data[-16:-8] + b"\x01" * 8


def test_fresh_buffers_are_zeroed(dev: Device) -> None:
    buf = dev.alloc(3)
    assert dev.kchecksum(buf.id) == zlib.crc32(bytes(buf.size))


def test_large_buffer_checksum(dev: Device) -> None:
    buf = dev.alloc(10)  # 4 MiB: several chunks in the kernel loop
    data = os.urandom(buf.size)
    dev.kwrite(buf.id, 0, data)
    assert dev.kchecksum(buf.id) == zlib.crc32(data)


def kaccess(**kw: int) -> uapi.PagebufKaccess:
    return uapi.PagebufKaccess(**kw)


def test_kaccess_rejects(dev: Device) -> None:
    buf = dev.alloc(0)
    out = ctypes.create_string_buffer(8192)
    p = ctypes.addressof(out)
    for req, errno in [
        (kaccess(id=buf.id, length=8, data=p, flags=1), E.EINVAL),
        (kaccess(id=buf.id, length=8, data=p, reserved=1), E.EINVAL),
        (kaccess(id=buf.id, length=8, data=p, checksum=1), E.EINVAL),
        (kaccess(id=buf.id, length=4097, data=p), E.EINVAL),
        (kaccess(id=buf.id, offset=4096, length=1, data=p), E.EINVAL),
        (kaccess(id=buf.id, offset=2**64 - 1, length=2, data=p), E.EINVAL),
        (kaccess(id=buf.id, offset=8, length=2**64 - 4, data=p), E.EINVAL),
        (kaccess(id=buf.id, length=8, data=0), E.EINVAL),
        (kaccess(id=buf.id + 99, length=8, data=p), E.ENOENT),
        (kaccess(id=buf.id, length=8, data=16), E.EFAULT),
    ]:
        assert raw(dev, uapi.IOC_KREAD, req) == errno, req
    assert raw(dev, uapi.IOC_KWRITE, kaccess(id=buf.id, length=8, data=16)) == E.EFAULT
    assert raw(dev, uapi.IOC_KCHECKSUM, kaccess(id=buf.id, length=8, data=p)) == E.EINVAL
    assert raw(dev, uapi.IOC_KREAD, kaccess(id=buf.id, offset=4096, data=p)) == 0  # empty, at end
    assert dev.kchecksum(buf.id) == zlib.crc32(bytes(4096))  # nothing was written


def test_sync(dev: Device) -> None:
    cached = dev.alloc(1)
    mapped = dev.alloc(1, dma=True)
    data = os.urandom(mapped.size)
    dev.sync(mapped.id, uapi.SYNC_FOR_CPU)
    dev.kwrite(mapped.id, 0, data)
    dev.sync(mapped.id, uapi.SYNC_FOR_DEVICE)
    dev.sync(mapped.id, uapi.SYNC_FOR_CPU, 64, 128)
    assert dev.kread(mapped.id, 0, mapped.size) == data
    for buf_id, direction, offset, length, errno in [
        (cached.id, uapi.SYNC_FOR_CPU, 0, 0, E.EINVAL),  # not DMA-mapped
        (mapped.id, 0, 0, 0, E.EINVAL),
        (mapped.id, 3, 0, 0, E.EINVAL),
        (mapped.id, uapi.SYNC_FOR_CPU, mapped.size, 0, E.EINVAL),  # empty
        (mapped.id, uapi.SYNC_FOR_CPU, 8, mapped.size, E.EINVAL),
        (mapped.id + 99, uapi.SYNC_FOR_CPU, 0, 0, E.ENOENT),
    ]:
        with pytest.raises(PagebufError) as err:
            dev.sync(buf_id, direction, offset, length)
        assert err.value.errno == errno


def test_kflush_takes_no_data(dev: Device) -> None:
    buf = dev.alloc(1)
    assert raw(dev, uapi.IOC_KFLUSH, kaccess(id=buf.id, length=8, data=16)) == E.EINVAL


def test_inject_needs_the_debug_parameter(dev: Device) -> None:
    buf = dev.alloc(0)
    assert not dev.info().can_inject
    with pytest.raises(PagebufError) as err:
        dev.inject(buf.id, 0, b"\xee" * 64)
    assert err.value.errno == E.EPERM
    assert dev.kchecksum(buf.id) == zlib.crc32(bytes(4096))


def test_inject_writes_through_the_kernel_alias(module: None) -> None:
    from conftest import reload

    reload("inject=1")
    with Device() as dev:
        assert dev.info().can_inject
        buf = dev.alloc(0)
        dev.inject(buf.id, 128, b"\xee" * 64)
        assert dev.kread(buf.id, 0, 256) == bytes(128) + b"\xee" * 64 + bytes(64)
        with pytest.raises(PagebufError) as err:
            dev.inject(buf.id, 4096 - 32, b"\xee" * 64)  # past the end
        assert err.value.errno == E.EINVAL
    reload()
