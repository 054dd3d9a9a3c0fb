"""The user's view of a buffer against the kernel's, page by page (`compare-views`).

The user's bytes come from whatever path the caller read them through; the kernel's are
its cached linear mapping, checksummed in the kernel (KCHECKSUM: zlib's CRC-32, so the
two can be compared without copying the kernel's view out).
"""

from __future__ import annotations

import errno as E
import zlib
from dataclasses import asdict, dataclass
from typing import Any

from . import uapi
from .device import Buffer, Device
from .errors import DMA_BOUNCED, InvalidRequestError


@dataclass(frozen=True)
class PageViews:
    page: int
    phys_addr: int
    user_crc32: int
    kernel_crc32: int

    @property
    def same(self) -> bool:
        return self.user_crc32 == self.kernel_crc32

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "same": self.same}


def hand_back(dev: Device, buf: Buffer) -> None:
    """dma_sync_single_for_cpu before reading, as a driver would; refused where DMA is
    bounced, since the sync would copy the bounce slot over the pages."""
    if buf.bounced:
        raise InvalidRequestError(f"compare-views {buf.id} --sync: {DMA_BOUNCED}", E.EINVAL)
    dev.sync(buf.id, uapi.SYNC_FOR_CPU)


def compare(dev: Device, buf: Buffer, user: bytes | bytearray | memoryview) -> list[PageViews]:
    """Each page of `buf`: the CRC-32 of the user's bytes and of the kernel's view."""
    page = dev.info().page_size
    return [
        PageViews(
            i // page,
            buf.phys_addr + i,
            zlib.crc32(user[i : i + page]),
            dev.kchecksum(buf.id, i, page),
        )  # fmt: skip
        for i in range(0, buf.size, page)
    ]
