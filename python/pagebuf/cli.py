"""The `pagebuf` command: parses, calls the library, prints. Nothing else."""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, access, cpus, dmadev, doctor, errors, names, records, uapi, versions
from .completion import PrintCompletion
from .device import Buffer, Device, ModuleInfo
from .physmem import PhysMem, PhysMemError
from .results import ResultWriter, default_path, read_records

if TYPE_CHECKING:
    from .experiment import RunParams
    from .labout import Outputs
    from .report import ArmRow

Handler = Callable[[argparse.Namespace], int]


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


EXIT_CODES = {
    0: "success",
    1: "corruption found (verify, compare-views, run, compare, report)",
    2: "usage error (an option or argument the parser refuses)",
    3: "broken controls (run, compare, report)",
    4: "pagebuf module not loaded, no pagebuf device, or no such device to map for (--dma-device)",
    5: "permission denied (no CAP_SYS_RAWIO, a read-only file, another file's buffer, x86 PAT)",
    6: "no such buffer",
    7: "limit reached or out of memory (max_bytes, dma_max_size)",
    8: "invalid request (a value the module or pagebuf refuses, a file of no run records)",
    9: "other operating-system error (a file that cannot be read or written, a CPU that "
    "cannot go offline)",
    10: "inconclusive, with --strict (run, compare, report)",
    11: "internal error (a bug in pagebuf: PAGEBUF_DEBUG=1 prints the traceback)",
    130: "interrupted (Ctrl-C)",
    141: "stdout closed by its reader (as a Unix tool killed by SIGPIPE)",
}
EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PIPE = 11, 130, 141
# What an error exits with: the first class it is an instance of, most specific first.
EXIT_FOR_ERROR: tuple[tuple[type[errors.PagebufError], int], ...] = (
    (errors.ModuleNotLoadedError, 4),
    (errors.NoSuchDeviceError, 4),
    (errors.PermissionDeniedError, 5),
    (errors.NoSuchBufferError, 6),
    (errors.LimitError, 7),
    (errors.InvalidRequestError, 8),
    (PhysMemError, 8),
    (errors.PagebufError, 9),
)
STRICT_HELP = "exit 10 when the overall verdict is INCONCLUSIVE (else 0)"
EPILOG = "exit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items())


def exit_code_of(exc: errors.PagebufError) -> int:
    return next(code for cls, code in EXIT_FOR_ERROR if isinstance(exc, cls))


def _complain(exc: errors.PagebufError) -> None:
    print(f"pagebuf: {exc.message}", file=sys.stderr)


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _seconds(minimum: float | None) -> Callable[[str], float]:
    """A number of seconds: at least `minimum`, or above 0 when None."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"not a finite number of seconds: {text}")
        if (value < minimum) if minimum is not None else (value <= 0):
            rule = f">= {minimum:g}" if minimum is not None else "> 0"
            raise argparse.ArgumentTypeError(f"must be {rule} seconds, not {text}")
        return value

    return parse


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_access_args(p: argparse.ArgumentParser, kernel: bool = False) -> None:
    vias = (*access.VIAS, "kernel") if kernel else access.VIAS
    p.add_argument(
        "--via", choices=vias, default="auto",
        help="access path (auto: /dev/mem where it reaches RAM, else /dev/pagebuf uncached)"
        + ("; kernel: its cached linear map" if kernel else ""),
    )  # fmt: skip
    p.add_argument(
        "--method",
        choices=access.METHODS,
        default="auto",
        help="devmem: mmap, read()/write(), or mmap falling back to read()/write() (default)",
    )
    p.add_argument("--cached", action="store_true", help="devmem: open without O_SYNC")


def _add_lab_args(p: argparse.ArgumentParser) -> None:
    """run, compare, report: the verdicts as test results for a lab's CI (labout.py)."""
    p.add_argument("--ktap", metavar="FILE", help="also write the verdicts as KTAP (- stdout)")
    p.add_argument("--junit", metavar="FILE", help="also write the verdicts as JUnit XML")


