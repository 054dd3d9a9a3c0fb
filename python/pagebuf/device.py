"""`Device`: an open /dev/pagebuf, and `Buffer`/`ModuleInfo`: what it reports."""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import os
from dataclasses import dataclass
from typing import Any

from . import __version__, dmadev, uapi
from .closing import Closing
from .discovery import find_device
from .errors import (
    KACCESS_EINVAL,
    NO_INJECT,
    NOT_LOADED,
    ORDER_TOO_HIGH,
    SYNC_EINVAL,
    InvalidRequestError,
    ModuleNotLoadedError,
    PagebufError,
    device_gone,
    device_refusal,
    dma_too_large,
    foreign_buffer,
    from_oserror,
)

DMA_UNLIMITED = 2**64 - 1  # dma_max_size when the device takes mappings of any size


@dataclass(frozen=True)
class Buffer:
    """One buffer as the module describes it. A DMA buffer's mapping: for `dma_device`
    ("bus:name"), or pagebuf's own device when None; `dma_info`: uapi.DEV_* facts about
    that device, `dma_mask` its mask (None from a module older than interface 4)."""

    id: int
    order: int
    flags: int
    phys_addr: int
    dma_addr: int | None
    size: int
    dma_dir: int = uapi.DMA_BIDIRECTIONAL
    dma_info: int = 0
    dma_mask: int | None = None
    dma_device: str | None = None

    @classmethod
    def from_struct(cls, s: uapi.PagebufBuffer) -> Buffer:
        if not s.flags & uapi.BUF_DMA:
            return cls(s.id, s.order, s.flags, s.phys_addr, None, s.size)
        return cls(s.id, s.order, s.flags, s.phys_addr, s.dma_addr, s.size, s.dma_dir,
                   s.dma_info, s.dma_mask or None, s.dma_device.decode() or None)  # fmt: skip

    @property
    def dma(self) -> bool:
        return bool(self.flags & uapi.BUF_DMA)

    @property
    def file_owned(self) -> bool:
        return bool(self.flags & uapi.BUF_FILE_OWNED)

    @property
    def bounced(self) -> bool:
        """The DMA mapping goes through a swiotlb bounce buffer: dma_addr is its slot."""
        return bool(self.flags & uapi.BUF_BOUNCED)

    @property
    def device_gone(self) -> bool:
        """The named device went away (unbound, rebound, removed): the mapping is undone."""
        return bool(self.flags & uapi.BUF_DEVICE_GONE)

    @property
    def dma_syncs(self) -> bool:
        """dma_need_sync(): the DMA API wants syncs around this mapping: cache maintenance
        (a non-coherent device), a bounce copy, or an IOMMU's own (it says yes for every
        IOMMU-translated device, coherent or not)."""
        return bool(self.dma_info & uapi.DEV_SYNC)

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
            "bounced": self.bounced,
            "owner": self.owner,
            **(self._dma_dict() if self.dma else {}),
        }

    def _dma_dict(self) -> dict[str, Any]:
        return {
            "dma_device": self.dma_device,
            "dma_dir": dmadev.DIRECTION_NAMES.get(self.dma_dir, str(self.dma_dir)),
            "dma_mask_hex": None if self.dma_mask is None else f"0x{self.dma_mask:x}",
            "dma_coherence": dmadev.coherence(self.dma_info),
            "dma_syncs": self.dma_syncs,
            "dma_iommu": dmadev.iommu(self.dma_info),
            "device_gone": self.device_gone,
        }


