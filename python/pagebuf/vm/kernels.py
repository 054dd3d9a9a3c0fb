"""Which guest kernel to boot, and the build tree to compile the module against."""

from __future__ import annotations

import re
from collections.abc import Callable
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
    arch: str = "x86_64"  # the guest's architecture: "x86_64" or "arm64"


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


def debian_rootfs_kernel(root: Path, arch: str = "arm64") -> GuestKernel:
    """The newest Debian kernel in a guest root filesystem (pagebuf.vm.rootfs) whose
    headers are there too: /boot/vmlinuz-* and /usr/src/linux-headers-* of `root`."""
    candidates = []
    for image in (root / "boot").glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        kdir = root / "usr" / "src" / f"linux-headers-{release}"
        if (kdir / "Makefile").is_file():
            candidates.append((release, image, kdir))
    if not candidates:
        raise VmError(
            f"no Debian kernel with headers in the {arch} root filesystem {root}: "
            f"remove it and run `make rootfs ARCH={arch}`"
        )
    release, image, kdir = max(candidates, key=lambda c: _release_key(c[0]))
    return GuestKernel(name="debian", image=image, kdir=kdir, release=release, arch=arch)


_TREE_IMAGES = (  # the first one a tree holds says which architecture it was built for
    ("x86_64", Path("arch/x86/boot/bzImage")),
    ("arm64", Path("arch/arm64/boot/Image")),
)


def _tree_image(tree: Path) -> tuple[str, Path] | None:
    """The architecture and boot image of a built tree: x86's bzImage or arm64's Image."""
    for arch, rel in _TREE_IMAGES:
        if (tree / rel).is_file():
            return arch, tree / rel
    return None


def tree_kernel(tree: Path) -> GuestKernel:
    """A kernel built in a source tree (make bzImage, or ARCH=arm64 Image, modules_prepare)."""
    found = _tree_image(tree)
    release_file = tree / "include" / "config" / "kernel.release"
    if found is None or not release_file.is_file():
        raise VmError(
            f"{tree} is not a built kernel tree (no bzImage or arm64 Image, or no kernel.release)"
        )
    arch, image = found
    release = release_file.read_text().strip()
    return GuestKernel(name=tree.name, image=image, kdir=tree, release=release, arch=arch)


# The x86 test kernel booted otherwise: why it is x86 only, and its command line made
# from the test kernel's own (`nopat`, kbuild.BOOT_APPEND).
X86_VARIANTS: dict[str, tuple[str, Callable[[tuple[str, ...]], tuple[str, ...]]]] = {
    # PAT on: x86 then refuses to mmap RAM through /dev/mem even without STRICT_DEVMEM,
    # which tests/vm/test_pat.py checks.
    "custom-pat": ("PAT is an x86 feature", lambda append: tuple(a for a in append
                                                                 if a != "nopat")),
    # Every streaming DMA mapping bounced through swiotlb, as in a confidential guest,
    # which tests/vm/test_swiotlb.py checks.
    "custom-swiotlb": ("its swiotlb=force suite runs on x86",
                       lambda append: (*append, "swiotlb=force")),
    # The test kernel built with KASAN, kmemleak, lockdep and atomic-sleep checks
    # (kbuild.DEBUG_ITEMS), booted as the test kernel is.
    "debug": ("its debug options cost too much emulated on arm64", lambda append: append),
}  # fmt: skip


def _custom(spec: str, arch: str) -> GuestKernel:
    """The cached test kernel (built on first use), or one of its x86 boot variants."""
    if spec in X86_VARIANTS and arch != "x86_64":
        raise VmError(f"KERNEL={spec} is x86 only ({X86_VARIANTS[spec][0]}): "
                      f"use KERNEL=custom on {arch}")  # fmt: skip
    from .kbuild import custom_kernel
    from .paths import cache_root

    kernel = custom_kernel(cache_root(), arch=arch, debug=spec == "debug")
    if spec not in X86_VARIANTS:
        return kernel
    return replace(kernel, name=spec, append=X86_VARIANTS[spec][1](kernel.append))


def resolve_kernel(spec: str, arch: str = "x86_64", *, rootfs: Path | None = None) -> GuestKernel:
    """Turn KERNEL=... into a kernel for `arch`: `debian`, `custom` or a built tree's path.

    On arm64 `debian` is the kernel of the guest's root filesystem (`rootfs`, by default
    the cached one, built first if missing)."""
    from .paths import normalize_arch

    arch = normalize_arch(arch)
    if spec in ("", "debian"):
        if arch == "x86_64":
            return debian_kernel()
        if rootfs is None:
            from .paths import cache_root
            from .rootfs import ensure_rootfs  # builds it on first use

            rootfs = ensure_rootfs(cache_root())
        return debian_rootfs_kernel(rootfs, arch)
    if spec in ("custom", *X86_VARIANTS):
        return _custom(spec, arch)
    path = Path(spec)
    if path.is_dir():
        kernel = tree_kernel(path)
        if kernel.arch != arch:
            raise VmError(
                f"{path} is a built {kernel.arch} kernel, not {arch}: use ARCH={kernel.arch}"
            )
        return kernel
    raise VmError(
        f"unknown guest kernel {spec!r}: use `debian`, `custom`, `custom-pat`, "
        "`custom-swiotlb`, `debug` or a built kernel tree"
    )