def _lab(args: argparse.Namespace, results: str) -> Outputs:
    """The KTAP and JUnit files asked for, every output path checked before any work."""
    from . import labout

    html = getattr(args, "html", None)
    if args.ktap == "-" and args.json:
        raise errors.InvalidRequestError("--ktap - and --json both print to stdout: write one "
                                         "of them to a file", errno.EINVAL)  # fmt: skip
    if html == "-":
        raise errors.InvalidRequestError("--html writes a file, not stdout", errno.EINVAL)
    labout.check_outputs(results, args.ktap, args.junit, html)
    return labout.Outputs(results, args.ktap, args.junit, args.strict)


def _human_output(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    """Where the table goes: stderr when stdout carries the KTAP."""
    return contextlib.redirect_stdout(sys.stderr) if args.ktap == "-" else contextlib.nullcontext()


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pagebuf",
        description="Allocate physical page buffers through the pagebuf kernel module.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", metavar="PATH", help="device node (default: found through udev)")
    p.add_argument("--version", action="version", version=versions.describe_package(),
                   help="print pagebuf's version and the module interface it speaks")  # fmt: skip
    p.add_argument("--print-completion", action=PrintCompletion)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of")

    a = sub.add_parser("alloc", help="allocate 2^ORDER pages; the buffer outlives the command")
    a.set_defaults(handler=_on_device(run_alloc))
    a.add_argument("--order", type=_order, required=True, help="log2 of the number of pages")
    a.add_argument(
        "--dma",
        action="store_true",
        help="also dma_map_page() it (for pagebuf's own device unless --dma-device)",
    )
    a.add_argument(
        "--dma-device",
        metavar="NAME",
        help="map it for this existing device instead, as its driver would: a "
        "name in /sys/bus/{platform,pci,amba}/devices/ (13000000.gpu, "
        "0000:00:02.0) or bus:name; implies --dma; needs CAP_SYS_ADMIN",
    )
    a.add_argument("--dma-dir", choices=list(dmadev.DIRECTIONS), default="bidirectional",
                   help="the mapping's direction, and every sync's (default bidirectional); "
                   "implies --dma")  # fmt: skip
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.add_argument("-q", "--quiet", action="store_true",
                   help="print the physical address alone (a=$(pagebuf alloc -q ...))")  # fmt: skip

    ls = sub.add_parser("list", help="list every buffer")
    ls.set_defaults(handler=_on_device(run_list))
    ls.add_argument("--json", action="store_true", help="print a JSON array")

    i = sub.add_parser("info", help="describe one buffer")
    i.set_defaults(handler=_on_device(run_info))
    i.add_argument("id", type=_buffer_id, help="the buffer's id (alloc and list print it)")
    i.add_argument("--json", action="store_true", help="print one JSON object")

    f = sub.add_parser("free", help="free one buffer, or all of them")
    f.set_defaults(handler=_on_device(run_free))
    which = f.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=_buffer_id, nargs="?", help="the buffer to free")
    which.add_argument("--all", action="store_true", help="free every buffer this file may free")
    f.add_argument("--json", action="store_true", help="print one JSON object")

    s = sub.add_parser("status", help="module version, limits and use")
    s.set_defaults(handler=_on_device(run_status))
    s.add_argument("--json", action="store_true", help="print one JSON object")

    m = sub.add_parser("mem", help="devmem: read or write one value at a physical address")
    m.set_defaults(handler=run_mem)
    msub = m.add_subparsers(dest="mem_command", required=True, metavar="read|write",
                            help="read or write")  # fmt: skip
    mr = msub.add_parser("read", help="read WIDTH-bit values: ADDR [WIDTH], as busybox devmem")
    mr.add_argument("addr", type=_int, help="physical address")
    mr.add_argument("width_arg", nargs="?", type=_width, metavar="WIDTH",
                    help="8, 16, 32 or 64, as --width")  # fmt: skip
    mr.add_argument("--count", type=_positive, default=1, help="consecutive values (default 1)")
    mw = msub.add_parser("write", help="write one value: ADDR [WIDTH] VALUE, as busybox devmem")
    mw.add_argument("addr", type=_int, help="physical address")
    mw.add_argument("rest", nargs="+", type=_int, metavar="[WIDTH] VALUE",
                    help="the value to store, after its width if given (as --width)")  # fmt: skip
    for mp in (mr, mw):
        mp.add_argument("--width", type=_width, default=None,
                        help="bits per access, one load or store of exactly that (32)")  # fmt: skip
        _add_access_args(mp)
        mp.add_argument("--force", action="store_true", help="allow addresses outside buffers")
        mp.add_argument("--json", action="store_true", help="print one JSON object")

    fl = sub.add_parser("fill", help="write a test pattern into a buffer")
    fl.set_defaults(handler=_value_checked(_on_device(run_fill)))
    ve = sub.add_parser("verify", help="check a buffer against a pattern, line by line")
    ve.set_defaults(handler=_value_checked(_on_device(run_verify)))
    for fp in (fl, ve):
        fp.add_argument("id", type=_buffer_id, help="the buffer")
        fp.add_argument(
            "--pattern",
            choices=names.PATTERNS,
            default="tagged",
            help="what every word holds (tagged: its address and generation)",
        )
        fp.add_argument("--seed", type=_int, default=0, help="the random pattern's seed (0)")
        fp.add_argument(
            "--generation",
            type=_int,
            default=1,
            help="which write this is; an older one's bytes read as stale (1)",
        )
        fp.add_argument(
            "--value",
            type=_int,
            default=None,
            help="the constant pattern's word, exactly (default: one per generation)",
        )
        _add_access_args(fp, kernel=True)
    ve.add_argument("--max-reports", type=_positive, default=64, help="lines listed (64)")
    for fp in (fl, ve):
        fp.add_argument("--json", action="store_true", help="print one JSON object")

    cv = sub.add_parser("compare-views", help="the user's view and the kernel's, side by side")
    cv.set_defaults(handler=_on_device(run_compare_views))
    cv.add_argument("id", type=_buffer_id, help="the buffer")
    _add_access_args(cv)
    cv.add_argument("--sync", action="store_true", help="dma_sync_single_for_cpu first")
    cv.add_argument("--all", action="store_true", help="list every page, not just differing")
    cv.add_argument("--json", action="store_true", help="print one JSON object")

    for name, text in (("run", "one corruption-reproduction experiment (an arm plus controls)"),
                       ("compare", "every arm side by side, with the same seed")):  # fmt: skip
        r = sub.add_parser(name, help=text)
        r.set_defaults(handler=run_experiment)
        if name == "run":
            r.add_argument("--mode", choices=names.MODES, default="cached",
                           help="the arm to run, besides the controls (cached)")  # fmt: skip
            r.add_argument("--no-controls", action="store_true", help="skip positive/inject arms")
        r.add_argument("--buffers", type=_positive, default=4, help="buffers per arm (4)")
        r.add_argument("--order", type=_order, default=4, help="order of each buffer (4)")
        r.add_argument("--seed", type=_int, default=1, help="one seed for every arm (1)")
        r.add_argument("--pattern", choices=names.PATTERNS, default="tagged",
                       help="what the buffers hold (tagged: each word names its address and "
                       "generation)")  # fmt: skip
        r.add_argument("--via", choices=access.RUN_VIAS, default="auto",
                       help="user path (auto: /dev/mem mmap O_SYNC, else /dev/pagebuf "
                       "uncached; devmem-rw and mmap-wb are cached)")  # fmt: skip
        r.add_argument("--duration", type=_seconds(0), default=5.0, help="seconds per arm (5)")
        r.add_argument("--interval", type=_seconds(None), default=1.0,
                       help="seconds between checks (1)")  # fmt: skip
        r.add_argument(
            "--pressure",
            choices=names.PRESSURES,
            default="none",
            help="evict cache lines meanwhile: a user or a kernel thrasher (none)",
        )
        r.add_argument("--busy-cpus", action="store_true", help="keep the other CPUs busy")
        r.add_argument("--dma-device", metavar="NAME",
                       help="the dma arm maps for this device, as its driver would, not for "
                       "pagebuf's own (see alloc --dma-device; needs CAP_SYS_ADMIN)")  # fmt: skip
        r.add_argument("--inject-into", metavar="ARM", help="inject stale lines into this arm")
        r.add_argument("--inject-lines", type=_positive, default=8,
                       help="how many lines the injection control makes stale (8)")  # fmt: skip
        r.add_argument("--output", help="JSON Lines file (default: timestamped, here)")
        r.add_argument("--json", action="store_true", help="print the rows as JSON")
        r.add_argument("--strict", action="store_true", help=STRICT_HELP)
        _add_lab_args(r)

    rep = sub.add_parser("report", help="re-render a run's JSON Lines; --plot draws it")
    rep.set_defaults(handler=run_report)
    rep.add_argument("file", help="a run's JSON Lines (its --output)")
    rep.add_argument("--plot", metavar="OUT", help="write a plot (.svg, .png or .pdf)")
    rep.add_argument("--json", action="store_true", help="print the rows as JSON")
    rep.add_argument("--strict", action="store_true", help=STRICT_HELP)
    _add_lab_args(rep)
    rep.add_argument("--html", metavar="OUT.html",
                     help="write one self-contained page: table, plots, doctor")  # fmt: skip

    c = sub.add_parser("cpus", help="CPUs taken offline by single-cpu runs")
    c.set_defaults(handler=run_cpus)
    c.add_argument("action", choices=("restore", "status"),
                   help="restore: bring them back; status: what is offline")  # fmt: skip

    d = sub.add_parser("doctor", help="what this machine does with RAM behind /dev/mem")
    d.set_defaults(handler=run_doctor)
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--bundle", metavar="OUT.tar.gz",
                   help="also pack what a bug report needs into this new file")  # fmt: skip
    d.add_argument("--run", action="append", metavar="FILE",
                   help="--bundle: this run's JSON Lines (repeatable; default: the newest "
                   "pagebuf-*.jsonl run here)")  # fmt: skip
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
        bounce = " (a swiotlb bounce slot, not these pages)" if buf.bounced else ""
        gone = " (went away: mapping undone)" if buf.device_gone else ""
        mask = "not reported" if buf.dma_mask is None else _hex(buf.dma_mask)
        syncs = "needed (dma_need_sync)" if buf.dma_syncs else "not needed (dma_need_sync)"
        lines += [
            f"dma_addr   {_hex(buf.dma_addr)}{bounce}",
            f"device     {buf.dma_device or 'pagebuf (its own)'}{gone}",
            f"direction  {dmadev.DIRECTION_NAMES.get(buf.dma_dir, buf.dma_dir)}",
            f"dma_mask   {mask}",
            f"coherence  {dmadev.coherence(buf.dma_info)} (firmware's word)",
            f"syncs      {syncs}",
            f"iommu      {dmadev.iommu(buf.dma_info)}",
        ]
    return "\n".join(lines)


