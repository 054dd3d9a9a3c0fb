"""pagebuf: physical page buffers from the pagebuf kernel module, for userspace.

The names below are imported on first use (PEP 562), so that a command which needs only
a part of the package, and `python -m pagebuf`, start without the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Buffer": "device",
    "Device": "device",
    "ModuleInfo": "device",
    "InvalidRequestError": "errors",
    "LimitError": "errors",
    "ModuleNotLoadedError": "errors",
    "NoSuchBufferError": "errors",
    "PagebufError": "errors",
    "PermissionDeniedError": "errors",
}
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
assert sorted(_EXPORTS) == __all__

if TYPE_CHECKING:
    from .device import Buffer, Device, ModuleInfo
    from .errors import (
        InvalidRequestError,
        LimitError,
        ModuleNotLoadedError,
        NoSuchBufferError,
        PagebufError,
        PermissionDeniedError,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pagebuf' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
