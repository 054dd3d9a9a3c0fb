"""Command line for the VM harness; a thin layer over the functions in this package."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .errors import VmError
from .kernels import resolve_kernel
from .modbuild import build_module, build_test_module
from .paths import cache_root, normalize_arch, source_root
from .runner import GUEST_PYTHON, GUEST_SETUP_FAILED, VmConfig, run_in_vm, write_wrapper

# The test-only modules of tests/vm, built beside pagebuf.ko for every guest.
TEST_MODULES = ("ptattr", "dmadev")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pagebuf.vm",
        description="Boot a kernel under QEMU with pagebuf.ko loaded and run a command in it. "
        "Exits with the guest command's status; 125 means the harness failed.",
    )
    p.add_argument(
        "--kernel",
        default=os.environ.get("KERNEL") or "debian",
        help="`debian` (default), `custom`, `custom-pat` (x86 only: booted with PAT on), "
        "`custom-swiotlb` (x86 only: booted swiotlb=force, every DMA mapping bounced), "
        "`debug` (x86 only: the test kernel with KASAN, kmemleak and lockdep) or the path "
        "of a built kernel tree",
    )
    p.add_argument(
        "--arch",
        default=os.environ.get("ARCH") or "x86_64",
        help="guest architecture: x86_64 (default; the host's root filesystem) or arm64 "
        "(aarch64: emulated, with a Debian 12 root filesystem of its own, `make rootfs`)",
    )
    p.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    p.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    p.add_argument(
        "--insmod-args", default="", help="module parameters, e.g. 'max_order=4 max_bytes=262144'"
    )
    p.add_argument("--append", action="append", default=[], help="extra kernel command line")
    p.add_argument("--no-module", action="store_true", help="boot without loading pagebuf.ko")
    p.add_argument("--iommu", action="store_true",
                   help="x86: put QEMU's intel-iommu in front of the PCI devices and boot "
                   "intel_iommu=on (a kernel with CONFIG_INTEL_IOMMU: Debian's)")  # fmt: skip
    p.add_argument(
        "--read-only",
        action="store_true",
        help="keep the current directory read-only in the guest (by default the guest "
        "command may write there, e.g. pagebuf run's results; the rest of the host "
        "filesystem is always read-only)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the QEMU/vng command only")
    p.add_argument("command", help="shell command to run in the guest")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        arch = normalize_arch(args.arch)
        src = source_root()
        cache = cache_root()
        rootfs = None
        if arch == "x86_64":
            kernel = resolve_kernel(args.kernel)
            bin_dir = cache / "bin"
            write_wrapper(bin_dir)
        else:  # a root filesystem of the guest's own, and its Python
            from .rootfs import ensure_rootfs

            kernel = resolve_kernel(args.kernel, arch)  # refuses what arm64 cannot boot first
            rootfs = ensure_rootfs(cache)
            bin_dir = cache / f"bin-{arch}"
            write_wrapper(bin_dir, GUEST_PYTHON)
        ko = None if args.no_module else build_module(kernel, src, cache)
        # tests/vm/test_mmap.py reads arm64's user page tables through ptattr; the
        # named-device tests map for dmadev's device.
        test_kos = {} if ko is None else {
            name: build_test_module(kernel, src, cache, name) for name in TEST_MODULES
        }  # fmt: skip
        cfg = VmConfig(
            kernel=kernel,
            ko=ko,
            src_root=src,
            bin_dir=bin_dir,
            cpus=args.cpus,
            memory=args.memory,
            insmod_args=tuple(shlex.split(args.insmod_args)),
            cwd=Path.cwd(),
            append=tuple(args.append),
            iommu=args.iommu,
            writable_cwd=not args.read_only,
            rootfs=rootfs,
            test_kos=test_kos,
        )
        return run_in_vm(cfg, args.command, dry_run=args.dry_run)
    except VmError as exc:
        print(f"pagebuf-vm: {exc}", file=sys.stderr)
        return GUEST_SETUP_FAILED
