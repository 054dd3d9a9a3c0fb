"""Build kmod/pagebuf.ko, and the test-only modules of tests/vm (tests/vm/ptattr), for
a guest kernel, out of the source tree.

Kbuild builds an external module in its own directory, so each kernel gets a copy of
the module sources in the cache; files are copied only when changed, which keeps
make's incremental build working.

An arm64 kernel is cross-built (ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-). Debian's
arm64 headers live in the guest's root filesystem and are laid out for that system: their
Makefile includes /usr/src/linux-headers-*-common/Makefile by its absolute path, and their
`scripts` link points at linux-kbuild's helper programs, arm64 binaries there. So the
build runs in a small tree of links next to the module copy: the arch headers, the common
Makefile inside the root filesystem, and the host's own (x86) linux-kbuild scripts when
they are the same version as the root filesystem's, else the root filesystem's arm64
ones, which binfmt_misc runs through qemu-user.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import VmError
from .kbuild import ARM64_CROSS_COMPILE
from .kernels import GuestKernel

CROSS_COMPILE = {"arm64": ARM64_CROSS_COMPILE}
UNPACKED_LIST = "usr/src/.pagebuf-unpacked"  # written by pagebuf.vm.rootfs


def _sync(files: list[Path], src_root: Path, dest: Path) -> None:
    """Copy `files` (under src_root) to the same places under dest, those that changed."""
    for src in files:
        target = dest / src.relative_to(src_root)
        if target.exists() and filecmp.cmp(src, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


VERSION_FILE = Path("python/pagebuf/__init__.py")  # kmod/Kbuild reads __version__ there


def _module_sources(src_root: Path) -> list[Path]:
    """pagebuf.ko's sources: the top-level Kbuild, kmod/, and the file its version is in
    (when missing, Kbuild says so)."""
    files = [src_root / "Kbuild", *sorted((src_root / "kmod").rglob("*.[ch]"))]
    version = [src_root / VERSION_FILE] if (src_root / VERSION_FILE).is_file() else []
    return files + sorted((src_root / "kmod").rglob("Kbuild")) + version


def make_command(kernel: GuestKernel, kdir: Path, dest: Path) -> list[str]:
    """The make invocation that builds the module in `dest` against `kdir`."""
    cmd = ["make", "-C", str(kdir), f"M={dest}"]
    if kernel.arch != "x86_64":
        if kernel.arch not in CROSS_COMPILE:
            raise VmError(f"no cross compiler known for {kernel.arch}")
        cmd += [f"ARCH={kernel.arch}", f"CROSS_COMPILE={CROSS_COMPILE[kernel.arch]}"]
    return [*cmd, "modules"]


_INCLUDE = re.compile(r"^include (/usr/src/\S+/Makefile)\s*$", re.MULTILINE)


def _debian_include(kdir: Path) -> str | None:
    """The absolute common-headers Makefile a Debian arch headers tree includes, if any."""
    makefile = kdir / "Makefile"
    if not makefile.is_file() or not (kdir / ".kernelvariables").is_file():
        return None
    m = _INCLUDE.search(makefile.read_text())
    return m.group(1) if m else None


def _host_kbuild_version(package: str) -> str | None:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def _rootfs_kbuild_version(root: Path, package: str) -> str | None:
    listing = root / UNPACKED_LIST
    if not listing.is_file():
        return None
    for line in listing.read_text().split():
        name = Path(line).name
        if name.startswith(f"{package}_"):
            return name.split("_")[1].replace("%3a", ":")
    return None


def kbuild_scripts(root: Path, link: Path) -> tuple[Path, str]:
    """Which linux-kbuild to build with: the host's, when it is the root filesystem's
    version, else the root filesystem's own (arm64 programs, run by qemu-user).
    `link` is the headers tree's `scripts` link. Returns the kbuild dir and why."""
    target = Path(os.readlink(link))
    # ../../lib/linux-kbuild-6.1/scripts, relative to /usr/src/linux-headers-X
    kbuild_rel = Path(os.path.normpath(Path("/usr/src/x") / target)).parent
    package = kbuild_rel.name  # linux-kbuild-6.1
    guest = root / kbuild_rel.relative_to("/")
    host_version = _host_kbuild_version(package)
    guest_version = _rootfs_kbuild_version(root, package)
    if host_version and host_version == guest_version and kbuild_rel.is_dir():
        return kbuild_rel, f"the host's {package} {host_version}"
    from .rootfs import ensure_binfmt

    ensure_binfmt()
    return guest, (
        f"the guest's {package} {guest_version} through qemu-user "
        f"(the host has {host_version or 'none'})"
    )


