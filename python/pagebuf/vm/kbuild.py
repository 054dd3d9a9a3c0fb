"""Build the project's test kernel: Debian's linux-source-6.12 without STRICT_DEVMEM.

Debian's own kernel sets CONFIG_STRICT_DEVMEM=y, which keeps RAM out of /dev/mem; the
/dev/mem tests need a kernel without it. The tree is configured for the VM by
virtme-ng (`vng --kconfig`) plus CONFIG_ITEMS, built once, and kept in the cache under
a key made of the source package's version and the config items, so a changed input
builds a new kernel and an unchanged one is reused. The guest boots it with `nopat`:
with PAT on, x86 refuses to mmap RAM through /dev/mem even without STRICT_DEVMEM.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import VmError
from .kernels import GuestKernel, tree_kernel

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
BOOT_APPEND = ("nopat",)
BUILT_MARK = ".pagebuf-built"


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


def cache_key() -> str:
    """Source version plus config: what the built kernel depends on."""
    h = hashlib.sha256()
    h.update(_source_version().encode())
    h.update("\n".join(CONFIG_ITEMS).encode())
    return f"6.12-{h.hexdigest()[:12]}"


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise VmError(f"`{' '.join(cmd)}` failed in {cwd}; see {log}")


def _build(tree_parent: Path, jobs: int) -> Path:
    log = tree_parent / "build.log"
    tree = tree_parent / "linux-source-6.12"
    if tree.exists():
        shutil.rmtree(tree)
    _run(["tar", "xf", str(SOURCE_TARBALL)], tree_parent, log)
    vng = shutil.which("vng") or str(Path(sys.executable).parent / "vng")
    config_args = [a for item in CONFIG_ITEMS for a in ("--configitem", item)]
    _run([vng, "--kconfig", *config_args], tree, log)
    # Set again with scripts/config: items inside a choice (debug info) need it.
    set_args = [
        a
        for item in CONFIG_ITEMS
        for a in (("--disable", item[7:-2]) if item.endswith("=n") else ("--enable", item[7:-2]))
    ]
    _run(["scripts/config", *set_args], tree, log)
    _run(["make", "olddefconfig"], tree, log)
    _check_config(tree / ".config")
    _run(["make", f"-j{jobs}", "bzImage", "modules"], tree, log)
    return tree


def _check_config(config: Path) -> None:
    """Every item took: `=n` ones may be absent when their dependency is off."""
    lines = set(config.read_text().splitlines())
    for item in CONFIG_ITEMS:
        name, value = item.split("=", 1)
        ok = item in lines if value != "n" else not ({f"{name}=y", f"{name}=m"} & lines)
        if not ok:
            raise VmError(f"kernel config {config} does not have {item}")


def custom_kernel(cache: Path, *, build: bool = True, jobs: int | None = None) -> GuestKernel:
    """The cached test kernel, built first if missing (about 15 minutes on 2 cores)."""
    parent = cache / "kernels" / cache_key()
    tree = parent / "linux-source-6.12"
    if not (parent / BUILT_MARK).exists():
        if not build:
            raise VmError(f"the custom kernel is not built yet ({parent}): run `make kernel`")
        parent.mkdir(parents=True, exist_ok=True)
        with (parent / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (parent / BUILT_MARK).exists():
                print(f"pagebuf-vm: building the custom kernel in {parent}", file=sys.stderr)
                _build(parent, jobs or (os.cpu_count() or 1) + 1)
                (parent / BUILT_MARK).write_text(cache_key() + "\n")
    kernel = tree_kernel(tree)
    return GuestKernel(
        name="custom",
        image=kernel.image,
        kdir=kernel.kdir,
        release=kernel.release,
        append=BOOT_APPEND,
    )


def main() -> int:
    """`make kernel`: build (or find) the cached test kernel and print its tree."""
    from .paths import cache_root

    try:
        kernel = custom_kernel(cache_root())
    except VmError as exc:
        print(f"pagebuf-vm: {exc}", file=sys.stderr)
        return 125
    print(kernel.kdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
