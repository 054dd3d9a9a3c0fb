"""The `pagebuf` command: parses, calls the library, prints. Nothing else."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from . import doctor, errors
from .device import Buffer, Device


def _buffer_id(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a buffer id: {text!r}") from None
    if not 0 < value < 2**32:
        raise argparse.ArgumentTypeError(f"buffer ids are 1..4294967295, not {text}")
    return value


def _order(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an order: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"order must be >= 0, not {value}")
    return value


EPILOG = "exit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in errors.EXIT_CODES.items())


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pagebuf",
        description="Allocate physical page buffers through the pagebuf kernel module.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", metavar="PATH", help="device node (default: found through udev)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("alloc", help="allocate 2^ORDER pages; the buffer outlives the command")
    a.add_argument("--order", type=_order, required=True, help="log2 of the number of pages")
    a.add_argument("--dma", action="store_true", help="also dma_map_page() it, bidirectional")
    a.add_argument("--json", action="store_true", help="print one JSON object")

    ls = sub.add_parser("list", help="list every buffer")
    ls.add_argument("--json", action="store_true", help="print a JSON array")

    i = sub.add_parser("info", help="describe one buffer")
    i.add_argument("id", type=_buffer_id)
    i.add_argument("--json", action="store_true", help="print one JSON object")

    f = sub.add_parser("free", help="free one buffer, or all of them")
    which = f.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=_buffer_id, nargs="?")
    which.add_argument("--all", action="store_true", help="free every buffer this file may free")

    s = sub.add_parser("status", help="module version, limits and use")
    s.add_argument("--json", action="store_true", help="print one JSON object")

    d = sub.add_parser("doctor", help="what this machine does with RAM behind /dev/mem")
    d.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _hex(addr: int | None) -> str:
    return "-" if addr is None else f"0x{addr:016x}"


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None))


def _describe(buf: Buffer) -> str:
    lines = [
        f"id         {buf.id}",
        f"phys_addr  {_hex(buf.phys_addr)}",
        f"size       {buf.size} ({buf.pages} pages, order {buf.order})",
        f"owner      {buf.owner}",
    ]
    if buf.dma:
        lines.append(f"dma_addr   {_hex(buf.dma_addr)}")
    return "\n".join(lines)


def _table(bufs: list[Buffer]) -> str:
    head = f"{'ID':>6}  {'PHYS_ADDR':<18}  {'DMA_ADDR':<18}  {'ORDER':>5}  {'SIZE':>10}  OWNER"
    rows = [
        f"{b.id:>6}  {_hex(b.phys_addr):<18}  {_hex(b.dma_addr):<18}  "
        f"{b.order:>5}  {b.size:>10}  {b.owner}"
        for b in bufs
    ]
    return "\n".join([head, *rows])


def run_doctor(args: argparse.Namespace) -> int:
    report = doctor.diagnose(lambda: Device(args.device))
    if args.json:
        _print_json(report.to_dict())
        return 0
    for f in report.findings:
        detail = f" ({f.detail})" if f.detail else ""
        print(f"[{f.verdict:>4}] {f.name}: {f.value}{detail}")
    print(f"=> {doctor.summary(report)}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        return run_doctor(args)
    with Device(args.device) as dev:
        if args.command == "alloc":
            buf = dev.alloc(args.order, dma=args.dma)
            _print_json(buf.to_dict()) if args.json else print(_describe(buf))
        elif args.command == "list":
            bufs = dev.buffers()
            _print_json([b.to_dict() for b in bufs]) if args.json else print(_table(bufs))
        elif args.command == "info":
            buf = dev.buffer(args.id)
            _print_json(buf.to_dict()) if args.json else print(_describe(buf))
        elif args.command == "free":
            if args.all:
                print(f"freed {dev.free_all()} buffer(s)")
            else:
                dev.free(args.id)
        elif args.command == "status":
            info = dev.info().to_dict()
            if args.json:
                _print_json(info)
            else:
                print("\n".join(f"{k:<14} {v}" for k, v in info.items()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return run(args)
    except errors.PagebufError as exc:
        print(f"pagebuf: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
