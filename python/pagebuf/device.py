"""`Device`: an open /dev/pagebuf, and `Buffer`/`ModuleInfo`: what it reports."""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import os
from dataclasses import dataclass
from typing import Any

from . import uapi
from .closing import Closing
from .discovery import find_device
from .errors import NOT_LOADED, ModuleNotLoadedError, PagebufError, from_oserror


@dataclass(frozen=True)
class Buffer:
    """One buffer as the module describes it."""

    id: int
    order: int
    flags: int
    phys_addr: int
    dma_addr: int | None
    size: int

    @classmethod
    def from_struct(cls, s: uapi.PagebufBuffer) -> Buffer:
        dma = bool(s.flags & uapi.BUF_DMA)
        return cls(s.id, s.order, s.flags, s.phys_addr, s.dma_addr if dma else None, s.size)

    @property
    def dma(self) -> bool:
        return bool(self.flags & uapi.BUF_DMA)

    @property
    def file_owned(self) -> bool:
        return bool(self.flags & uapi.BUF_FILE_OWNED)

    @property
    def pages(self) -> int:
        return 1 << self.order

    @property
    def owner(self) -> str:
        return "file" if self.file_owned else "module"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order": self.order,
            "pages": self.pages,
            "size": self.size,
            "phys_addr": self.phys_addr,
            "phys_addr_hex": f"0x{self.phys_addr:x}",
            "dma_addr": self.dma_addr,
            "dma_addr_hex": None if self.dma_addr is None else f"0x{self.dma_addr:x}",
            "dma": self.dma,
            "owner": self.owner,
        }


@dataclass(frozen=True)
class ModuleInfo:
    """The module's interface version, limits and current use."""

    api_version: int
    features: int
    page_size: int
    max_order: int
    max_pages: int
    pages_in_use: int
    nr_buffers: int
    dma_mask: int

    @property
    def dma_coherent(self) -> bool:
        return bool(self.features & uapi.FEAT_DMA_COHERENT)

    @property
    def can_flush(self) -> bool:
        return bool(self.features & uapi.FEAT_FLUSH)

    @property
    def can_clean(self) -> bool:
        return bool(self.features & uapi.FEAT_CLEAN)

    @property
    def can_inject(self) -> bool:
        return bool(self.features & uapi.FEAT_INJECT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "api_version": self.api_version,
            "page_size": self.page_size,
            "max_order": self.max_order,
            "max_pages": self.max_pages,
            "pages_in_use": self.pages_in_use,
            "nr_buffers": self.nr_buffers,
            "dma_coherent": self.dma_coherent,
            "flush": self.can_flush,
            "clean": self.can_clean,
            "inject": self.can_inject,
            "dma_mask_hex": f"0x{self.dma_mask:x}",
        }


