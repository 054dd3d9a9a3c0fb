"""pagebuf: physical page buffers from the pagebuf kernel module, for userspace."""

from __future__ import annotations

__version__ = "0.1.0"

from .device import Buffer, Device, ModuleInfo
from .errors import (
    InvalidRequestError,
    LimitError,
    ModuleNotLoadedError,
    NoSuchBufferError,
    PagebufError,
    PermissionDeniedError,
)

__all__ = [
    "Buffer",
    "Device",
    "InvalidRequestError",
    "LimitError",
    "ModuleInfo",
    "ModuleNotLoadedError",
    "NoSuchBufferError",
    "PagebufError",
    "PermissionDeniedError",
]