def cross_tree(kernel: GuestKernel, where: Path) -> tuple[Path, dict[str, str]]:
    """The tree to run make in for `kernel`, and what make's environment needs on top:
    kernel.kdir itself, or for Debian headers inside a root filesystem, a tree of links
    at `where` that works from the host."""
    if kernel.arch == "x86_64":
        return kernel.kdir, {}
    include = _debian_include(kernel.kdir)
    if include is None:  # a kernel tree of its own (KERNEL=custom or a path)
        return kernel.kdir, {}
    root = kernel.kdir.parents[2]  # ROOT/usr/src/linux-headers-X
    common = root / include.lstrip("/")
    if not common.is_file():
        raise VmError(f"{kernel.kdir} includes {include}, which {root} does not have")
    kbuild, _why = kbuild_scripts(root, kernel.kdir / "scripts")
    # The root filesystem's programs find their dynamic loader and libraries there.
    env = {"QEMU_LD_PREFIX": str(root)} if root in kbuild.parents else {}
    where.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Path] = {
        e.name: e for e in kernel.kdir.iterdir() if e.name not in ("Makefile", "scripts", "tools")
    }
    wanted["scripts"] = kbuild / "scripts"
    wanted["tools"] = kbuild / "tools"
    for entry in where.iterdir():
        if entry.name != "Makefile" and entry.name not in wanted:
            entry.unlink()
    for name, target in wanted.items():
        link = where / name
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    makefile = where / "Makefile"
    text = f"include {common}\n"
    if not makefile.is_file() or makefile.read_text() != text:
        makefile.write_text(text)
    return where, env


def _build_name(kernel: GuestKernel) -> str:
    # Per architecture: the x86 and arm64 test kernels share a release name.
    return kernel.name if kernel.arch == "x86_64" else f"{kernel.name}-{kernel.arch}"


def _build_dir(kernel: GuestKernel, src_root: Path, cache: Path, name: str) -> Path:
    """Where `name` is built for `kernel` from this checkout: a directory per kernel tree
    and per checkout, so that two checkouts (a CI clone beside a working tree) never
    overwrite each other's sources, and a rebuilt kernel of the same release (another
    config) never reuses objects built against the old one."""
    key = hashlib.sha256(f"{src_root.resolve()}\n{kernel.kdir.resolve()}".encode()).hexdigest()
    return cache / "kmod" / name / f"{kernel.release}-{key[:10]}"


def _make(kernel: GuestKernel, cache: Path, dest: Path, ko: Path) -> Path:
    """Build the external module copied to `dest` against kernel.kdir; return `ko`."""
    name = _build_name(kernel)
    kdir, env = cross_tree(kernel, cache / "kmod" / name / f"{kernel.release}.kdir")
    cmd = make_command(kernel, kdir, dest)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **env} if env else None, check=False
    )
    if proc.returncode != 0:
        raise VmError(
            f"building {ko.name} for {kernel.release} failed:\n{proc.stdout}{proc.stderr}"
        )
    if not ko.is_file():
        raise VmError(f"make succeeded but {ko} is missing")
    return ko


def build_module(kernel: GuestKernel, src_root: Path, cache: Path) -> Path:
    """Compile the module against kernel.kdir; return the path of the .ko."""
    dest = _build_dir(kernel, src_root, cache, _build_name(kernel))
    _sync(_module_sources(src_root), src_root, dest)
    return _make(kernel, cache, dest, dest / "kmod" / "pagebuf.ko")


def build_test_module(kernel: GuestKernel, src_root: Path, cache: Path, name: str) -> Path:
    """Compile the test-only module tests/vm/<name>/ (its Kbuild builds <name>.ko) against
    kernel.kdir, in cache/kmod/<kernel>-<name>/<release>; return the path of the .ko."""
    src = src_root / "tests" / "vm" / name
    if not (src / "Kbuild").is_file():
        raise VmError(f"no test module {name}: {src / 'Kbuild'} is missing")
    files = [src / "Kbuild", *sorted(src.glob("*.[ch]"))]
    dest = _build_dir(kernel, src_root, cache, f"{_build_name(kernel)}-{name}")
    _sync(files, src, dest)
    return _make(kernel, cache, dest, dest / f"{name}.ko")