def _table(bufs: list[Buffer]) -> str:
    head = (f"{'ID':>6}  {'PHYS_ADDR':<18}  {'DMA_ADDR':<18}  {'ORDER':>5}  {'SIZE':>10}  "
            "OWNER   DEVICE")  # fmt: skip
    rows = [
        f"{b.id:>6}  {_hex(b.phys_addr):<18}  {_hex(b.dma_addr):<18}  "
        f"{b.order:>5}  {b.size:>10}  {b.owner:<6}  {_device_cell(b)}"
        for b in bufs
    ]
    return "\n".join([head, *rows])


def _device_cell(buf: Buffer) -> str:
    if not buf.dma:
        return "-"
    return (buf.dma_device or "pagebuf") + (" (gone)" if buf.device_gone else "")


def run_doctor(args: argparse.Namespace) -> int:
    if args.run and not args.bundle:
        raise errors.InvalidRequestError("--run names the runs of a --bundle", errno.EINVAL)
    if args.bundle and os.path.lexists(args.bundle):  # before the probes, as after them
        raise errors.PagebufError(f"{args.bundle}: already exists; pick another --bundle",
                                  errno.EEXIST)  # fmt: skip
    report = doctor.diagnose(lambda: Device(args.device))
    if args.json:
        _print_json(report.to_dict())
    else:
        print(doctor.render(report))
    if args.bundle:
        from . import bundle

        members, missing = bundle.collect(report, lambda: _status_json(args.device), args.run,
                                          Path.cwd())  # fmt: skip
        names = bundle.write(args.bundle, members, missing)
        print(f"bundle: {args.bundle} ({len(names)} files)", file=sys.stderr)
        for why in missing:
            print(f"bundle: not included: {why}", file=sys.stderr)
    return 0


