"""Corruption-reproduction runs: the scenario of the reference note, as named arms.

One arm, for each of its buffers:
  1. prime   the kernel writes generation g-1 through its cached linear mapping, so on
             real hardware its alias holds dirty lines;
  2. (arm)   the arm's cache maintenance: `dma` hands the buffer to the "device"
             (dma_sync_single_for_device), `flush` cleans and invalidates the lines;
  3. write   generation g goes through the uncached user path (/dev/mem O_SYNC, or the
             module's uncached mmap where /dev/mem is refused);
  4. (ctl)   the `positive` control cleans the kernel's stale lines to memory, which
             must corrupt where aliases are not coherent; injection writes stale data
             to chosen lines through the kernel alias and cleans them, on any platform;
  5. check   every interval for the duration, verify every buffer through the
             uncached path (`dma` first hands it back: dma_sync_single_for_cpu).
`single-cpu` is `cached` with the other CPUs offline for the arm, always brought back.

Every check of every buffer is one JSON Lines record, written as it is measured.
"""

from __future__ import annotations

import ctypes
import errno as E
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field

from . import __version__, access, cpus, doctor, patterns, uapi
from .device import Buffer, Device
from .errors import DMA_BOUNCED, PagebufError
from .names import CONTROLS, EXIT_BROKEN, EXIT_CLEAN, EXIT_CORRUPT, MODES
from .physmem import PhysMem, PhysMemError
from .results import ResultWriter
from .verify import VerifyResult, cache_line_size, verify


@dataclass(frozen=True)
class RunParams:
    """What shapes a run; recorded in the header of its results."""

    arms: tuple[str, ...] = ("cached",)
    buffers: int = 4
    order: int = 4
    seed: int = 1
    pattern: str = "tagged"
    via: str = "auto"
    duration: float = 5.0
    interval: float = 1.0
    pressure: str = "none"
    busy_cpus: bool = False
    inject_into: str | None = None
    inject_lines: int = 8


@dataclass
class ArmResult:
    arm: str
    verdict: str
    note: str = ""
    corrupted: set[tuple[int, int]] = field(default_factory=set)
    injected: set[tuple[int, int]] = field(default_factory=set)


