"""Find /dev/pagebuf and its sysfs directory: from sysfs when the conventional node is
the misc device's, through udev otherwise (a rule may have named or placed it elsewhere)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .errors import NOT_LOADED, ModuleNotLoadedError

ENV_DEVICE = "PAGEBUF_DEVICE"
SYSFS = Path("/sys/class/misc/pagebuf")
DEVNODE = Path("/dev/pagebuf")


@dataclass(frozen=True)
class DeviceNode:
    """The misc device: its node in /dev and its directory in sysfs (None if unknown)."""

    devnode: Path
    sys_path: Path | None


def _from_sysfs() -> DeviceNode | None:
    """DEVNODE if it is the character device sysfs names: what devtmpfs makes, found
    without udev (whose library costs a second under emulation). None if it is not."""
    try:
        major, minor = map(int, (SYSFS / "dev").read_text().split(":"))
        st = os.stat(DEVNODE)
    except (OSError, ValueError):
        return None
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(major, minor):
        return DeviceNode(DEVNODE, SYSFS.resolve())
    return None


def find_device(path: str | os.PathLike[str] | None = None) -> DeviceNode:
    """An explicit path (or $PAGEBUF_DEVICE) wins; then DEVNODE if sysfs says it is the
    device; otherwise ask udev for misc/pagebuf."""
    explicit = path or os.environ.get(ENV_DEVICE)
    if explicit:
        return DeviceNode(Path(explicit), None)
    if not SYSFS.exists():
        raise ModuleNotLoadedError(NOT_LOADED)
    found = _from_sysfs()
    if found is not None:
        return found
    try:
        import pyudev  # only here: the usual case needs no udev

        dev = pyudev.Devices.from_name(pyudev.Context(), "misc", "pagebuf")
    except ImportError:  # no libudev (busybox, mdev): sysfs names the device, not its node
        return _without_udev()
    except pyudev.DeviceNotFoundError:
        raise ModuleNotLoadedError(NOT_LOADED) from None
    devnode = dev.device_node or str(DEVNODE)
    return DeviceNode(Path(devnode), Path(dev.sys_path))


def _without_udev() -> DeviceNode:
    """Where udev cannot be asked and DEVNODE is not the device: say how to name it."""
    try:
        number = (SYSFS / "dev").read_text().strip()
    except OSError:
        raise ModuleNotLoadedError(NOT_LOADED) from None
    what = "is another device" if DEVNODE.exists() else "does not exist"
    raise ModuleNotLoadedError(
        f"pagebuf is loaded (device {number}) but {DEVNODE} {what}, and udev cannot be asked "
        f"(no libudev): create the node (`mknod {DEVNODE} c {number.replace(':', ' ')}`), "
        f"or name it with --device or ${ENV_DEVICE}"
    )
