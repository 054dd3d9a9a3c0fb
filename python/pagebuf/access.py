"""Which path reaches a buffer's bytes, and the guard that keeps writes inside buffers.

Paths ("via"):
    auto      devmem where /dev/mem reaches RAM, else mmap-uc (CONFIG_STRICT_DEVMEM, no
              /dev/mem, or with method "mmap" x86 PAT refusing the mapping)
    devmem    /dev/mem, O_SYNC unless cached: mmap, or read()/write() where x86 PAT
              refuses to mmap RAM (method "auto" falls back by itself, and says so)
    devmem-rw /dev/mem read()/write(): for RAM they copy through the kernel's cached
              linear mapping, so they are not an uncached alias, whatever O_SYNC says
    mmap-uc   /dev/pagebuf mapped uncached, as /dev/mem O_SYNC maps RAM (arm64:
              Normal non-cacheable; x86: pgprot_noncached)
    mmap-wc   /dev/pagebuf mapped write-combining
    mmap-wb   /dev/pagebuf mapped write-back, like the kernel's own alias
    mmap-device  /dev/pagebuf mapped as device memory (pgprot_noncached: arm64
              Device-nGnRnE, where unaligned accesses and memset of zero fault)
"""

from __future__ import annotations

import errno as E
from typing import Any

from . import uapi
from .device import Buffer, Device
from .discovery import find_device
from .errors import InvalidRequestError
from .physmem import PhysMem, PhysMemError

VIAS = ("auto", "devmem", "mmap-uc", "mmap-wc", "mmap-wb", "mmap-device")  # the `mem` commands'
AUTO_NOTE = (
    "note: /dev/mem does not reach RAM here; using /dev/pagebuf mapped uncached (--via mmap-uc)"
)
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
) -> tuple[PhysMem, str]:
    """Map (or prepare read()/write() access to) [phys, phys + size) through `via`; return
    the window and the name of the path it really took (USER_PATHS): method "auto" on
    /dev/mem falls back to read()/write() (`devmem-rw`) where x86 PAT refuses the mmap.
    Never prints: the caller says what the user must hear. `device`: map /dev/pagebuf
    through this open file, as its file-owned buffers need."""
    if via not in (*USER_PATHS, "devmem", "auto"):
        raise InvalidRequestError(f"unknown access path {via!r}: one of {', '.join(VIAS)}",
                                  E.EINVAL)  # fmt: skip
    if via == "auto":
        # /dev/mem refused: STRICT_DEVMEM (EPERM), none (ENOENT), no CAP_SYS_RAWIO (EACCES);
        # an mmap that must not fall back to read()/write(): x86 PAT's EINVAL too.
        refused = (E.EPERM, E.EACCES, E.ENOENT) + ((E.EINVAL,) if method == "mmap" else ())
        try:
            return open_region(phys, size, via="devmem", cached=cached, method=method)
        except PhysMemError as exc:
            if exc.errno not in refused:
                raise
        via = "mmap-uc"
    if via == "devmem-rw":
        via, method = "devmem", "rw"
    if via == "devmem":
        if method != "rw":
            try:
                mem = PhysMem(phys, size, path="/dev/mem", sync=not cached, method="mmap")
                return mem, "devmem"
            except PhysMemError as exc:
                if method == "mmap" or exc.errno != E.EINVAL:
                    raise
        return PhysMem(phys, size, path="/dev/mem", sync=not cached, method="rw"), "devmem-rw"
    node = device.node if device is not None else find_device(device_path)
    mem = PhysMem(phys, size, path=str(node.devnode), sync=False, method="mmap",
                  caching=_CACHING[via], device=device)  # fmt: skip
    return mem, via


FALLBACK_NOTE = (
    "note: x86 PAT refuses to mmap RAM through /dev/mem; using read()/write(), which copy "
    "through the kernel's cached mapping"
)


# The user paths an experiment (pagebuf run, compare) writes and checks through, and what
# each really is. Only `devmem-rw` and `mmap-wb` go through the CPU cache, and an
# experiment takes them only when asked for by name.
USER_PATHS: dict[str, dict[str, Any]] = {
    "devmem": {"path": "/dev/mem", "method": "mmap", "o_sync": True, "caching": "uncached"},
    "devmem-rw": {"path": "/dev/mem", "method": "rw", "o_sync": True,
                  "caching": "cached (read()/write() copy through the kernel's own mapping)"},
    "mmap-uc": {"path": "/dev/pagebuf", "method": "mmap", "o_sync": False, "caching": "uc"},
    "mmap-wc": {"path": "/dev/pagebuf", "method": "mmap", "o_sync": False, "caching": "wc"},
    "mmap-wb": {"path": "/dev/pagebuf", "method": "mmap", "o_sync": False,
                "caching": "wb (cached, like the kernel's alias)"},
    "mmap-device": {"path": "/dev/pagebuf", "method": "mmap", "o_sync": False,
                    "caching": "device"},
}  # fmt: skip
RUN_VIAS = ("auto", *USER_PATHS)
DEVMEM_PAT = (
    "--via devmem: x86 PAT refuses to mmap RAM through /dev/mem, and read()/write() would "
    "copy through the kernel's cached mapping, so the run would compare the kernel's view "
    "with itself: use --via mmap-uc (pagebuf loaded x86_pat_alias=1), or --via devmem-rw "
    "to test that cached path by name"
)


def describe_path(via: str) -> dict[str, Any]:
    """What a taken user path is, as its records say: name, file, method, O_SYNC, caching."""
    return {"via": via, **USER_PATHS[via]}