class Progress:
    """One line on stderr, rewritten in place; silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def show(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K" + text)
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _pattern_bytes(params: RunParams, buf: Buffer, generation: int) -> bytes:
    return patterns.generate(
        params.pattern, phys_addr=buf.phys_addr, size=buf.size, generation=generation,
        seed=params.seed + buf.id,
    ).tobytes()  # fmt: skip


def open_user_path(buf: Buffer, via: str, device_path: str | None,
                   dev: Device | None = None) -> tuple[PhysMem, str]:  # fmt: skip
    """The uncached user path to a buffer; `auto` takes /dev/mem, else the module's. `dev`:
    the open file that allocated the buffer, the only one a file-owned buffer maps through."""
    if via == "auto":
        try:
            mem = access.open_region(buf.phys_addr, buf.size, via="devmem", method="mmap")
            return mem, "devmem"
        except PhysMemError as exc:
            if exc.errno not in (E.EPERM, E.EINVAL, E.ENOENT, E.EACCES):
                raise
        via = "mmap-uc"
    return access.open_region(buf.phys_addr, buf.size, via=via, device_path=device_path,
                              device=dev), via  # fmt: skip


def _inject_targets(params: RunParams, bufs: list[Buffer], line: int) -> list[tuple[Buffer, int]]:
    rng = random.Random(params.seed)
    slots = [(b, off) for b in bufs for off in range(0, b.size, line)]
    return rng.sample(slots, min(params.inject_lines, len(slots)))


class Helpers:
    """The child processes of a run: cache thrashers and busy-CPU spinners."""

    def __init__(self) -> None:
        self.children: list[tuple[int, str]] = []

    @property
    def pids(self) -> list[int]:
        return [pid for pid, _ in self.children]

    def check(self) -> None:
        """Fail the run if a helper has stopped: it would lack the pressure it asked for."""
        for pid, what in list(self.children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                self.children.remove((pid, what))
                raise PagebufError(f"the {what} stopped early (wait status {status:#x}); "
                                   "the run would not have the pressure it asked for")  # fmt: skip


@contextmanager
def _pressure(kind: str, device_path: str | None, busy: bool) -> Iterator[Helpers]:
    """Cache pressure (a thrasher) and busy CPUs, as child processes killed on exit.

    Each child dies with the tool (PR_SET_PDEATHSIG), so a kill -9 of the tool leaves
    nothing spinning and no child holding /dev/pagebuf open (which would keep the
    run's file-owned buffers alive). The caller checks them as it goes.
    """
    helpers = Helpers()
    try:
        if kind != "none":
            pid = _spawn(lambda: _thrash(kind, device_path))
            helpers.children.append((pid, f"{kind} thrasher"))
        if busy:
            for _ in range(max((os.cpu_count() or 1) - 1, 0)):
                helpers.children.append((_spawn(_spin), "busy-CPU spinner"))
        yield helpers
        helpers.check()
    finally:
        for pid in helpers.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong)  # fmt: skip
_libc.prctl.restype = ctypes.c_int


def _spawn(body: Callable[[], None]) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller's stack
        code = 0
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(0)
            body()
        except BaseException as exc:  # reported, then the child ends
            print(f"pagebuf: pressure child: {exc}", file=sys.stderr)
            code = 1
        finally:
            os._exit(code)
    return pid


def _spin() -> None:
    while True:
        pass


def _thrash(kind: str, device_path: str | None) -> None:
    """Touch far more memory than any cache holds, so dirty lines get evicted."""
    if kind == "kernel":
        # Its own open file: the scratch buffer is freed when this child dies.
        with Device(device_path) as dev:
            scratch = dev.alloc(min(dev.info().max_order, 10), file_owned=True)
            data = os.urandom(scratch.size)
            while True:
                dev.kwrite(scratch.id, 0, data)
    block = bytearray(64 << 20)
    while True:
        for off in range(0, len(block), 4096):
            block[off] = (block[off] + 1) & 0xFF


def _check(mem: PhysMem, buf: Buffer, p: RunParams, gen: int, line: int) -> VerifyResult:
    """Verify one buffer through the user path: the mapping itself, or a read()."""
    spec = {"pattern": p.pattern, "phys_addr": buf.phys_addr, "generation": gen,
            "seed": p.seed + buf.id, "line_size": line}  # fmt: skip
    if mem.method == "mmap":
        with mem.view() as view:
            return verify(view, **spec)
    return verify(mem.read_bytes(0, buf.size), **spec)


class Experiment:
    """Runs arms one after another with the same seed, streaming records to `out`."""

    def __init__(self, dev: Device, params: RunParams, out: ResultWriter,
                 device_path: str | None = None) -> None:  # fmt: skip
        self.dev = dev
        self.params = params
        self.out = out
        self.device_path = device_path
        self.line = cache_line_size()
        self.info = dev.info()
        self.report = doctor.diagnose(lambda: Device(device_path))
        self.progress = Progress()

    def header(self) -> None:
        self.out.write({
            "type": "header",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "params": asdict(self.params),
            "module": self.info.to_dict(),
            "line_size": self.line,
            "pagebuf_version": __version__,
            "kernel": os.uname().release,
            "machine": os.uname().machine,
            "doctor": self.report.to_dict(),
        })  # fmt: skip

    def run(self) -> list[ArmResult]:
        self.header()
        results = []
        for arm in self.params.arms:
            result = self.run_arm(arm)
            results.append(result)
            self.out.write({"type": "arm_summary", "arm": arm, "verdict": result.verdict,
                            "note": result.note, "corrupted_lines": len(result.corrupted),
                            "injected_lines": len(result.injected)})  # fmt: skip
        code = exit_code(results)
        self.out.write({"type": "summary", "exit_code": code,
                        "verdicts": {r.arm: r.verdict for r in results}})  # fmt: skip
        return results

    def _skip_reason(self, arm: str) -> str | None:
        if arm == "dma":
            # Bounced: the syncs copy between the pages and a bounce slot, and the copy
            # back would revert the user's uncached write (false corruption).
            if self.info.dma_bounce:
                return DMA_BOUNCED
            too_large = self.info.dma_refusal(self.params.order)
            if too_large:
                return f"cannot map these buffers for DMA: {too_large}"
        if arm in ("flush", "positive") and not self.info.can_flush:
            return (
                "this kernel gives the module no cache clean or flush (KFLUSH unsupported; "
                "/sys/class/misc/pagebuf/cache_ops says none)"
            )
        injecting = arm == "inject" or self.params.inject_into == arm
        if injecting and not self.info.can_inject:
            why = (
                "the module was not loaded with inject=1"
                if self.info.can_flush
                else "the module cannot flush here (cache_ops none), so INJECT is off"
            )
            return f"{why}, so this run did not prove that its detector finds corruption"
        return None

    def run_arm(self, arm: str) -> ArmResult:
        reason = self._skip_reason(arm)
        if reason:
            return ArmResult(arm, "skipped", reason)
        with ExitStack() as stack:
            if arm == "single-cpu":
                stack.enter_context(cpus.single_cpu(keep=0))
            bufs: list[Buffer] = []
            try:
                for _ in range(self.params.buffers):
                    bufs.append(self.dev.alloc(self.params.order, dma=arm == "dma",
                                               file_owned=True))  # fmt: skip
                if any(b.bounced for b in bufs):  # bounced without FEAT_DMA_BOUNCE
                    return ArmResult(arm, "skipped", DMA_BOUNCED)
                return self._run_arm(arm, bufs, stack)
            finally:
                for b in bufs:
                    self.dev.free(b.id)

    def _run_arm(self, arm: str, bufs: list[Buffer], stack: ExitStack) -> ArmResult:
        p = self.params
        mems = []
        for b in bufs:
            mem, via = open_user_path(b, p.via, self.device_path, self.dev)
            mems.append(stack.enter_context(mem))
        gen = 2
        for b, mem in zip(bufs, mems):
            self.dev.kwrite(b.id, 0, _pattern_bytes(p, b, gen - 1))  # prime: dirty alias
            if arm == "dma":
                self.dev.sync(b.id, uapi.SYNC_FOR_DEVICE)
            elif arm == "flush":
                self.dev.kflush(b.id)
            mem.write_bytes(0, _pattern_bytes(p, b, gen))  # the user's uncached write
            if arm == "positive":
                # The kernel's stale dirty lines cleaned over the user's data.
                self.dev.kflush(b.id, clean_only=True)
        injected: set[tuple[int, int]] = set()
        if arm == "inject" or p.inject_into == arm:
            for b, off in _inject_targets(p, bufs, self.line):
                stale = _pattern_bytes(p, b, gen - 1)[off : off + self.line]
                self.dev.inject(b.id, off, stale)
                injected.add((b.id, off))
            self.out.write({"type": "inject", "arm": arm,
                            "lines": sorted([list(x) for x in injected])})  # fmt: skip

        corrupted: set[tuple[int, int]] = set()
        busy = p.busy_cpus and arm != "single-cpu"
        with _pressure(p.pressure, self.device_path, busy) as helpers:
            try:
                misclassified = self._check_loop(arm, bufs, mems, gen, injected, corrupted,
                                                 helpers)  # fmt: skip
            finally:
                self.progress.done()
        return self._verdict(arm, corrupted, injected, misclassified)

    def _check_loop(self, arm: str, bufs: list[Buffer], mems: list[PhysMem], gen: int,
                    injected: set[tuple[int, int]], corrupted: set[tuple[int, int]],
                    helpers: Helpers) -> int:  # fmt: skip
        """Verify every buffer every interval for the duration, recording each check into
        `corrupted`; return how many injected lines were classified other than stale."""
        p = self.params
        misclassified = 0
        start = time.monotonic()
        while True:
            helpers.check()
            t = time.monotonic() - start
            for b, mem in zip(bufs, mems):
                if arm == "dma":
                    self.dev.sync(b.id, uapi.SYNC_FOR_CPU)
                t0 = time.perf_counter()
                res = _check(mem, b, p, gen, self.line)
                secs = time.perf_counter() - t0
                bad = [(m.phys_addr - b.phys_addr, m.classification) for m in res.mismatches]
                for off, cls in bad:
                    corrupted.add((b.id, off))
                    if (b.id, off) in injected and cls != "stale":
                        misclassified += 1
                self.out.write({
                    "type": "check", "arm": arm, "t": round(t, 3), "buffer": b.id,
                    "phys_addr": b.phys_addr, "generation": gen,
                    "lines_checked": res.lines_checked, "bad_lines": len(bad),
                    **{c: res.counts.get(c, 0) for c in ("stale", "foreign", "random")},
                    "bytes": b.size, "seconds": round(secs, 6),
                    "bad": [[off, cls] for off, cls in bad],
                })  # fmt: skip
            self.progress.show(f"[{arm}] {t:5.1f}/{p.duration:.1f}s  "
                               f"corrupted lines: {len(corrupted)}")  # fmt: skip
            if t >= p.duration:
                return misclassified
            time.sleep(max(0.0, min(p.interval, p.duration - t)))

    def _verdict(self, arm: str, corrupted: set[tuple[int, int]],
                 injected: set[tuple[int, int]], misclassified: int) -> ArmResult:  # fmt: skip
        result = ArmResult(arm, "clean", corrupted=corrupted, injected=injected)
        if injected:
            missed, extra = injected - corrupted, corrupted - injected
            if missed or extra or misclassified:
                result.verdict = "broken"
                result.note = (f"injection not detected exactly: {len(missed)} missed, "
                               f"{len(extra)} extra, {misclassified} misclassified")  # fmt: skip
            else:
                result.verdict = "injected-detected"
                result.note = f"all {len(injected)} injected lines found, nothing else"
        elif arm == "positive":
            result.verdict = "fired" if corrupted else "did-not-fire"
            if not corrupted:
                result.note = "positive control did not fire: " + self._why_coherent()
        elif corrupted:
            result.verdict = "corrupted"
        return result

    def _why_coherent(self) -> str:
        for name in ("virtual machine", "self-snoop"):
            f = self.report.get(name)
            if f is not None and f.verdict in ("warn", "ok"):
                return f"expected here ({name}: {f.detail}); this does not show the platform safe"
        return "this platform kept the aliases coherent in this run; that does not prove it safe"


def exit_code(results: list[ArmResult]) -> int:
    if any(r.verdict == "broken" for r in results):
        return EXIT_BROKEN
    if any(r.verdict == "corrupted" for r in results):
        return EXIT_CORRUPT
    return EXIT_CLEAN


def check_params(p: RunParams) -> None:
    known = MODES + CONTROLS
    bad = [a for a in p.arms if a not in known]
    if bad or not p.arms:
        raise PagebufError(f"unknown arm(s) {', '.join(bad) or '(none)'}: use {', '.join(known)}",
                           E.EINVAL)  # fmt: skip
    if p.inject_into is not None and p.inject_into not in p.arms:
        raise PagebufError(f"--inject-into {p.inject_into}: that arm is not in this run", E.EINVAL)
    if p.buffers < 1 or p.duration < 0 or p.interval <= 0 or p.inject_lines < 1:
        raise PagebufError("buffers and inject lines must be >= 1, interval > 0", E.EINVAL)
    if p.pattern not in patterns.PATTERNS:
        raise PagebufError(f"unknown pattern {p.pattern!r}", E.EINVAL)
