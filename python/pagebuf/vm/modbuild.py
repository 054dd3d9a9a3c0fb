"""Build kmod/pagebuf.ko for a guest kernel, out of the source tree.

Kbuild builds an external module in its own directory, so each kernel gets a copy of
the module sources in the cache; files are copied only when changed, which keeps
make's incremental build working.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

from .errors import VmError
from .kernels import GuestKernel


def _sync(src_root: Path, dest: Path) -> None:
    files = [src_root / "Kbuild", *sorted((src_root / "kmod").rglob("*.[ch]"))]
    files += sorted((src_root / "kmod").rglob("Kbuild"))
    for src in files:
        target = dest / src.relative_to(src_root)
        if target.exists() and filecmp.cmp(src, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def build_module(kernel: GuestKernel, src_root: Path, cache: Path) -> Path:
    """Compile the module against kernel.kdir; return the path of the .ko."""
    dest = cache / "kmod" / kernel.name / kernel.release
    _sync(src_root, dest)
    cmd = ["make", "-C", str(kernel.kdir), f"M={dest}", "modules"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise VmError(
            f"building pagebuf.ko for {kernel.release} failed:\n{proc.stdout}{proc.stderr}"
        )
    ko = dest / "kmod" / "pagebuf.ko"
    if not ko.is_file():
        raise VmError(f"make succeeded but {ko} is missing")
    return ko
