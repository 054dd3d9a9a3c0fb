"""pagebuf's exceptions. Each is also the built-in category it belongs to (as pyudev's
are): PermissionError, LookupError, MemoryError, ValueError; and carries the errno of
the failing call, the call, and a sentence a user can act on. The exit codes the CLI
leaves with are the CLI's (cli.EXIT_CODES).
"""

from __future__ import annotations

import errno as E


class PagebufError(Exception):
    """Base class. `errno`: the failing call's errno (or None); `op`: that call, e.g.
    "free buffer 42" (or None); `reason`: why, in words; `message`: "op: reason"."""

    def __init__(self, message: str, errno: int | None = None, *, op: str | None = None) -> None:
        super().__init__(message if op is None else f"{op}: {message}")
        self.errno = errno
        self.op = op
        self.reason = message
        self.message = str(self)


class ModuleNotLoadedError(PagebufError, LookupError):
    """No pagebuf device: the module is not loaded, or the node is not pagebuf's."""


class NoSuchDeviceError(PagebufError, LookupError):
    """No device of that name to map a buffer for (alloc --dma-device), or it went away."""


class PermissionDeniedError(PagebufError, PermissionError):
    """No CAP_SYS_RAWIO, a read-only file, another file's buffer, injection off, x86 PAT."""


class NoSuchBufferError(PagebufError, LookupError):
    """No buffer of that id (freed, or never allocated)."""


class LimitError(PagebufError, MemoryError):
    """Out of memory, or over the module's max_bytes or the DMA mapping size limit."""


class InvalidRequestError(PagebufError, ValueError):
    """A flag, field or range the module (or the library, before asking) refuses."""


NOT_LOADED = "pagebuf module not loaded: run `sudo insmod kmod/pagebuf.ko`"
NO_RAWIO = "permission denied (needs root with CAP_SYS_RAWIO)"
NOT_WRITABLE = "needs /dev/pagebuf opened for writing (this file was opened read-only)"
NO_INJECT = "the module was not loaded with inject=1"
PAT_ALIAS = (
    "x86 PAT: load pagebuf with x86_pat_alias=1 to map RAM uncached, write-combining or "
    "as device memory (it taints the kernel), or map it write-back (--via mmap-wb)"
)
ORDER_TOO_HIGH = "order above the module's max_order (see `pagebuf status`), or bad flags"
SYNC_EINVAL = "not a DMA-mapped buffer (alloc --dma), or a direction or range outside it"
KACCESS_EINVAL = "range outside the buffer, or flags this call does not take"
DMA_BOUNCED = (
    "DMA is bounced through swiotlb here: a device would write the bounce buffer at "
    "dma_addr, not these pages; sync_for_cpu would copy it over the user's writes"
)

_CLASSES: dict[int, type[PagebufError]] = {
    E.EPERM: PermissionDeniedError,
    E.EACCES: PermissionDeniedError,
    E.EBADF: PermissionDeniedError,
    E.ENOENT: NoSuchBufferError,
    E.ENOMEM: LimitError,
    E.E2BIG: LimitError,
    E.EINVAL: InvalidRequestError,
    E.ENOTTY: InvalidRequestError,
    E.EOPNOTSUPP: InvalidRequestError,
    E.ENODEV: NoSuchDeviceError,
}
_REASONS = {
    E.EPERM: NO_RAWIO,
    E.EACCES: NO_RAWIO,
    E.EBADF: NOT_WRITABLE,
    E.ENOENT: "no such buffer",
    E.ENOMEM: "out of memory or over the module's max_bytes limit (see `pagebuf status`)",
    E.E2BIG: "above the largest DMA mapping here (see dma_max_size in `pagebuf status`)",
    E.EINVAL: "invalid request (a flag, field or range the module refuses)",
    E.ENOTTY: "the loaded module does not know this request (version mismatch?)",
    E.ENODEV: "no such device, or it went away",
}


def foreign_buffer(buf_id: int) -> str:
    """Why a buffer allocated file-owned by another open file cannot be touched here."""
    return f"buffer {buf_id} belongs to another open file (file-owned: only that file reaches it)"


def dma_too_large(order: int, size: int, limit: int, bounced: bool) -> str:
    """Why a DMA buffer of `order` (`size` bytes) cannot be mapped: over dma_max_size."""
    why = "swiotlb bounce buffering" if bounced else "dma_max_mapping_size() of pagebuf's device"
    where = f"the largest DMA mapping here ({limit} bytes: {why})"
    return f"order {order} is {size} bytes, above {where}"


def device_refusal(code: int, device: str) -> str | None:
    """Why ALLOC refused to map for `device` ("bus:name"), by errno; None: the usual."""
    return {
        E.ENODEV: f"no device {device} (removed, or never there: see /sys/bus/*/devices/)",
        E.ENXIO: f"no driver is bound to {device}: the kernel sets a device's DMA up when "
        "its driver binds",
        E.EOPNOTSUPP: f"{device} does no DMA (it has no DMA mask)",
        E.EBUSY: f"{device}'s IOMMU domain belongs to its driver (VFIO?), not to the DMA API",
        E.EPERM: f"mapping for another device ({device}) needs CAP_SYS_ADMIN",
        E.EINVAL: f"{device}: the module maps for platform, pci and amba devices only, or "
        "the order is above its max_order",
        E.E2BIG: f"above the largest DMA mapping {device} takes (dma_max_mapping_size())",
    }.get(code)


def device_gone(buf_id: int) -> str:
    """Why SYNC found no mapping: the named device went away (PAGEBUF_BUF_DEVICE_GONE)."""
    return (f"buffer {buf_id}'s device went away (its driver was unbound or rebound, or it "
            "was removed): the DMA mapping was undone; free the buffer")  # fmt: skip


def from_oserror(exc: OSError, what: str, reason: str | None = None) -> PagebufError:
    """Turn an OSError from `what` (e.g. "alloc order 11") into the right PagebufError;
    `reason` replaces the errno's usual explanation when the caller knows better."""
    code = exc.errno or 0
    text = reason or _REASONS.get(code) or exc.strerror or E.errorcode.get(code, str(code))
    return _CLASSES.get(code, PagebufError)(text, exc.errno, op=what)