@dataclass(frozen=True)
class ModuleInfo:
    """The module's interface version, limits and current use. The last three fields
    came with interface version 3: `from_struct` derives the byte counts from the page
    counts for an older module and leaves dma_max_size 0 (not reported)."""

    api_version: int
    features: int
    page_size: int
    max_order: int
    max_pages: int
    pages_in_use: int
    nr_buffers: int
    dma_mask: int
    dma_max_size: int = 0
    max_bytes: int = 0
    bytes_in_use: int = 0

    @classmethod
    def from_struct(cls, s: uapi.PagebufInfo) -> ModuleInfo:
        max_bytes, in_use = s.max_bytes, s.bytes_in_use
        if s.api_version < 3:
            max_bytes, in_use = s.max_pages * s.page_size, s.pages_in_use * s.page_size
        return cls(s.api_version, s.features, s.page_size, s.max_order, s.max_pages,
                   s.pages_in_use, s.nr_buffers, s.dma_mask, s.dma_max_size, max_bytes,
                   in_use)  # fmt: skip

    def _has(self, feature: int) -> bool:
        return bool(self.features & feature)

    @property
    def dma_coherent(self) -> bool:
        return self._has(uapi.FEAT_DMA_COHERENT)

    @property
    def can_flush(self) -> bool:
        return self._has(uapi.FEAT_FLUSH)

    @property
    def can_clean(self) -> bool:
        return self._has(uapi.FEAT_CLEAN)

    @property
    def can_inject(self) -> bool:
        return self._has(uapi.FEAT_INJECT)

    @property
    def dma_bounce(self) -> bool:
        """DMA mappings of pagebuf's device go through swiotlb bounce buffers."""
        return self._has(uapi.FEAT_DMA_BOUNCE)

    @property
    def x86_pat(self) -> bool:
        """x86 with PAT on: uncached maps of RAM need x86_pat_alias=1 (pat_alias)."""
        return self._has(uapi.FEAT_X86_PAT)

    @property
    def pat_alias(self) -> bool:
        """Loaded with x86_pat_alias=1: UC, WC and DEVICE maps of RAM allowed under PAT."""
        return self._has(uapi.FEAT_PAT_ALIAS)

    @property
    def wc_is_uc(self) -> bool:
        """x86 booted nopat: write-combining maps are UC-."""
        return self._has(uapi.FEAT_WC_IS_UC)

    @property
    def maps_for_devices(self) -> bool:
        """ALLOC maps for a named device (interface 4): alloc --dma-device."""
        return self._has(uapi.FEAT_DMA_DEVICE)

    @property
    def uncached_refused(self) -> bool:
        """mmap UC/WC/DEVICE (and the O_SYNC default) is refused with EPERM here."""
        return self.x86_pat and not self.pat_alias

    @property
    def dma_limit(self) -> int | None:
        """The largest DMA mapping in bytes; None when unlimited or not reported."""
        return None if self.dma_max_size in (0, DMA_UNLIMITED) else self.dma_max_size

    def dma_refusal(self, order: int) -> str | None:
        """Why a DMA buffer of `order` cannot be mapped here (over dma_max_size), or None."""
        size = self.page_size << order
        if self.dma_limit is None or size <= self.dma_limit:
            return None
        return dma_too_large(order, size, self.dma_limit, self.dma_bounce)

    def notes(self) -> list[str]:
        """What limits the uses of this module here, in sentences (`pagebuf status`)."""
        return [n for n in (self._pat_note(), self._wc_note(), self._bounce_note()) if n]

    def _pat_note(self) -> str | None:
        if self.uncached_refused:
            return ("x86 PAT is on and pagebuf was loaded without x86_pat_alias=1: "
                    "uncached, write-combining and device maps of its buffers (--via "
                    "mmap-uc, mmap-wc, mmap-device, and an O_SYNC open) are refused "
                    "(EPERM); load it with x86_pat_alias=1 to allow them (it taints "
                    "the kernel)")  # fmt: skip
        if self.pat_alias:
            return ("loaded with x86_pat_alias=1: uncached and write-combining maps alias "
                    "RAM against PAT's one memory type per page (kernel tainted)")  # fmt: skip
        return None

    def _wc_note(self) -> str | None:
        if not self.wc_is_uc:
            return None
        return ("booted nopat: write-combining maps (--via mmap-wc) are UC- here, the same "
                "as mmap-uc")  # fmt: skip

    def _bounce_note(self) -> str | None:
        if not self.dma_bounce:
            return None
        limit = f"; at most {self.dma_limit} bytes per mapping" if self.dma_limit else ""
        return ("DMA mappings are bounced through swiotlb: dma_addr is a bounce slot, not "
                f"these pages, and the dma arm is skipped{limit}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "api_version": self.api_version,
            "page_size": self.page_size,
            "max_order": self.max_order,
            "max_pages": self.max_pages,
            "pages_in_use": self.pages_in_use,
            "max_bytes": self.max_bytes,
            "bytes_in_use": self.bytes_in_use,
            "nr_buffers": self.nr_buffers,
            "dma_coherent": self.dma_coherent,
            "flush": self.can_flush,
            "clean": self.can_clean,
            "inject": self.can_inject,
            "dma_mask_hex": f"0x{self.dma_mask:x}",
            "dma_max_size": self.dma_limit,
            "dma_bounce": self.dma_bounce,
            "x86_pat": self.x86_pat,
            "pat_alias": self.pat_alias,
            "wc_is_uc": self.wc_is_uc,
            "maps_for_devices": self.maps_for_devices,
        }


