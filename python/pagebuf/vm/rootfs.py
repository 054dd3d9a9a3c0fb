"""Build the arm64 guest's root filesystem: Debian 12 for arm64, made with mmdebstrap.

An x86 guest shares the host's root filesystem; an arm64 guest cannot run the host's
binaries, so it gets a root filesystem of its own: Debian 12 (minbase, no recommends, no
documentation) with Python and the packages pagebuf needs, busybox (static: virtme-ng
builds its initramfs from it), udev, and Debian's arm64 kernel with its headers (so that
KERNEL=debian boots that kernel and the module is cross-built against those headers).
mmdebstrap runs the arm64 maintainer scripts through qemu-user-static, which needs the
binfmt_misc handler for aarch64 ELF files (registered here if missing).

The tree is built once into the cache under a key made of everything it is built from
(package lists, mirrors, release, options and a format version): a changed input builds a
new tree, an unchanged one is reused. It is built in a temporary directory, renamed into
place, and marked built last; a lock keeps two builds of one key from racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import VmError

FORMAT_VERSION = 1
BUILT_MARK = ".pagebuf-built"
SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
PACKAGES = (
    "python3",
    "python3-numpy",
    "python3-pyudev",
    "python3-pytest",
    "python3-hypothesis",  # tests/vm/test_fuzz.py
    # Static: virtme-ng builds the guest's initramfs around the rootfs's busybox.
    "busybox-static",
    "memtester",
    "kmod",
    "udev",
    "iproute2",
    "procps",
    "util-linux",
    "linux-image-arm64",
)
# Not in Debian: pure Python, installed from PyPI by the host's pip.
PIP_PACKAGES = ("ioctl-opt==1.3.1",)
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)
APT_OPTIONS = (
    'APT::Install-Recommends "false"',
    'Acquire::Languages "none"',
)
# Debian's kernel headers (and the kbuild scripts they link to) are unpacked, not
# installed: as packages they pull gcc-12 for arm64 into the guest, which nothing
# there needs; the module is cross-built on the host. The packages hold /lib/modules/..
# as a directory: tar must keep the merged-/usr root's /lib -> usr/lib link.
HEADERS_HOOK = r"""set -e
rel=$(cd "$1/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n 1)
abi=${rel%-*}
d=$(mktemp -d)
cd "$d"
APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get download -q \
    "linux-headers-$rel" "linux-headers-$abi-common" "linux-kbuild-${abi%.*}"
for deb in ./*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$1"
done
ls ./*.deb > "$1/usr/src/.pagebuf-unpacked"
cd / && rm -rf "$d"
"""
# virtme-ng's init powers the guest off with `poweroff -f`; without it the output of
# the guest command is lost. No initramfs of Debian's: virtme-ng brings its own.
FINISH_HOOK = r"""set -e
[ -e "$1/usr/sbin/poweroff" ] || ln -s /bin/busybox "$1/usr/sbin/poweroff"
rm -f "$1"/boot/initrd.img-*
"""
HOOKS = (HEADERS_HOOK, FINISH_HOOK)

# How binfmt_misc hands aarch64 ELF executables to qemu-user (F: the interpreter is
# opened now, so it works inside the chroot too).
QEMU_USER = Path("/usr/bin/qemu-aarch64-static")
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "qemu-aarch64"
BINFMT_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
BINFMT_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


@dataclass(frozen=True)
class RootfsSpec:
    """Everything a root filesystem is built from: its cache key is a hash of this."""

    arch: str = "arm64"
    suite: str = SUITE
    mirrors: tuple[str, ...] = MIRRORS
    packages: tuple[str, ...] = PACKAGES
    pip_packages: tuple[str, ...] = PIP_PACKAGES
    dpkg_options: tuple[str, ...] = DPKG_OPTIONS
    apt_options: tuple[str, ...] = APT_OPTIONS
    hooks: tuple[str, ...] = field(default=HOOKS)
    format_version: int = FORMAT_VERSION

    def key(self) -> str:
        h = hashlib.sha256()
        for part in (
            str(self.format_version),
            self.arch,
            self.suite,
            *self.mirrors,
            "--packages",
            *sorted(self.packages),
            "--pip",
            *sorted(self.pip_packages),
            "--dpkg",
            *self.dpkg_options,
            "--apt",
            *self.apt_options,
            "--hooks",
            *self.hooks,
        ):
            h.update(part.encode() + b"\0")
        return f"{self.arch}-{h.hexdigest()[:12]}"


def rootfs_parent(cache: Path, spec: RootfsSpec | None = None) -> Path:
    """The cache directory of one root filesystem: lock, log, marker and root/."""
    return cache / "rootfs" / (spec or RootfsSpec()).key()


def rootfs_dir(cache: Path, spec: RootfsSpec | None = None) -> Path:
    """Where the root filesystem is (or will be) once built."""
    return rootfs_parent(cache, spec) / "root"


def is_built(cache: Path, spec: RootfsSpec | None = None) -> bool:
    return (rootfs_parent(cache, spec) / BUILT_MARK).is_file()


def _update_binfmts(entry: Path) -> bool:
    """Debian's own registration (qemu-user-static's, with preserve-argv0), if it takes."""
    if shutil.which("update-binfmts") is None:
        return False
    proc = subprocess.run(["update-binfmts", "--enable", BINFMT_NAME], capture_output=True)
    return proc.returncode == 0 and entry.is_file()


def ensure_binfmt() -> None:
    """Make the kernel run aarch64 executables through qemu-user-static."""
    entry = BINFMT_DIR / BINFMT_NAME
    if entry.is_file() and entry.read_text().startswith("enabled"):
        return
    if not QEMU_USER.is_file():
        raise VmError(f"{QEMU_USER} is missing: run `make setup` (installs qemu-user-static)")
    if not (BINFMT_DIR / "register").exists():
        proc = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise VmError(f"cannot mount binfmt_misc on {BINFMT_DIR}: {proc.stderr.strip()}")
    if entry.is_file():  # registered but disabled
        entry.write_text("1")
    elif not _update_binfmts(entry):
        rule = f":{BINFMT_NAME}:M::{BINFMT_MAGIC}:{BINFMT_MASK}:{QEMU_USER}:F"
        try:
            (BINFMT_DIR / "register").write_text(rule)
        except OSError as exc:
            raise VmError(f"cannot register the aarch64 binfmt_misc handler: {exc}") from exc
    if not (entry.is_file() and entry.read_text().startswith("enabled")):
        raise VmError(f"the aarch64 binfmt_misc handler is not enabled ({entry})")


def mmdebstrap_command(spec: RootfsSpec, target: Path) -> list[str]:
    """The mmdebstrap command line that builds `spec` into `target`."""
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        f"--architectures={spec.arch}",
        f"--include={','.join(spec.packages)}",
    ]
    argv += [f"--dpkgopt={o}" for o in spec.dpkg_options]
    argv += [f"--aptopt={o}" for o in spec.apt_options]
    argv += [f"--customize-hook={h}" for h in spec.hooks]
    argv += [spec.suite, str(target), *spec.mirrors]
    return argv


def _python_site(root: Path) -> Path:
    versions = sorted(root.glob("usr/lib/python3.*"), key=lambda p: p.name)
    if not versions:
        raise VmError(f"no python3 in {root}")
    return root / "usr" / "local" / "lib" / versions[-1].name / "dist-packages"


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        raise VmError(f"`{cmd[0]}` failed building the root filesystem; see {log}")


# What the guest needs from Python, imported in the new tree (through qemu-user).
GUEST_IMPORTS = "import numpy, pyudev, pytest, ioctl_opt"


def check_rootfs(root: Path) -> None:
    """The tree boots and builds: merged /usr intact, a kernel with its modules and
    headers, and a Python that imports what pagebuf needs."""
    if not (root / "lib").is_symlink():
        raise VmError(f"{root}/lib is no longer the merged-/usr link")
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if not images:
        raise VmError(f"no kernel in {root}/boot")
    for image in images:
        release = image.name.removeprefix("vmlinuz-")
        for need in (f"usr/lib/modules/{release}/kernel", f"usr/src/linux-headers-{release}"):
            if not (root / need).is_dir():
                raise VmError(f"{root} has no {need}")
    proc = subprocess.run(
        ["chroot", str(root), "/usr/bin/python3", "-c", GUEST_IMPORTS],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VmError(f"the guest's python3 cannot `{GUEST_IMPORTS}`: {proc.stderr.strip()}")


def _build(spec: RootfsSpec, parent: Path) -> None:
    log = parent / "build.log"
    log.write_text("")
    tmp = parent / "root.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    ensure_binfmt()
    start = time.monotonic()
    # INITRD=No: Debian's kernel postinst then makes no initramfs (virtme-ng makes one).
    env = {**os.environ, "INITRD": "No"}
    _run(mmdebstrap_command(spec, tmp), log, env)
    if spec.pip_packages:
        site = _python_site(tmp)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile"]
        pip += ["--root-user-action=ignore", "--disable-pip-version-check"]
        _run([*pip, "--target", str(site), *spec.pip_packages], log)
    check_rootfs(tmp)
    seconds = time.monotonic() - start
    with log.open("a") as out:
        out.write(f"built in {seconds:.0f} s\n")
    if (parent / "root").exists():  # a tree without its marker: an interrupted build
        shutil.rmtree(parent / "root")
    tmp.rename(parent / "root")
    (parent / BUILT_MARK).write_text(f"{spec.key()}\n{seconds:.0f} s\n")


def ensure_rootfs(cache: Path, spec: RootfsSpec | None = None, *, build: bool = True) -> Path:
    """The cached root filesystem for `spec`, built first if missing (minutes)."""
    spec = spec or RootfsSpec()
    parent = rootfs_parent(cache, spec)
    if not (parent / BUILT_MARK).is_file():
        if not build:
            raise VmError(f"the {spec.arch} root filesystem is not built yet: run `make rootfs`")
        for tool in ("mmdebstrap", "dpkg-deb", "apt-get"):
            if shutil.which(tool) is None:
                raise VmError(f"{tool} is not installed: run `make setup`")
        parent.mkdir(parents=True, exist_ok=True)
        with (parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (parent / BUILT_MARK).is_file():
                print(
                    f"pagebuf-vm: building the {spec.arch} root filesystem in {parent} "
                    "(a few minutes, once)",
                    file=sys.stderr,
                )
                _build(spec, parent)
    return parent / "root"


def main(argv: list[str] | None = None) -> int:
    """`make rootfs`: build (or find) the cached arm64 root filesystem, print its path."""
    import argparse

    from .paths import cache_root, normalize_arch

    p = argparse.ArgumentParser(
        prog="python -m pagebuf.vm.rootfs",
        description="Build (once) the root filesystem of an emulated guest; print its path.",
    )
    p.add_argument("--arch", default="arm64", help="guest architecture (arm64, the default)")
    args = p.parse_args(argv)
    try:
        arch = normalize_arch(args.arch)
        if arch != "arm64":
            raise VmError(f"an {arch} guest shares the host's root filesystem: nothing to build")
        root = ensure_rootfs(cache_root(), RootfsSpec(arch=arch))
    except VmError as exc:
        print(f"pagebuf-vm: {exc}", file=sys.stderr)
        return 125
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
