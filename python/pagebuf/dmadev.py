"""The device a buffer is mapped for: names as the module takes them ("bus:name"), found
from a bare name in sysfs, and what a mapping says about the device, in words."""

from __future__ import annotations

import errno as E
import os
from pathlib import Path

from . import uapi
from .errors import InvalidRequestError, NoSuchDeviceError

# The buses the module looks devices up on (pagebuf_buses[] in kmod/pagebuf.c).
BUSES = ("platform", "pci", "amba")
DIRECTIONS = {
    "bidirectional": uapi.DMA_BIDIRECTIONAL,
    "to-device": uapi.DMA_TO_DEVICE,
    "from-device": uapi.DMA_FROM_DEVICE,
}
DIRECTION_NAMES = {v: k for k, v in DIRECTIONS.items()}


def resolve(name: str, sysfs: Path = Path("/sys")) -> str:
    """ "bus:name" for `name`, which is either that already or a device's name as in
    /sys/bus/<bus>/devices/ (13000000.gpu, 0000:00:02.0). Refuses, with what to use
    instead, a name on no bus, on two, or on a bus the module does not map for."""
    bus, sep, rest = name.partition(":")
    if sep and bus in BUSES:
        if not rest or len(name.encode()) >= uapi.DEV_NAME_LEN:
            raise InvalidRequestError(f"--dma-device {name!r}: not a device name", E.EINVAL)
        return name
    if len(name.encode()) + len("platform:") >= uapi.DEV_NAME_LEN or "/" in name or not name:
        raise InvalidRequestError(f"--dma-device {name!r}: not a device name", E.EINVAL)
    ours = [b for b in BUSES if (sysfs / "bus" / b / "devices" / name).exists()]
    if len(ours) == 1:
        return f"{ours[0]}:{name}"
    if ours:
        choices = ", ".join(f"{b}:{name}" for b in ours)
        raise InvalidRequestError(f"--dma-device {name}: on {len(ours)} buses; name one of "
                                  f"{choices}", E.EINVAL)  # fmt: skip
    elsewhere = sorted((sysfs / "bus").glob(f"*/devices/{name}"))
    if elsewhere:
        raise InvalidRequestError(_other_bus(name, elsewhere[0]), E.EINVAL)
    raise NoSuchDeviceError(
        f"--dma-device {name}: no such device in /sys/bus/{{{','.join(BUSES)}}}/devices/",
        E.ENODEV,
    )


def _other_bus(name: str, link: Path) -> str:
    """Why a device on another bus (virtio, usb, ...) is not one to map for, and which
    device up its path does the DMA, if one is on a bus pagebuf takes."""
    bus = link.parent.parent.name
    text = f"--dma-device {name} is a {bus} device: pagebuf maps for {', '.join(BUSES)} devices"
    path = Path(os.path.realpath(link))
    for parent in path.parents:
        subsystem = parent / "subsystem"
        if subsystem.is_symlink() and os.path.basename(os.readlink(subsystem)) in BUSES:
            return (
                f"{text}; its DMA is done by {os.path.basename(os.readlink(subsystem))}:"
                f"{parent.name}, its parent"
            )
    return text


def coherence(info: int) -> str:
    """What the firmware (device tree dma-coherent, ACPI _CCA) says of the device."""
    if info & uapi.DEV_COHERENT:
        return "coherent"
    if info & uapi.DEV_NONCOHERENT:
        return "non-coherent"
    return "unknown"


def iommu(info: int) -> str:
    """Whether an IOMMU stands between the device and memory, and what it does."""
    if info & uapi.DEV_TRANSLATED:
        return "translates"
    if info & uapi.DEV_IOMMU:
        return "identity (passthrough)"
    return "none"
