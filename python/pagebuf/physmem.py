"""`PhysMem`: a window on physical memory through /dev/mem or /dev/pagebuf.

As python-periphery's MMIO does: the address is aligned down to a page for mmap, the
in-page offset kept, and every access checked against the window. A width access is
one load or store of exactly that width (a ctypes object over the mapping), never a
copy of bytes; bulk reads and writes are slices. Method "rw" uses pread()/pwrite() at
the physical address instead of a mapping: x86 with PAT refuses to mmap RAM through
/dev/mem but still serves read() and write().
"""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import mmap
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import uapi
from .closing import Closing
from .device import Device
from .errors import PAT_ALIAS, PagebufError, PermissionDeniedError

MAX_OFFSET = 2**63 - 1
WIDTHS = {8: ctypes.c_uint8, 16: ctypes.c_uint16, 32: ctypes.c_uint32, 64: ctypes.c_uint64}


class PhysMemError(PagebufError, OSError):
    """Opening, mapping or accessing physical memory failed."""


class PhysMemPermissionError(PhysMemError, PermissionDeniedError):
    """The kernel refused: STRICT_DEVMEM, no CAP_SYS_RAWIO, another file's buffer, PAT."""


UNCACHED = (uapi.CACHING_UC, uapi.CACHING_WC, uapi.CACHING_DEVICE)


def _explain(exc: OSError, path: str, what: str, eperm: str | None = None) -> PhysMemError:
    """One sentence for a failure of `what` on `path`; `eperm`: what EPERM means here."""
    devmem = path == "/dev/mem"
    if exc.errno in (E.EPERM, E.EACCES):
        if devmem:
            msg = (f"{what} {path}: the kernel forbids RAM through /dev/mem "
                   "(CONFIG_STRICT_DEVMEM=y); use /dev/pagebuf (--via mmap-uc)")  # fmt: skip
        elif eperm is not None and exc.errno == E.EPERM:
            msg = f"{what} {path}: {eperm}"
        else:
            msg = f"{what} {path}: permission denied (needs root with CAP_SYS_RAWIO)"
        return PhysMemPermissionError(msg, exc.errno)
    if exc.errno == E.EINVAL and devmem and what == "mmap":
        return PhysMemError(
            "mmap /dev/mem: refused (x86 PAT will not alias RAM with another cache type); "
            "use /dev/pagebuf (--via mmap-uc, with pagebuf loaded x86_pat_alias=1) for an "
            "uncached alias, or read()/write() (--method rw), which copy through the "
            "kernel's cached mapping",
            exc.errno,
        )
    if exc.errno == E.EINVAL and what == "mmap":
        return PhysMemError(f"mmap {path}: range not inside one pagebuf buffer", exc.errno)
    if exc.errno == E.ENOENT:
        return PhysMemError(f"{what} {path}: no such device", exc.errno)
    return PhysMemError(f"{what} {path}: {exc.strerror}", exc.errno)


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags)
    except OSError as exc:
        raise _explain(exc, path, "open") from None