class Device(Closing):
    """An open /dev/pagebuf. Buffers allocated with file_owned=True die with it."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.node = find_device(path)
        try:
            self._fd = os.open(self.node.devnode, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ModuleNotLoadedError(f"{NOT_LOADED} ({self.node.devnode} missing)") from None
        except OSError as exc:
            raise from_oserror(exc, f"open {self.node.devnode}") from None

    def fileno(self) -> int:
        if self._fd < 0:
            raise PagebufError("device is closed", E.EBADF)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def ioctl(self, request: int, arg: ctypes.Structure, what: str) -> None:
        """Issue one ioctl on a struct in place; failures raise PagebufError."""
        try:
            fcntl.ioctl(self.fileno(), request, arg, True)
        except OSError as exc:
            raise from_oserror(exc, what) from None

    def info(self) -> ModuleInfo:
        s = uapi.PagebufInfo()
        self.ioctl(uapi.IOC_GET_INFO, s, "module info")
        return ModuleInfo(
            s.api_version,
            s.features,
            s.page_size,
            s.max_order,
            s.max_pages,
            s.pages_in_use,
            s.nr_buffers,
            s.dma_mask,
        )

    def alloc(self, order: int, *, dma: bool = False, file_owned: bool = False) -> Buffer:
        if not 0 <= order < 2**32:
            raise from_oserror(OSError(E.EINVAL, "bad order"), f"alloc order {order}")
        flags = (uapi.BUF_DMA if dma else 0) | (uapi.BUF_FILE_OWNED if file_owned else 0)
        s = uapi.PagebufBuffer(order=order, flags=flags)
        self.ioctl(uapi.IOC_ALLOC, s, f"alloc order {order}")
        return Buffer.from_struct(s)

    def buffer(self, buf_id: int) -> Buffer:
        self._check_id(buf_id)
        s = uapi.PagebufBuffer(id=buf_id)
        self.ioctl(uapi.IOC_BUF_INFO, s, f"buffer {buf_id}")
        return Buffer.from_struct(s)

    def free(self, buf_id: int) -> None:
        self._check_id(buf_id)
        self.ioctl(uapi.IOC_FREE, uapi.PagebufFree(id=buf_id), f"free buffer {buf_id}")

    def free_all(self) -> int:
        """Free module-owned buffers and this file's own; return how many."""
        s = uapi.PagebufFree(flags=uapi.FREE_ALL)
        self.ioctl(uapi.IOC_FREE, s, "free all buffers")
        return int(s.count)

    def buffers(self) -> list[Buffer]:
        """Every buffer, in id order."""
        capacity = 0
        while True:
            array = (uapi.PagebufBuffer * max(capacity, 1))()
            s = uapi.PagebufList(
                buffers=ctypes.addressof(array) if capacity else 0,
                capacity=capacity,
                entry_size=ctypes.sizeof(uapi.PagebufBuffer),
            )
            self.ioctl(uapi.IOC_LIST, s, "list buffers")
            if s.total <= s.count:
                return [Buffer.from_struct(array[i]) for i in range(s.count)]
            capacity = s.total + 8  # the registry may grow between calls

    def set_caching(self, mode: int) -> None:
        """Caching attribute of this file's later mmap()s (uapi.CACHING_*)."""
        s = uapi.PagebufCaching(mode=mode)
        self.ioctl(uapi.IOC_SET_CACHING, s, f"set caching mode {mode}")

    def kread(self, buf_id: int, offset: int, length: int) -> bytes:
        """Read through the kernel's own cached linear mapping of the buffer."""
        out = ctypes.create_string_buffer(length)
        self._kaccess(uapi.IOC_KREAD, buf_id, offset, length, ctypes.addressof(out), "kread")
        return out.raw

    def kwrite(self, buf_id: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Write through the kernel's own cached linear mapping of the buffer."""
        src = (ctypes.c_char * len(data)).from_buffer_copy(data)
        self._kaccess(uapi.IOC_KWRITE, buf_id, offset, len(data), ctypes.addressof(src), "kwrite")

    def kchecksum(self, buf_id: int, offset: int = 0, length: int | None = None) -> int:
        """zlib.crc32 of the range as the kernel's cached mapping sees it."""
        if length is None:
            length = self.buffer(buf_id).size - offset
        s = self._kaccess(uapi.IOC_KCHECKSUM, buf_id, offset, length, 0, "kchecksum")
        return int(s.checksum)

    def kflush(
        self, buf_id: int, offset: int = 0, length: int | None = None, *, clean_only: bool = False
    ) -> None:
        """Clean and invalidate the range's CPU cache lines in the kernel's alias; with
        `clean_only`, write dirty lines back and leave them cached."""
        if length is None:
            length = self.buffer(buf_id).size - offset
        flags = uapi.KFLUSH_CLEAN if clean_only else 0
        verb = "kflush --clean" if clean_only else "kflush"
        self._kaccess(uapi.IOC_KFLUSH, buf_id, offset, length, 0, verb, flags)

    def inject(self, buf_id: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Debug only (module loaded with inject=1): write `data` through the kernel's
        cached alias and clean it to memory, as a write-back of stale lines would."""
        src = (ctypes.c_char * len(data)).from_buffer_copy(data)
        self._kaccess(uapi.IOC_INJECT, buf_id, offset, len(data), ctypes.addressof(src), "inject")

    def sync(self, buf_id: int, direction: int, offset: int = 0, length: int = 0) -> None:
        """dma_sync_single_range_for_cpu/_for_device (uapi.SYNC_*) on a DMA-mapped buffer."""
        self._check_id(buf_id)
        s = uapi.PagebufSync(id=buf_id, direction=direction, offset=offset, length=length)
        self.ioctl(uapi.IOC_SYNC, s, f"sync buffer {buf_id}")

    def _kaccess(
        self,
        request: int,
        buf_id: int,
        offset: int,
        length: int,
        data: int,
        verb: str,
        flags: int = 0,
    ) -> uapi.PagebufKaccess:
        self._check_id(buf_id)
        s = uapi.PagebufKaccess(id=buf_id, flags=flags, offset=offset, length=length, data=data)
        self.ioctl(request, s, f"{verb} buffer {buf_id} [{offset:#x}+{length:#x}]")
        return s

    @staticmethod
    def _check_id(buf_id: int) -> None:
        if not 0 < buf_id < 2**32:
            raise from_oserror(OSError(E.ENOENT, "bad id"), f"buffer {buf_id}")
