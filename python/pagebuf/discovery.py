"""Find /dev/pagebuf and its sysfs attributes through udev."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import NOT_LOADED, ModuleNotLoadedError

ENV_DEVICE = "PAGEBUF_DEVICE"


@dataclass(frozen=True)
class DeviceNode:
    """The misc device: its node in /dev and its directory in sysfs (None if unknown)."""

    devnode: Path
    sys_path: Path | None


def find_device(path: str | os.PathLike[str] | None = None) -> DeviceNode:
    """An explicit path (or $PAGEBUF_DEVICE) wins; otherwise ask udev for misc/pagebuf."""
    explicit = path or os.environ.get(ENV_DEVICE)
    if explicit:
        return DeviceNode(Path(explicit), None)
    import pyudev  # only here: an explicit path needs no udev

    try:
        dev = pyudev.Devices.from_name(pyudev.Context(), "misc", "pagebuf")
    except pyudev.DeviceNotFoundError:
        raise ModuleNotLoadedError(NOT_LOADED) from None
    devnode = dev.device_node or "/dev/pagebuf"
    return DeviceNode(Path(devnode), Path(dev.sys_path))
