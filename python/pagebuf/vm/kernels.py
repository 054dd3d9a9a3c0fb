"""Which guest kernel to boot, and the build tree to compile the module against."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import VmError


@dataclass(frozen=True)
class GuestKernel:
    """A bootable kernel image and the build tree its modules are compiled against."""

    name: str
    image: Path
    kdir: Path
    release: str
    append: tuple[str, ...] = field(default=())


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def debian_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> GuestKernel:
    """The newest installed Debian kernel whose headers are installed too."""
    candidates = []
    for image in boot.glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        kdir = modules / release / "build"
        if kdir.is_dir():
            candidates.append((release, image, kdir))
    if not candidates:
        raise VmError(
            "no Debian kernel with headers found in /boot and /lib/modules: "
            "run `make setup` (installs linux-image-amd64 and linux-headers-amd64)"
        )
    release, image, kdir = max(candidates, key=lambda c: _release_key(c[0]))
    return GuestKernel(name="debian", image=image, kdir=kdir, release=release)


def tree_kernel(tree: Path) -> GuestKernel:
    """A kernel built in a source tree (make bzImage modules_prepare)."""
    image = tree / "arch" / "x86" / "boot" / "bzImage"
    release_file = tree / "include" / "config" / "kernel.release"
    if not image.is_file() or not release_file.is_file():
        raise VmError(f"{tree} is not a built kernel tree (no bzImage or kernel.release)")
    release = release_file.read_text().strip()
    return GuestKernel(name=tree.name, image=image, kdir=tree, release=release)


def resolve_kernel(spec: str) -> GuestKernel:
    """Turn KERNEL=... into a kernel: `debian`, `custom` or a built kernel tree's path."""
    if spec in ("", "debian"):
        return debian_kernel()
    if spec in ("custom", "custom-pat"):
        from .kbuild import custom_kernel  # builds it on first use
        from .paths import cache_root

        kernel = custom_kernel(cache_root())
        # The same kernel booted with PAT on: x86 then refuses to mmap RAM through
        # /dev/mem even without STRICT_DEVMEM, which tests/vm/test_pat.py checks.
        return replace(kernel, name="custom-pat", append=()) if spec == "custom-pat" else kernel
    path = Path(spec)
    if path.is_dir():
        return tree_kernel(path)
    raise VmError(
        f"unknown guest kernel {spec!r}: use `debian`, `custom`, `custom-pat` or a built "
        "kernel tree"
    )
