"""Which path reaches a buffer's bytes, and the guard that keeps writes inside buffers.

Paths ("via"):
    devmem    /dev/mem, O_SYNC unless cached: mmap, or read()/write() where x86 PAT
              refuses to mmap RAM. For RAM, read()/write() copy through the kernel's
              cached linear mapping: they are not an uncached alias, whatever O_SYNC says
              refuses to mmap RAM (method "auto" falls back by itself)
    mmap-uc   /dev/pagebuf mapped uncached, as /dev/mem O_SYNC maps RAM (arm64:
              Normal non-cacheable; x86: pgprot_noncached)
    mmap-wc   /dev/pagebuf mapped write-combining
    mmap-wb   /dev/pagebuf mapped write-back, like the kernel's own alias
    mmap-device  /dev/pagebuf mapped as device memory (pgprot_noncached: arm64
              Device-nGnRnE, where unaligned accesses and memset of zero fault)
"""

from __future__ import annotations

import errno as E
import sys

from . import uapi
from .device import Buffer, Device
from .discovery import find_device
from .errors import InvalidRequestError
from .physmem import PhysMem, PhysMemError

VIAS = ("devmem", "mmap-uc", "mmap-wc", "mmap-wb", "mmap-device")
METHODS = ("auto", "mmap", "rw")
_CACHING = {
    "mmap-uc": uapi.CACHING_UC,
    "mmap-wc": uapi.CACHING_WC,
    "mmap-wb": uapi.CACHING_WB,
    "mmap-device": uapi.CACHING_DEVICE,
}


class OutsideBuffersError(InvalidRequestError):
    """A physical range that no pagebuf buffer holds, touched without --force."""


def owning_buffer(dev: Device, phys: int, length: int) -> Buffer:
    """The buffer holding [phys, phys + length), or OutsideBuffersError."""
    for buf in dev.buffers():
        if buf.phys_addr <= phys and phys + length <= buf.phys_addr + buf.size:
            return buf
    raise OutsideBuffersError(
        f"0x{phys:x}+{length} is outside every pagebuf buffer: pagebuf touches only its "
        "own pages unless you pass --force (writing arbitrary memory can crash the machine)",
        E.EINVAL,
    )


def open_region(
    phys: int,
    size: int,
    *,
    via: str = "devmem",
    cached: bool = False,
    method: str = "auto",
    device_path: str | None = None,
    device: Device | None = None,
) -> PhysMem:
    """Map (or prepare read()/write() access to) [phys, phys + size) through `via`.
    `device`: map /dev/pagebuf through this open file, as its file-owned buffers need."""
    if via == "devmem":
        if method != "rw":
            try:
                return PhysMem(phys, size, path="/dev/mem", sync=not cached, method="mmap")
            except PhysMemError as exc:
                if method == "mmap" or exc.errno != E.EINVAL:
                    raise
                print(f"pagebuf: note: {exc.message}; using read()/write()", file=sys.stderr)
        return PhysMem(phys, size, path="/dev/mem", sync=not cached, method="rw")
    if via in _CACHING:
        node = device.node if device is not None else find_device(device_path)
        fd = device.fileno() if device is not None else None
        return PhysMem(phys, size, path=str(node.devnode), sync=False, method="mmap",
                       caching=_CACHING[via], fd=fd)  # fmt: skip
    raise InvalidRequestError(f"unknown access path {via!r}: one of {', '.join(VIAS)}", E.EINVAL)
