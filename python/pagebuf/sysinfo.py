"""Facts about this machine that several modules need, each read from where the kernel
publishes it; the functions that take a path read only under it (tests feed fake trees)."""

from __future__ import annotations

import os
from pathlib import Path

DT_ROOTS = (Path("/proc/device-tree"), Path("/sys/firmware/devicetree/base"))
ACPI_ROOT = Path("/sys/firmware/acpi/tables")
DMI_VENDOR = Path("/sys/class/dmi/id/sys_vendor")
QEMU_DT_COMPATIBLE = "linux,dummy-virt"  # QEMU's arm `virt` machine


def cache_line_size() -> int:
    """The CPU's data cache line size: sysfs, then sysconf, then 64."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index0/coherency_line_size")
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        pass
    try:
        return int(os.sysconf("SC_LEVEL1_DCACHE_LINESIZE")) or 64
    except (ValueError, OSError):
        return 64


def page_size() -> int:
    """The kernel's PAGE_SIZE (arm64 kernels are built with 4, 16 or 64 KiB pages)."""
    return int(os.sysconf("SC_PAGE_SIZE"))


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags (x86) or Features (arm64) line of /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def read_text(path: Path) -> str:
    """A file's text, or "" if it cannot be read."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def dt_root(roots: tuple[Path, ...] = DT_ROOTS) -> Path | None:
    """The flattened device tree the kernel booted with, if it booted with one."""
    return next((r for r in roots if r.is_dir()), None)


def dt_strings(path: Path) -> list[str]:
    """A device-tree string-list property (NUL-separated), e.g. `compatible`."""
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return [s.decode(errors="replace") for s in raw.split(b"\0") if s]


def dma_coherent_nodes(root: Path) -> list[str]:
    """Device-tree nodes under `root` that carry a `dma-coherent` property, as paths
    relative to the root, sorted. (Linux applies it to the node and its children.)"""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        if "dma-coherent" in files:
            rel = Path(dirpath).relative_to(root).as_posix()
            found.append("/" if rel == "." else "/" + rel)
    return sorted(found)


def vm_name(flags: set[str], dmi_vendor: str, dt_compatible: list[str]) -> str | None:
    """Which hypervisor or emulator this is, or None on bare metal: QEMU by its DMI
    vendor (x86, or arm64 booted through UEFI) or its `virt` machine's device tree
    (arm64, where DMI may be absent); any other by the x86 `hypervisor` flag."""
    vendor = dmi_vendor.strip()
    if "QEMU" in vendor or QEMU_DT_COMPATIBLE in dt_compatible:
        return "QEMU"
    if "hypervisor" in flags:
        return vendor or "hypervisor"
    return None
