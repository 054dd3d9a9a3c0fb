"""Build the project's test kernels: Debian's linux-source-6.12 without STRICT_DEVMEM.

Debian's own kernel sets CONFIG_STRICT_DEVMEM=y, which keeps RAM out of /dev/mem; the
/dev/mem tests need a kernel without it. The tree is configured for the VM by
virtme-ng (`vng --kconfig`) plus CONFIG_ITEMS, built once, and kept in the cache under
a key made of the source package's version and the config items, so a changed input
builds a new kernel and an unchanged one is reused. The guest boots it with `nopat`:
with PAT on, x86 refuses to mmap RAM through /dev/mem even without STRICT_DEVMEM.

`debug=True` builds the x86 kernel that notices what the module gets wrong: KASAN,
kmemleak, lockdep and atomic-sleep checks (DEBUG_ITEMS) on top of the test kernel's items,
DMA-API debugging and DEBUG_VM among them. Under emulation they make the kernel about four
times slower (a Python start over 9p: 28 s instead of 7.5), so the module's own tests, the
fuzzer and the stress run there, and the whole suite on the test kernel. It starts from
allnoconfig plus X86_BASE_CONFIG, what QEMU's q35 machine and virtme-ng's guest need, as
the arm64 kernel does: no distribution's worth of drivers to compile under KASAN.

`arch="arm64"` cross-builds the same kernel for QEMU's `virt` machine with
aarch64-linux-gnu-gcc. virtme-ng's arm64 config is arm64's defconfig, every SoC
platform's drivers included (35 minutes on 2 cores), so this one starts from
allnoconfig instead and adds ARM64_BASE_CONFIG, what the `virt` machine and virtme-ng's
guest need, then the same test aids (ARM64_CONFIG_ITEMS). It is cached under its own key.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import VmError
from .kernels import GuestKernel, tree_kernel
from .paths import normalize_arch

SOURCE_PACKAGE = "linux-source-6.12"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
CONFIG_ITEMS = (
    "CONFIG_DEVMEM=y",
    "CONFIG_STRICT_DEVMEM=n",
    "CONFIG_IO_STRICT_DEVMEM=n",
    "CONFIG_MODULES=y",
    "CONFIG_MODULE_UNLOAD=y",
    "CONFIG_MODULE_SIG=n",
    "CONFIG_X86_PAT=y",
    # Test aids: the page tables of a mapping (caching bits), DMA-API misuse, VM checks.
    "CONFIG_PTDUMP_DEBUGFS=y",
    "CONFIG_DMA_API_DEBUG=y",
    "CONFIG_DEBUG_VM=y",
    "CONFIG_DEBUG_INFO_NONE=y",
    "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=n",
    "CONFIG_DEBUG_INFO_DWARF4=n",
    "CONFIG_DEBUG_INFO_DWARF5=n",
)
# The debug kernel's additions: out-of-bounds and use-after-free (KASAN), leaks
# (kmemleak, scanned on demand by the suite, not by a thread that costs the emulator
# CPU), lock order (lockdep) and sleeping in atomic context. x86 only: arm64's emulation
# is slower still, and CI's time does not allow a third kernel build.
DEBUG_ITEMS = (
    "CONFIG_KASAN=y",
    "CONFIG_KASAN_GENERIC=y",
    "CONFIG_DEBUG_KMEMLEAK=y",
    "CONFIG_DEBUG_KMEMLEAK_AUTO_SCAN=n",
    "CONFIG_DEBUG_KMEMLEAK_DEFAULT_OFF=n",
    "CONFIG_PROVE_LOCKING=y",
    "CONFIG_DEBUG_ATOMIC_SLEEP=y",
)
# What virtme-ng's guest needs of either architecture's allnoconfig kernel: the root and
# shared directories over 9p, udev's netlink and inotify, devtmpfs, tmpfs, overlayfs for
# its writable overlays, debugfs.
GUEST_NET = (
    "CONFIG_NET=y",
    "CONFIG_UNIX=y",
    "CONFIG_PACKET=y",
    "CONFIG_INET=y",
    "CONFIG_IPV6=n",
    "CONFIG_NETWORK_FILESYSTEMS=y",
    "CONFIG_NET_9P=y",
    "CONFIG_NET_9P_VIRTIO=y",
    "CONFIG_9P_FS=y",
)
GUEST_FS = (
    "CONFIG_OVERLAY_FS=y",
    "CONFIG_DEVTMPFS=y",
    "CONFIG_DEVTMPFS_MOUNT=y",
    "CONFIG_TMPFS=y",
    "CONFIG_TMPFS_XATTR=y",  # virtme-ng's overlays have their upper dirs on tmpfs
    "CONFIG_TMPFS_POSIX_ACL=y",
    "CONFIG_INOTIFY_USER=y",
    "CONFIG_DEBUG_KERNEL=y",  # PTDUMP_DEBUGFS and DEBUG_VM depend on it
    "CONFIG_DEBUG_FS=y",
    "CONFIG_MAGIC_SYSRQ=y",
    "CONFIG_PRINTK_TIME=y",
)
# On top of x86's allnoconfig (EXPERT off, so the basic syscalls, /proc, sysfs, printk
# and the block layer stay on), for QEMU's q35 machine booted by virtme-ng.
X86_BASE_CONFIG = (
    "CONFIG_64BIT=y",
    "CONFIG_LOCALVERSION_AUTO=n",
    "CONFIG_SMP=y",
    "CONFIG_NR_CPUS=8",
    "CONFIG_HOTPLUG_CPU=y",  # pagebuf run --mode single-cpu takes CPUs offline
    "CONFIG_NO_HZ_IDLE=y",  # an idle vCPU costs the emulator nothing
    "CONFIG_HIGH_RES_TIMERS=y",
    "CONFIG_SYSVIPC=y",
    "CONFIG_POSIX_MQUEUE=y",
    "CONFIG_IKCONFIG=y",
    "CONFIG_IKCONFIG_PROC=y",  # the tests read /proc/config.gz
    "CONFIG_CGROUPS=y",  # the memory cgroup pays for __GFP_ACCOUNT allocations
    "CONFIG_MEMCG=y",
    "CONFIG_BLK_DEV_INITRD=y",
    "CONFIG_BINFMT_ELF=y",
    "CONFIG_BINFMT_SCRIPT=y",
    "CONFIG_CRC32=y",  # pagebuf.ko uses crc32_le()
    "CONFIG_MTRR=y",  # X86_PAT depends on it
    # Page-table isolation, as distribution kernels have it: ptdump's current_user, the
    # user page tables tests/vm/test_mmap.py reads, exists only with it.
    "CONFIG_CPU_MITIGATIONS=y",
    "CONFIG_MITIGATION_PAGE_TABLE_ISOLATION=y",
    # The machine: ACPI (interrupt routing, CPUs), PCI with MSI, virtio over PCI, the
    # 8250 console.
    "CONFIG_ACPI=y",
    "CONFIG_PCI=y",
    "CONFIG_PCI_MSI=y",
    "CONFIG_VIRTIO_MENU=y",
    "CONFIG_VIRTIO_PCI=y",
    "CONFIG_VIRTIO_CONSOLE=y",
    "CONFIG_TTY=y",
    "CONFIG_SERIAL_8250=y",
    "CONFIG_SERIAL_8250_CONSOLE=y",
    # virtme-ng's guest, over 9p only.
    *GUEST_NET,
    *GUEST_FS,
)
BOOT_APPEND = ("nopat",)
BUILT_MARK = ".pagebuf-built"

ARM64_CROSS_COMPILE = "aarch64-linux-gnu-"
# The same test aids as x86's, less PAT, which arm64 does not have.
ARM64_CONFIG_ITEMS = tuple(item for item in CONFIG_ITEMS if not item.startswith("CONFIG_X86_"))
# On top of arm64's allnoconfig (EXPERT off, so the basic syscalls, /proc, sysfs, printk
# and the block layer stay on), for QEMU's `virt` machine booted by virtme-ng. The GIC,
# the architected timer, PSCI, AMBA, OF and SWIOTLB come with ARM64 itself.
ARM64_BASE_CONFIG = (
    "CONFIG_LOCALVERSION_AUTO=n",
    "CONFIG_ARM64_4K_PAGES=y",
    "CONFIG_ARM64_VA_BITS_48=y",
    "CONFIG_NR_CPUS=8",
    "CONFIG_HOTPLUG_CPU=y",  # pagebuf run --mode single-cpu takes CPUs offline
    "CONFIG_COMPAT=n",
    "CONFIG_NO_HZ_IDLE=y",  # an idle vCPU costs the emulator nothing
    "CONFIG_HIGH_RES_TIMERS=y",
    "CONFIG_SYSVIPC=y",
    "CONFIG_POSIX_MQUEUE=y",
    "CONFIG_IKCONFIG=y",
    "CONFIG_IKCONFIG_PROC=y",  # the tests read /proc/config.gz
    "CONFIG_BLK_DEV_INITRD=y",  # virtme-ng boots through an initramfs when it needs one
    "CONFIG_BINFMT_ELF=y",
    "CONFIG_BINFMT_SCRIPT=y",
    "CONFIG_CRC32=y",  # pagebuf.ko uses crc32_le()
    # The machine: PCI behind the generic ECAM host, virtio over PCI and MMIO (virtme-ng
    # attaches its devices as virtio-*-device, i.e. MMIO, on arm64), PL011 console, PL031.
    "CONFIG_PCI=y",
    "CONFIG_PCI_HOST_GENERIC=y",
    "CONFIG_VIRTIO_MENU=y",
    "CONFIG_VIRTIO_PCI=y",
    "CONFIG_VIRTIO_MMIO=y",
    "CONFIG_VIRTIO_CONSOLE=y",
    "CONFIG_TTY=y",
    "CONFIG_SERIAL_AMBA_PL011=y",
    "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
    "CONFIG_RTC_CLASS=y",
    "CONFIG_RTC_DRV_PL031=y",
    # virtme-ng's guest, over virtiofs or 9p.
    *GUEST_NET,
    "CONFIG_FUSE_FS=y",
    "CONFIG_VIRTIO_FS=y",
    *GUEST_FS,
)


def config_items(arch: str = "x86_64", debug: bool = False) -> tuple[str, ...]:
    """What the kernel for `arch` is configured with, and what _check_config checks."""
    if normalize_arch(arch) == "x86_64":
        return X86_BASE_CONFIG + CONFIG_ITEMS + DEBUG_ITEMS if debug else CONFIG_ITEMS
    if debug:
        raise VmError("the debug kernel is x86 only")
    return ARM64_BASE_CONFIG + ARM64_CONFIG_ITEMS


def make_vars(arch: str = "x86_64") -> list[str]:
    """make's ARCH and CROSS_COMPILE for `arch`: none for x86, the host's own."""
    if normalize_arch(arch) == "x86_64":
        return []
    return ["ARCH=arm64", f"CROSS_COMPILE={ARM64_CROSS_COMPILE}"]


def _source_version() -> str:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", SOURCE_PACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not SOURCE_TARBALL.is_file():
        raise VmError(f"{SOURCE_PACKAGE} is not installed: run `make setup`")
    return proc.stdout.strip()


def cache_key(arch: str = "x86_64", debug: bool = False) -> str:
    """Source version plus config: what the built kernel depends on."""
    arch = normalize_arch(arch)
    h = hashlib.sha256()
    h.update(_source_version().encode())
    if arch == "x86_64":  # as it always was: the cached x86 kernel stays valid
        if debug:
            h.update(b"\nallnoconfig\n")
        h.update("\n".join(config_items(arch, debug)).encode())
        return f"6.12-{h.hexdigest()[:12]}"
    h.update(f"\nARCH={arch} CROSS_COMPILE={ARM64_CROSS_COMPILE} allnoconfig\n".encode())
    h.update("\n".join(config_items(arch)).encode())
    return f"6.12-{arch}-{h.hexdigest()[:12]}"


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise VmError(f"`{' '.join(cmd)}` failed in {cwd}; see {log}")


def _unpack(tree_parent: Path, log: Path) -> Path:
    tree = tree_parent / "linux-source-6.12"
    if tree.exists():
        shutil.rmtree(tree)
    _run(["tar", "xf", str(SOURCE_TARBALL)], tree_parent, log)
    return tree


def _build(tree_parent: Path, jobs: int, arch: str = "x86_64", debug: bool = False) -> Path:
    if normalize_arch(arch) == "arm64" or debug:
        return _build_allnoconfig(tree_parent, jobs, normalize_arch(arch), debug)
    items = config_items(arch, debug)
    log = tree_parent / "build.log"
    tree = _unpack(tree_parent, log)
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    config_args = [a for item in items for a in ("--configitem", item)]
    _run([vng, "--kconfig", *config_args], tree, log)
    # Set again with scripts/config: items inside a choice (debug info) need it.
    set_args = [
        a
        for item in items
        for a in (("--disable", item[7:-2]) if item.endswith("=n") else ("--enable", item[7:-2]))
    ]
    _run(["scripts/config", *set_args], tree, log)
    _run(["make", "olddefconfig"], tree, log)
    _check_config(tree / ".config", items)
    _run(["make", f"-j{jobs}", "bzImage", "modules"], tree, log)
    return tree


def _build_allnoconfig(tree_parent: Path, jobs: int, arch: str, debug: bool) -> Path:
    """allnoconfig plus config_items(arch, debug): the image and modules, cross-compiled
    for arm64."""
    if arch == "arm64" and shutil.which(f"{ARM64_CROSS_COMPILE}gcc") is None:
        raise VmError(f"{ARM64_CROSS_COMPILE}gcc is not installed: install gcc-aarch64-linux-gnu")
    log = tree_parent / "build.log"
    tree = _unpack(tree_parent, log)
    make = ["make", *make_vars(arch)]
    items = config_items(arch, debug)
    _run([*make, "allnoconfig"], tree, log)
    # Appended items win over allnoconfig's; olddefconfig resolves them, and options
    # they make visible get their defaults.
    with (tree / ".config").open("a") as config:
        config.write("\n".join(items) + "\n")
    _run([*make, "olddefconfig"], tree, log)
    _check_config(tree / ".config", items)
    image = "Image" if arch == "arm64" else "bzImage"
    _run([*make, f"-j{jobs}", image, "modules"], tree, log)
    return tree


def _check_config(config: Path, items: tuple[str, ...] = CONFIG_ITEMS) -> None:
    """Every item took: `=n` ones may be absent when their dependency is off."""
    lines = set(config.read_text().splitlines())
    for item in items:
        name, value = item.split("=", 1)
        ok = item in lines if value != "n" else not ({f"{name}=y", f"{name}=m"} & lines)
        if not ok:
            raise VmError(f"kernel config {config} does not have {item}")


def custom_kernel(
    cache: Path,
    *,
    build: bool = True,
    jobs: int | None = None,
    arch: str = "x86_64",
    debug: bool = False,
) -> GuestKernel:
    """The cached test kernel, built first if missing (about 15 minutes on 2 cores);
    `debug`: the x86 one with DEBUG_ITEMS (about 16)."""
    arch = normalize_arch(arch)
    config_items(arch, debug)  # refuses a debug arm64 kernel
    key = cache_key(arch, debug)
    parent = cache / "kernels" / key
    tree = parent / "linux-source-6.12"
    if not (parent / BUILT_MARK).exists():
        if not build:
            hint = (
                "make kernel"
                + (f" ARCH={arch}" if arch != "x86_64" else "")
                + (" DEBUG=1" if debug else "")
            )
            raise VmError(f"the custom kernel is not built yet ({parent}): run `{hint}`")
        parent.mkdir(parents=True, exist_ok=True)
        with (parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (parent / BUILT_MARK).exists():
                print(f"pagebuf-vm: building the custom kernel in {parent}", file=sys.stderr)
                _build(parent, jobs or (os.cpu_count() or 1) + 1, arch, debug)
                (parent / BUILT_MARK).write_text(key + "\n")
    kernel = tree_kernel(tree)
    if kernel.arch != arch:
        raise VmError(f"{tree} holds an {kernel.arch} kernel, not an {arch} one")
    return GuestKernel(
        name="debug" if debug else "custom",
        image=kernel.image,
        kdir=kernel.kdir,
        release=kernel.release,
        append=BOOT_APPEND if arch == "x86_64" else (),
        arch=arch,
    )


def main(argv: list[str] | None = None) -> int:
    """`make kernel [ARCH=arm64]`: build (or find) the cached test kernel, print its tree."""
    from .paths import cache_root

    parser = argparse.ArgumentParser(prog="python -m pagebuf.vm.kbuild", description=main.__doc__)
    parser.add_argument("--arch", default="x86_64", help="x86_64 (the default) or arm64")
    parser.add_argument("--debug", action="store_true", help="the x86 debug kernel")
    args = parser.parse_args(argv)
    try:
        kernel = custom_kernel(cache_root(), arch=args.arch, debug=args.debug)
    except VmError as exc:
        print(f"pagebuf-vm: {exc}", file=sys.stderr)
        return 125
    print(kernel.kdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