def _status_json(device: str | None) -> str:
    """What `pagebuf status --json` prints (its errors raised), for doctor --bundle."""
    args = make_parser().parse_args([*(["--device", device] if device else []), "status",
                                     "--json"])  # fmt: skip
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args.handler(args)
    return out.getvalue()


def _width(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if value not in (8, 16, 32, 64):
        raise argparse.ArgumentTypeError(f"a width is 8, 16, 32 or 64 bits, not {text!r}")
    return value


def _mem_operands(args: argparse.Namespace) -> None:
    """busybox devmem's order, ADDR [WIDTH [VALUE]], beside --width: one width, 32 unless
    given, and the value of a write."""
    given = getattr(args, "width_arg", None)
    if args.mem_command == "write":
        if len(args.rest) > 2:
            raise errors.InvalidRequestError("mem write takes ADDR [WIDTH] VALUE", errno.EINVAL)
        if len(args.rest) == 2:
            given = _width(str(args.rest[0]))
        args.value = args.rest[-1]
    if given is not None and args.width is not None and given != args.width:
        raise errors.InvalidRequestError(f"width {given} and --width {args.width} disagree",
                                         errno.EINVAL)  # fmt: skip
    args.width = given or args.width or 32


def run_mem(args: argparse.Namespace) -> int:
    _mem_operands(args)
    nbytes = args.width // 8
    count = args.count if args.mem_command == "read" else 1
    if args.mem_command == "write" and not 0 <= args.value < 1 << args.width:
        raise errors.InvalidRequestError(
            f"value {args.value:#x} does not fit in {args.width} bits", None
        )
    if not args.force:
        with Device(args.device) as dev:
            access.owning_buffer(dev, args.addr, nbytes * count)
    mem, taken = _open_range(args, args.addr, nbytes * count)
    with mem:
        if args.mem_command == "write":
            mem.write(0, args.width, args.value)
            if args.json:
                _print_json({"phys_addr": args.addr, "width": args.width, "value": args.value,
                             "via": taken})  # fmt: skip
            return 0
        values = [mem.read(i * nbytes, args.width) for i in range(count)]
    if args.json:
        _print_json({"phys_addr": args.addr, "width": args.width, "values": values, "via": taken})
    else:
        print("\n".join(f"0x{v:0{args.width // 4}X}" for v in values))
    return 0


def _open_range(args: argparse.Namespace, phys: int, size: int) -> tuple[PhysMem, str]:
    """The window through --via and --method, and the path it really took; a fallback
    from what was asked is said on stderr."""
    mem, taken = access.open_region(phys, size, via=args.via, cached=args.cached,
                                    method=args.method, device_path=args.device)  # fmt: skip
    if taken == "devmem-rw" and args.method == "auto":
        print(f"pagebuf: {access.FALLBACK_NOTE}", file=sys.stderr)
    elif args.via == "auto" and not taken.startswith("devmem"):
        print(f"pagebuf: {access.AUTO_NOTE}", file=sys.stderr)
    return mem, taken


def _read_view(args: argparse.Namespace, dev: Device, buf: Buffer) -> tuple[bytes, str]:
    """The buffer's bytes through --via, and the path they came through."""
    if args.via == "kernel":
        return dev.kread(buf.id, 0, buf.size), "kernel"
    mem, taken = _open_range(args, buf.phys_addr, buf.size)
    with mem:
        return mem.read_bytes(0, buf.size), taken


def _value_checked(fn: Handler) -> Handler:
    """fill, verify: --value belongs to the constant pattern, where it hides stale lines,
    which the user hears before anything is touched."""

    def handler(args: argparse.Namespace) -> int:
        if args.value is not None:
            if args.pattern != "constant":
                raise errors.InvalidRequestError(
                    f"--value is the constant pattern's word, not {args.pattern}'s", errno.EINVAL
                )
            print("pagebuf: note: with --value every generation holds the same word, so a "
                  "stale line reads as a fresh one; without it the word changes per "
                  "generation", file=sys.stderr)  # fmt: skip
        return fn(args)

    return handler


def run_fill(args: argparse.Namespace, dev: Device) -> int:
    from . import verify  # numpy: imported only by the commands that need it

    buf = dev.buffer(args.id)
    spec = {"pattern": args.pattern, "phys_addr": buf.phys_addr, "generation": args.generation,
            "seed": args.seed, "value": args.value}  # fmt: skip
    taken = "kernel"
    if args.via == "kernel":
        dev.kwrite(buf.id, 0, verify.expected(size=buf.size, **spec).tobytes())
    else:
        mem, taken = _open_range(args, buf.phys_addr, buf.size)
        with mem:
            mem.fill(lambda target: verify.fill(target, **spec))
    done = {"id": buf.id, "bytes": buf.size, "via": taken, **spec}
    if args.json:
        _print_json(done)
    else:
        print(f"filled buffer {buf.id}: {buf.size} bytes of {args.pattern} (generation "
              f"{args.generation}) via {taken}")  # fmt: skip
    return 0


def run_verify(args: argparse.Namespace, dev: Device) -> int:
    from . import verify

    buf = dev.buffer(args.id)
    data, taken = _read_view(args, dev, buf)
    res = verify.verify(data, pattern=args.pattern,
                        phys_addr=buf.phys_addr, generation=args.generation, seed=args.seed,
                        value=args.value, max_reports=args.max_reports)  # fmt: skip
    if args.json:
        _print_json({"buffer": buf.id, "via": taken, **res.to_dict()})
    else:
        for m in res.mismatches:
            extra = f" generation {m.generation}" if m.generation is not None else ""
            extra += f" from 0x{m.source:x}" if m.source is not None else ""
            print(f"0x{m.phys_addr:016x}  {m.classification:<7}  expected {m.expected}  "
                  f"actual {m.actual}  ({m.bad_words} words{extra})")  # fmt: skip
        if res.reports_truncated:
            print(f"(the first {len(res.mismatches)} of {res.bad_lines} corrupted lines; "
                  "--max-reports lists more)")  # fmt: skip
        counts = ", ".join(f"{v} {k}" for k, v in res.counts.items())
        print(f"buffer {buf.id}: {res.lines_checked} lines of {res.line_size} bytes checked, "
              f"{res.bad_lines} corrupted ({counts})")  # fmt: skip
    return 0 if res.ok else 1


def run_compare_views(args: argparse.Namespace, dev: Device) -> int:
    from . import views

    buf = dev.buffer(args.id)
    if args.sync:
        views.hand_back(dev, buf)
    user, taken = _read_view(args, dev, buf)
    pages = views.compare(dev, buf, user)
    differing = sum(not p.same for p in pages)
    if args.json:
        _print_json({"buffer": buf.id, "via": taken, "differing_pages": differing,
                     "pages": [p.to_dict() for p in pages]})  # fmt: skip
        return 0 if not differing else 1
    print(f"{'PAGE':>5}  {'PHYS_ADDR':<18}  USER({taken:<7})  KERNEL      SAME")
    for p in pages:
        if args.all or not p.same:
            print(f"{p.page:>5}  {_hex(p.phys_addr)}  {p.user_crc32:08x}"
                  f"{'':9}  {p.kernel_crc32:08x}    {'yes' if p.same else 'NO'}")  # fmt: skip
    print(f"buffer {buf.id}: {len(pages)} pages, {differing} differ between the views")
    return 0 if not differing else 1


def _params(args: argparse.Namespace) -> RunParams:
    from .experiment import RunParams

    if args.command == "run":
        arms = (args.mode,) if args.no_controls else (args.mode, *names.CONTROLS)
    else:
        arms = (*names.MODES, *names.CONTROLS)
    return RunParams(
        arms=arms, buffers=args.buffers, order=args.order, seed=args.seed,
        pattern=args.pattern, via=args.via, duration=args.duration, interval=args.interval,
        pressure=args.pressure, busy_cpus=args.busy_cpus, inject_into=args.inject_into,
        inject_lines=args.inject_lines, strict=args.strict,
        dma_device=dmadev.resolve(args.dma_device) if args.dma_device else None,
    )  # fmt: skip


# report and advice are imported where used: a run needs them only once it has ended.


def _print_rows(rows: list[ArmRow], as_json: bool) -> None:
    from . import report

    if as_json:
        _print_json([r.to_dict() for r in rows])
    else:
        print(report.render_table(rows))


def _read_run(path: str) -> tuple[dict[str, Any] | None, list[ArmRow]]:
    from . import report

    try:
        header, rows = report.summarize(read_records(path))
    except OSError as exc:
        raise errors.PagebufError(f"{path}: {exc.strerror}", exc.errno) from None
    if header is None and not rows:
        raise errors.InvalidRequestError(f"{path}: no pagebuf run records in it", errno.EINVAL)
    return header, rows


def _print_recommendation(path: str) -> None:
    """After a compare run's table: what it showed and what to do (nothing for a run)."""
    from . import advice

    rec = advice.for_records(read_records(path))
    if rec is not None:
        print(f"\n{rec.text}")


class Progress:
    """A run's progress: one line on stderr, rewritten in place, cleared when an arm ends
    (None); silent when stderr is not a terminal."""

    def __call__(self, text: str | None) -> None:
        if not sys.stderr.isatty():
            return
        sys.stderr.write("\r\x1b[K" + (text or ""))
        sys.stderr.flush()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: CPUs come back, results stay on disk


def run_experiment(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    from . import experiment

    params = _params(args)
    experiment.check_params(params)
    path = args.output or str(default_path(f"pagebuf-{args.command}"))
    from . import advice

    writer = advice.RecommendingWriter if args.command == "compare" else ResultWriter
    lab = _lab(args, path)
    with Device(args.device) as dev, writer(path) as out, lab:  # lab: written however it ends
        try:
            experiment.Experiment(dev, params, lab.follow(out), args.device, Progress()).run()
        finally:
            print(f"results: {path}", file=sys.stderr)
    with _human_output(args):
        return _conclude(path, args)


def _conclude(path: str, args: argparse.Namespace) -> int:
    """A run's file as a table, what it recommends and its overall verdict; the exit code
    that verdict gives (records.rows_exit_code)."""
    header, rows = _read_run(path)
    _print_rows(rows, args.json)
    if not args.json:
        _print_recommendation(path)
        verdict, reason = records.overall(header, rows)
        print(f"\noverall: {verdict}: {reason}")
    return records.rows_exit_code(header, rows, args.strict)


def run_report(args: argparse.Namespace) -> int:
    from .plot import check_output, plot  # matplotlib itself is imported only to draw

    if args.plot:
        check_output(args.plot)
    lab = _lab(args, args.file)
    with _human_output(args):
        code = _conclude(args.file, args)
    if args.plot:
        plot(read_records(args.file), args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    lab.write()
    if args.html:
        from . import htmlreport

        htmlreport.write(args.file, args.html, args.strict)
        print(f"html: {args.html}", file=sys.stderr)
    return code


def run_cpus(args: argparse.Namespace) -> int:
    if args.action == "restore":
        restored = cpus.restore()
        print(f"brought back: {', '.join(f'cpu{c}' for c in restored) or 'nothing to do'}")
    else:
        state = cpus.state_path()
        print(f"online: {', '.join(map(str, cpus.online_cpus()))}")
        print(f"recorded offline: {state.read_text().strip() if state.exists() else 'none'}")
    return 0


def _on_device(fn: Callable[[argparse.Namespace, Device], int]) -> Handler:
    """A command that works on the open device."""

    def handler(args: argparse.Namespace) -> int:
        with Device(args.device) as dev:
            return fn(args, dev)

    return handler


def run_alloc(args: argparse.Namespace, dev: Device) -> int:
    direction = dmadev.DIRECTIONS[args.dma_dir]
    dma = args.dma or bool(args.dma_device) or direction != uapi.DMA_BIDIRECTIONAL
    buf = dev.alloc(args.order, dma=dma, dma_device=args.dma_device, dma_dir=direction)
    if args.quiet:
        print(f"0x{buf.phys_addr:x}")
    else:
        _print_json(buf.to_dict()) if args.json else print(_describe(buf))
    return 0


def run_list(args: argparse.Namespace, dev: Device) -> int:
    bufs = dev.buffers()
    _print_json([b.to_dict() for b in bufs]) if args.json else print(_table(bufs))
    return 0


def run_info(args: argparse.Namespace, dev: Device) -> int:
    buf = dev.buffer(args.id)
    _print_json(buf.to_dict()) if args.json else print(_describe(buf))
    return 0


def run_free(args: argparse.Namespace, dev: Device) -> int:
    if args.all:
        freed = dev.free_all()
    else:
        dev.free(args.id)
        freed = 1
    if args.json:
        _print_json({"freed": freed} if args.all else {"freed": freed, "id": args.id})
    else:
        print(f"freed {freed} buffer(s)" if args.all else f"freed buffer {args.id}")
    return 0


def _status_value(info: ModuleInfo, key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key != "dma_max_size":
        return str(value)
    if info.api_version < 3:
        return "not reported (a module older than api 3)"
    if value is None:
        return "unlimited"
    return f"{value} bytes" + (" (swiotlb bounce buffering)" if info.dma_bounce else "")


def run_status(args: argparse.Namespace, dev: Device) -> int:
    """Version, limits, use and features; then, in words, what they rule out here."""
    info = dev.info()
    status = {**info.to_dict(), "cache_ops": doctor.cache_ops_of(dev) or "unknown",
              "module_version": versions.module_version() or "unknown",
              "package": __version__}  # fmt: skip
    mismatch = versions.api_mismatch(info.api_version)
    if args.json:
        _print_json({**status, "api_mismatch": mismatch, "notes": info.notes()})
        return 0
    print("\n".join(f"{k:<14} {_status_value(info, k, v)}" for k, v in status.items()))
    if mismatch:
        print(mismatch)
    for note in info.notes():
        print(f"note: {note}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except errors.PagebufError as exc:
        _complain(exc)
        return exit_code_of(exc)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`pagebuf doctor | head -1`): stop quietly, as Unix tools
        # do, and leave nothing for the interpreter to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as exc:  # a bug: never exit 1, which says "corruption found"
        if os.environ.get("PAGEBUF_DEBUG"):
            traceback.print_exc()
        print(f"pagebuf: internal error: {type(exc).__name__}: {exc} (a bug: please report "
              "it with the traceback PAGEBUF_DEBUG=1 prints)", file=sys.stderr)  # fmt: skip
        return EXIT_INTERNAL