class Device(Closing):
    """An open /dev/pagebuf. Buffers allocated with file_owned=True die with it."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 readonly: bool = False) -> None:  # fmt: skip
        """`readonly`: open O_RDONLY; such a file can describe, read and map read-only,
        and every call that changes a buffer fails with EBADF."""
        self.node = find_device(path)
        mode = os.O_RDONLY if readonly else os.O_RDWR
        try:
            self._fd = os.open(self.node.devnode, mode | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ModuleNotLoadedError(f"{NOT_LOADED} ({self.node.devnode} missing)") from None
        except OSError as exc:
            raise from_oserror(exc, f"open {self.node.devnode}") from None
        try:
            self.api_version = self._check_api()
        except BaseException:
            self.close()
            raise

    def _check_api(self) -> int:
        """The module's interface version, refused if this library cannot speak it."""
        try:
            version = self.info().api_version
        except PagebufError as exc:
            if exc.errno != E.ENOTTY:
                raise
            raise ModuleNotLoadedError(
                f"{self.node.devnode} is not a pagebuf device (it does not answer GET_INFO)",
                E.ENOTTY,
            ) from None
        if version < 1:
            raise ModuleNotLoadedError(
                f"{self.node.devnode}: interface version {version}; pagebuf {__version__} "
                f"speaks versions 1 to {uapi.API_VERSION} (rebuild and reload the module)",
                E.EPROTO,
            )
        return version

    def fileno(self) -> int:
        if self._fd < 0:
            raise PagebufError("device is closed", E.EBADF)
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def ioctl(
        self,
        request: int,
        arg: ctypes.Structure,
        what: str,
        eperm: str | None = None,
        einval: str | None = None,
    ) -> None:
        """Issue one ioctl on a struct in place; failures raise PagebufError. `eperm`,
        `einval`: what those mean for this call (the errno's usual sentence otherwise)."""
        try:
            fcntl.ioctl(self.fileno(), request, arg, True)
        except OSError as exc:
            reason = {E.EPERM: eperm, E.EINVAL: einval}.get(exc.errno or 0)
            raise from_oserror(exc, what, reason) from None

    def info(self) -> ModuleInfo:
        s = uapi.PagebufInfo()
        self.ioctl(uapi.IOC_GET_INFO, s, "module info")
        return ModuleInfo.from_struct(s)

    def alloc(self, order: int, *, dma: bool = False, file_owned: bool = False,
              dma_device: str | None = None,
              dma_dir: int = uapi.DMA_BIDIRECTIONAL) -> Buffer:  # fmt: skip
        """A new buffer of 2^order pages. `dma`: map it for DMA, in direction `dma_dir`
        (uapi.DMA_*), for pagebuf's own device or for `dma_device` (a device's name, or
        "bus:name"), held by the module until the buffer goes (needs CAP_SYS_ADMIN)."""
        what = f"alloc order {order}"
        if not 0 <= order < 2**32:
            raise from_oserror(OSError(E.EINVAL, "bad order"), what)
        if (dma_device or dma_dir) and not dma:
            raise InvalidRequestError("a DMA device or direction needs a DMA buffer (--dma)",
                                      E.EINVAL, op=what)  # fmt: skip
        flags = (uapi.BUF_DMA if dma else 0) | (uapi.BUF_FILE_OWNED if file_owned else 0)
        s = uapi.PagebufBuffer(order=order, flags=flags, dma_dir=dma_dir)
        if dma_device:
            return self._alloc_for(s, dmadev.resolve(dma_device), what)
        try:
            self.ioctl(uapi.IOC_ALLOC, s, what, einval=ORDER_TOO_HIGH)
        except PagebufError as exc:
            if exc.errno != E.E2BIG:
                raise
            why = self.info().dma_refusal(order)  # the module's own limit, in numbers
            raise from_oserror(OSError(E.E2BIG, "too big"), what, why) from None
        return Buffer.from_struct(s)

    def _alloc_for(self, s: uapi.PagebufBuffer, device: str, what: str) -> Buffer:
        """ALLOC mapped for a named device ("bus:name")."""
        what = f"{what} for {device}"
        if self.api_version < 4:  # FEAT_DMA_DEVICE came with, and is always in, version 4
            raise InvalidRequestError(
                f"the loaded module (interface {self.api_version}) maps only for its own "
                "device; load one of interface 4 or later", E.EOPNOTSUPP, op=what)  # fmt: skip
        s.dma_device = device.encode()
        try:
            fcntl.ioctl(self.fileno(), uapi.IOC_ALLOC, s, True)
        except OSError as exc:
            raise from_oserror(exc, what, device_refusal(exc.errno or 0, device)) from None
        return Buffer.from_struct(s)

    def buffer(self, buf_id: int) -> Buffer:
        self._check_id(buf_id)
        s = uapi.PagebufBuffer(id=buf_id)
        self.ioctl(uapi.IOC_BUF_INFO, s, f"buffer {buf_id}")
        return Buffer.from_struct(s)

    def free(self, buf_id: int) -> None:
        self._check_id(buf_id)
        s = uapi.PagebufFree(id=buf_id)
        self.ioctl(uapi.IOC_FREE, s, f"free buffer {buf_id}", foreign_buffer(buf_id))

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
        self.ioctl(uapi.IOC_SET_CACHING, s, f"set caching mode {mode}",
                   einval="no such caching mode")  # fmt: skip

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
        try:
            self._kaccess(uapi.IOC_INJECT, buf_id, offset, len(data), ctypes.addressof(src),
                          "inject")  # fmt: skip
        except PagebufError as exc:
            if exc.errno != E.EPERM or self.info().can_inject:
                raise
            raise from_oserror(OSError(E.EPERM, "inject"), f"inject buffer {buf_id}",
                               NO_INJECT) from None  # fmt: skip

    def sync(self, buf_id: int, direction: int, offset: int = 0, length: int = 0) -> None:
        """dma_sync_single_range_for_cpu/_for_device (uapi.SYNC_*) on a DMA-mapped buffer."""
        self._check_id(buf_id)
        s = uapi.PagebufSync(id=buf_id, direction=direction, offset=offset, length=length)
        try:
            self.ioctl(uapi.IOC_SYNC, s, f"sync buffer {buf_id}", foreign_buffer(buf_id),
                       SYNC_EINVAL)  # fmt: skip
        except PagebufError as exc:
            if exc.errno != E.ENODEV:
                raise
            raise from_oserror(OSError(E.ENODEV, "gone"), f"sync buffer {buf_id}",
                               device_gone(buf_id)) from None  # fmt: skip

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
        where = f"{verb} buffer {buf_id} [{offset:#x}+{length:#x}]"
        self.ioctl(request, s, where, foreign_buffer(buf_id), KACCESS_EINVAL)
        return s

    @staticmethod
    def _check_id(buf_id: int) -> None:
        if not 0 < buf_id < 2**32:
            raise from_oserror(OSError(E.ENOENT, "bad id"), f"buffer {buf_id}")
