"""Command line for the VM harness; a thin layer over the functions in this package."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from .errors import VmError
from .kernels import resolve_kernel
from .modbuild import build_module
from .paths import cache_root, source_root
from .runner import GUEST_SETUP_FAILED, VmConfig, run_in_vm, write_wrapper


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pagebuf.vm",
        description="Boot a kernel under QEMU with pagebuf.ko loaded and run a command in it. "
        "Exits with the guest command's status; 125 means the harness failed.",
    )
    p.add_argument(
        "--kernel",
        default=os.environ.get("KERNEL") or "debian",
        help="`debian` (default) or the path of a built kernel tree",
    )
    p.add_argument("--cpus", type=int, default=2, help="guest vCPUs (default 2)")
    p.add_argument("--memory", default="2G", help="guest memory (default 2G)")
    p.add_argument(
        "--insmod-args", default="", help="module parameters, e.g. 'max_order=4 max_pages=64'"
    )
    p.add_argument("--append", action="append", default=[], help="extra kernel command line")
    p.add_argument("--no-module", action="store_true", help="boot without loading pagebuf.ko")
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
        kernel = resolve_kernel(args.kernel)
        src = source_root()
        cache = cache_root()
        ko = None if args.no_module else build_module(kernel, src, cache)
        bin_dir = cache / "bin"
        write_wrapper(bin_dir)
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
            writable_cwd=not args.read_only,
        )
        return run_in_vm(cfg, args.command, dry_run=args.dry_run)
    except VmError as exc:
        print(f"pagebuf-vm: {exc}", file=sys.stderr)
        return GUEST_SETUP_FAILED