class PhysMem(Closing):
    """[phys_addr, phys_addr + size) of physical memory, mapped or read/written."""

    def __init__(
        self,
        phys_addr: int,
        size: int,
        *,
        path: str = "/dev/mem",
        sync: bool = True,
        method: str = "mmap",
        caching: int | None = None,
        device: Device | None = None,
    ) -> None:
        """`device`: map /dev/pagebuf through this open file (duplicated) instead of
        opening it again: a file-owned buffer is reachable only through its own file.
        `caching` (uapi.CACHING_*): the mode the device sets first, for this file's maps
        (a Device of `path` is opened for it when none is given)."""
        if size <= 0 or phys_addr < 0:
            raise PhysMemError(f"empty or negative range 0x{phys_addr:x}+{size}", E.EINVAL)
        if phys_addr + size > MAX_OFFSET:  # a file offset (off_t) cannot reach it
            raise PhysMemError(f"0x{phys_addr:x}+{size} is beyond any physical address",
                               E.EINVAL)  # fmt: skip
        if method not in ("mmap", "rw"):
            raise PhysMemError(f"unknown access method {method!r}", E.EINVAL)
        self.phys_addr, self.size, self.path, self.method = phys_addr, size, path, method
        self._map: mmap.mmap | None = None
        self._arrays: dict[int, ctypes.Array[Any]] = {}  # per width, over the mapping
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_SYNC if sync else 0)
        file = own = Device(path) if caching is not None and device is None else None
        file = device or file
        try:
            if caching is not None and file is not None:
                file.set_caching(caching)  # the Device's errors, as they are
            self._fd = os.dup(file.fileno()) if file is not None else _open(path, flags)
        finally:
            if own is not None:
                own.close()
        try:
            if method == "mmap":
                base = phys_addr - phys_addr % mmap.PAGESIZE
                self._skip = phys_addr - base
                length = -(-(self._skip + size) // mmap.PAGESIZE) * mmap.PAGESIZE
                self._map = mmap.mmap(self._fd, length, mmap.MAP_SHARED,
                                      mmap.PROT_READ | mmap.PROT_WRITE, offset=base)  # fmt: skip
        except OSError as exc:
            eperm = self._mmap_eperm(caching, sync) if exc.errno == E.EPERM else None
            os.close(self._fd)
            raise _explain(exc, path, "mmap", eperm) from None

    def _mmap_eperm(self, caching: int | None, sync: bool) -> str | None:
        """What an EPERM from mmap() of /dev/pagebuf means: x86 PAT refusing an uncached
        alias of RAM (the module's features say so), else another file's buffer."""
        info = uapi.PagebufInfo()
        try:
            fcntl.ioctl(self._fd, uapi.IOC_GET_INFO, info, True)
        except OSError:
            return None  # not /dev/pagebuf: the usual explanation stands
        pat = info.features & uapi.FEAT_X86_PAT and not info.features & uapi.FEAT_PAT_ALIAS
        uncached = caching in UNCACHED or (caching in (None, uapi.CACHING_DEFAULT) and sync)
        return PAT_ALIAS if pat and uncached else self._foreign()

    def _foreign(self) -> str:
        """EPERM from /dev/pagebuf on an open file: the buffer is another file's."""
        return (f"the buffer at 0x{self.phys_addr:x} belongs to another open file "
                "(file-owned: only that file reaches it)")  # fmt: skip

    def close(self) -> None:
        self._arrays.clear()  # they export the mapping's buffer: drop them first
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                # A view is still out, e.g. held by the frames of an exception being
                # unwound (Ctrl-C during a verify): the mapping goes with the last view.
                # Raising here would replace that exception.
                pass
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _check(self, offset: int, length: int, align: int = 1) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise PhysMemError(
                f"0x{self.phys_addr + offset:x}+{length} is outside the window "
                f"0x{self.phys_addr:x}+{self.size}",
                E.EINVAL,
            )
        if (self.phys_addr + offset) % align:
            raise PhysMemError(
                f"0x{self.phys_addr + offset:x} is not aligned for a {align * 8}-bit access",
                E.EINVAL,
            )

    def read(self, offset: int, width: int) -> int:
        """One load of exactly `width` bits (8, 16, 32, 64), little-endian host."""
        self._check(offset, width // 8, width // 8)
        if self._map is None:
            return int.from_bytes(self._pread(offset, width // 8), "little")
        return int(self._array(width)[(self._skip + offset) // (width // 8)])

    def write(self, offset: int, width: int, value: int) -> None:
        """One store of exactly `width` bits."""
        self._check(offset, width // 8, width // 8)
        if not 0 <= value < 1 << width:
            raise PhysMemError(f"value {value:#x} does not fit in {width} bits", E.EINVAL)
        if self._map is None:
            self._pwrite(offset, value.to_bytes(width // 8, "little"))
            return
        self._array(width)[(self._skip + offset) // (width // 8)] = value

    def _array(self, width: int) -> ctypes.Array[Any]:
        """The mapping as an array of `width`-bit integers: indexing it is one access of
        exactly that width (alignment was checked, so the index is exact)."""
        arr = self._arrays.get(width)
        if arr is None:
            assert self._map is not None
            n = len(self._map) // (width // 8)
            arr = self._arrays[width] = (WIDTHS[width] * n).from_buffer(self._map)
        return arr

    # The width accessors take a fast path once the mapping's array of that width exists
    # and the access is inside the window and aligned; anything else (the first access,
    # method "rw", an error to raise) goes through read() and write(). They are made by
    # _reader and _writer below, one of each per width: constants, not a width argument,
    # keep them within 1.5x of a slice plus int.from_bytes (make bench).
    read8: Callable[[PhysMem, int], int]
    read16: Callable[[PhysMem, int], int]
    read32: Callable[[PhysMem, int], int]
    read64: Callable[[PhysMem, int], int]
    write8: Callable[[PhysMem, int, int], None]
    write16: Callable[[PhysMem, int, int], None]
    write32: Callable[[PhysMem, int, int], None]
    write64: Callable[[PhysMem, int, int], None]

    def read_bytes(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        if self._map is None:
            return self._pread(offset, length)
        start = self._skip + offset
        return self._map[start : start + length]

    def write_bytes(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        self._check(offset, len(data))
        if self._map is None:
            self._pwrite(offset, data)
            return
        start = self._skip + offset
        self._map[start : start + len(data)] = data

    @contextmanager
    def snapshot(self) -> Iterator[memoryview | bytes]:
        """The whole window to read once: the mapping itself (no copy), or one read()."""
        if self._map is None:
            yield self.read_bytes(0, self.size)
            return
        with self.view() as view:
            yield view

    def fill(self, write: Callable[[memoryview | bytearray], object]) -> None:
        """Fill the whole window: `write` writes into the mapping itself, or into a buffer
        that then goes out in one write()."""
        if self._map is None:
            staged = bytearray(self.size)
            write(staged)
            self.write_bytes(0, staged)
            return
        with self.view() as view:
            write(view)

    def view(self) -> memoryview:
        """The whole window as a writable memoryview (mmap method only), no copy."""
        if self._map is None:
            raise PhysMemError("view() needs the mmap method", E.EINVAL)
        return memoryview(self._map)[self._skip : self._skip + self.size]

    def _pread(self, offset: int, length: int) -> bytes:
        try:
            data = os.pread(self._fd, length, self.phys_addr + offset)
        except OSError as exc:
            raise _explain(exc, self.path, "read", self._foreign()) from None
        if len(data) != length:
            raise PhysMemError(f"short read of {self.path} at 0x{self.phys_addr + offset:x}",
                               E.EIO)  # fmt: skip
        return data

    def _pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        try:
            n = os.pwrite(self._fd, data, self.phys_addr + offset)
        except OSError as exc:
            raise _explain(exc, self.path, "write", self._foreign()) from None
        if n != len(data):
            raise PhysMemError(f"short write to {self.path}", E.EIO)


def _reader(width: int) -> Callable[[PhysMem, int], int]:
    size, shift, top = width // 8, (width // 8).bit_length() - 1, -(width // 8)

    def read(self: PhysMem, offset: int) -> int:
        arr = self._arrays.get(width)
        if arr is None or not 0 <= offset <= self.size + top or (self.phys_addr + offset) % size:
            return self.read(offset, width)
        return arr[(self._skip + offset) >> shift]

    read.__doc__ = f"One {width}-bit load at `offset`."
    return read


def _writer(width: int) -> Callable[[PhysMem, int, int], None]:
    size, shift, top, most = (
        width // 8,
        (width // 8).bit_length() - 1,
        -(width // 8),
        (1 << width) - 1,
    )

    def write(self: PhysMem, offset: int, value: int) -> None:
        arr = self._arrays.get(width)
        if (arr is None or not 0 <= offset <= self.size + top or (self.phys_addr + offset) % size
                or not 0 <= value <= most):  # fmt: skip
            self.write(offset, width, value)
        else:
            arr[(self._skip + offset) >> shift] = value

    write.__doc__ = f"One {width}-bit store of `value` at `offset`."
    return write


for _width in WIDTHS:
    setattr(PhysMem, f"read{_width}", _reader(_width))
    setattr(PhysMem, f"write{_width}", _writer(_width))
