"""Facts about this CPU that several modules need."""

from __future__ import annotations

import os
from pathlib import Path


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


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags (x86) or Features (arm64) line of /proc/cpuinfo."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()
