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

import errno as E
import os
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from . import __version__, access, cpus, doctor, preload, pressure, records, uapi
from .device import Buffer, Device
from .errors import DMA_BOUNCED, InvalidRequestError, PagebufError
from .names import CONTROLS, MODES, PATTERNS
from .physmem import PhysMem, PhysMemError
from .results import ResultWriter
from .sysinfo import cache_line_size

if TYPE_CHECKING:
    from .verify import VerifyResult


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
    strict: bool = False  # an INCONCLUSIVE run exits records.EXIT_INCONCLUSIVE, not 0
    dma_device: str | None = None  # "bus:name" the dma arm maps for; pagebuf's own if None


@dataclass
class ArmResult:
    arm: str
    verdict: str
    note: str = ""
    corrupted: set[tuple[int, int]] = field(default_factory=set)
    injected: set[tuple[int, int]] = field(default_factory=set)
    access: dict[str, Any] | None = None  # the user path it really took


@dataclass(frozen=True)
class Arm:
    """What an arm does around the user's write, as data: the cache maintenance of the
    kernel's alias before the write, after it and before each check, and what it needs."""

    dma: bool = False  # its buffers are mapped for DMA (dma_map_page, bidirectional)
    before_write: str | None = None  # "sync-for-device" or "flush"
    after_write: str | None = None  # "clean": the kernel's stale lines over the user's data
    before_check: str | None = None  # "sync-for-cpu"
    single_cpu: bool = False  # the other CPUs offline while it runs
    needs_flush: bool = False  # KFLUSH must work here (cache_ops not none)
    control: str | None = None  # "positive" or "inject": a control, not a mitigation


ARMS = {
    "cached": Arm(),
    "dma": Arm(dma=True, before_write="sync-for-device", before_check="sync-for-cpu"),
    "single-cpu": Arm(single_cpu=True),
    "flush": Arm(before_write="flush", needs_flush=True),
    "positive": Arm(after_write="clean", needs_flush=True, control="positive"),
    "inject": Arm(control="inject"),
}
assert set(ARMS) == set(MODES + CONTROLS)

# Why a named device's buffers cannot be mapped, which skips the dma arm with the reason:
# no DMA mask, no driver bound, an IOMMU domain owned elsewhere, too large a mapping,
# gone meanwhile.
_CANNOT_MAP = (E.EOPNOTSUPP, E.ENXIO, E.EBUSY, E.E2BIG, E.ENODEV, E.EIO)
# What the dma arm's access record says of the device its buffers are mapped for.
DMA_FACTS = ("dma_device", "dma_dir", "dma_mask_hex", "dma_coherence", "dma_syncs",
             "dma_iommu", "bounced")  # fmt: skip

Progress = Callable[[str | None], None]  # a line of progress; None when an arm ends


def _no_progress(text: str | None) -> None:
    return None


def _pattern_bytes(params: RunParams, buf: Buffer, generation: int) -> bytes:
    from . import patterns

    return patterns.generate(
        params.pattern, phys_addr=buf.phys_addr, size=buf.size, generation=generation,
        seed=params.seed + buf.id,
    ).tobytes()  # fmt: skip


def open_user_path(buf: Buffer, via: str, device_path: str | None,
                   dev: Device | None = None) -> tuple[PhysMem, str]:  # fmt: skip
    """The user path to a buffer and the name of the one taken: `auto` is /dev/mem, else
    the module's uncached mmap; a cached path only by name (`devmem-rw`, `mmap-wb`). `dev`:
    the open file that allocated the buffer, the only one a file-owned buffer maps through."""
    if via not in access.RUN_VIAS:
        raise InvalidRequestError(f"unknown user path {via!r}: one of {', '.join(access.RUN_VIAS)}",
                           E.EINVAL)  # fmt: skip
    if via == "devmem":
        try:
            return access.open_region(buf.phys_addr, buf.size, via="devmem", method="mmap")
        except PhysMemError as exc:
            if exc.errno == E.EINVAL:
                raise InvalidRequestError(access.DEVMEM_PAT, E.EINVAL) from None
            raise
    return access.open_region(buf.phys_addr, buf.size, via=via, method="mmap",
                              device_path=device_path, device=dev)  # fmt: skip


def _inject_targets(params: RunParams, bufs: list[Buffer], line: int) -> list[tuple[Buffer, int]]:
    rng = random.Random(params.seed)
    slots = [(b, off) for b in bufs for off in range(0, b.size, line)]
    return rng.sample(slots, min(params.inject_lines, len(slots)))


# Bad lines a check record lists; its counts are exact whatever the list holds.
MAX_LISTED = 4096


def _check(mem: PhysMem, buf: Buffer, p: RunParams, gen: int, line: int) -> VerifyResult:
    """Verify one buffer through the user path: the mapping itself, or a read()."""
    from .verify import verify

    spec = {"pattern": p.pattern, "phys_addr": buf.phys_addr, "generation": gen,
            "seed": p.seed + buf.id, "line_size": line, "max_reports": MAX_LISTED}  # fmt: skip
    with mem.snapshot() as data:
        return verify(data, **spec)


class Experiment:
    """Runs arms one after another with the same seed, streaming records to `out`."""

    def __init__(
        self,
        dev: Device,
        params: RunParams,
        out: ResultWriter,
        device_path: str | None = None,
        progress: Progress = _no_progress,
    ) -> None:
        preload.start()  # numpy, while the setup below runs
        self.dev = dev
        self.params = params
        self.out = out
        self.device_path = device_path
        self.line = cache_line_size()
        self.info = dev.info()
        self.report = doctor.diagnose(lambda: Device(device_path))
        self.progress = progress

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
                            "injected_lines": len(result.injected),
                            "access": result.access})  # fmt: skip
        p = self.params
        verdict, reason = records.overall_of(p.arms, p.inject_into,
                                             [(r.arm, r.verdict) for r in results])  # fmt: skip
        code = records.exit_code((r.verdict for r in results), verdict, p.strict)
        self.out.write({"type": "summary", "exit_code": code,
                        "verdicts": {r.arm: r.verdict for r in results},
                        "overall": verdict, "overall_reason": reason})  # fmt: skip
        return results

    def _skip_reason(self, arm: str) -> str | None:
        spec = ARMS[arm]
        if spec.dma and self.params.dma_device is None:
            # Bounced: the syncs copy between the pages and a bounce slot, and the copy
            # back would revert the user's uncached write (false corruption). A named
            # device's buffers say for themselves (an IOMMU may translate for it).
            if self.info.dma_bounce:
                return DMA_BOUNCED
            too_large = self.info.dma_refusal(self.params.order)
            if too_large:
                return f"cannot map these buffers for DMA: {too_large}"
        if spec.needs_flush and not self.info.can_flush:
            return (
                "this kernel gives the module no cache clean or flush (KFLUSH unsupported; "
                "/sys/class/misc/pagebuf/cache_ops says none)"
            )
        injecting = spec.control == "inject" or self.params.inject_into == arm
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
            if ARMS[arm].single_cpu:
                stack.enter_context(cpus.single_cpu(keep=0))
            bufs: list[Buffer] = []
            try:
                try:
                    for _ in range(self.params.buffers):
                        bufs.append(self._alloc(arm))
                except PagebufError as exc:
                    if exc.errno not in _CANNOT_MAP or not self.params.dma_device:
                        raise
                    return ArmResult(arm, "skipped", f"cannot map for "
                                     f"{self.params.dma_device}: {exc.reason}")  # fmt: skip
                if any(b.bounced for b in bufs):  # bounced without FEAT_DMA_BOUNCE
                    return ArmResult(arm, "skipped", DMA_BOUNCED)
                return self._run_arm(arm, bufs, stack)
            finally:
                for b in bufs:
                    self.dev.free(b.id)

    def _alloc(self, arm: str) -> Buffer:
        """One of an arm's buffers: the dma arm's mapped for --dma-device, if named."""
        dma = ARMS[arm].dma
        device = self.params.dma_device if dma else None
        return self.dev.alloc(self.params.order, dma=dma, file_owned=True, dma_device=device)

    def _maintain(self, action: str | None, buf: Buffer) -> None:
        """One of an arm's cache-maintenance steps on the kernel's alias of `buf`."""
        if action == "sync-for-device":
            self.dev.sync(buf.id, uapi.SYNC_FOR_DEVICE)
        elif action == "sync-for-cpu":
            self.dev.sync(buf.id, uapi.SYNC_FOR_CPU)
        elif action == "flush":
            self.dev.kflush(buf.id)
        elif action == "clean":  # the kernel's stale dirty lines cleaned to memory
            self.dev.kflush(buf.id, clean_only=True)
        elif action is not None:
            raise AssertionError(f"unknown cache maintenance {action!r}")

    def _run_arm(self, arm: str, bufs: list[Buffer], stack: ExitStack) -> ArmResult:
        p, spec = self.params, ARMS[arm]
        mems, taken = [], set()
        for b in bufs:
            mem, via = open_user_path(b, p.via, self.device_path, self.dev)
            mems.append(stack.enter_context(mem))
            taken.add(via)
        used = access.describe_path(taken.pop()) if len(taken) == 1 else None
        if used is None:  # auto found /dev/mem for some buffers and not others
            paths = ", ".join(sorted(taken))
            raise InvalidRequestError(f"--via {p.via} took different paths for one arm's buffers "
                               f"({paths}): name one with --via", E.EINVAL)  # fmt: skip
        if spec.dma:  # the device the syncs are for, and what it is
            facts = bufs[0].to_dict()
            used["dma"] = {k: facts[k] for k in DMA_FACTS}
        self.out.write({"type": "access", "arm": arm, **used})
        gen = 2
        for b, mem in zip(bufs, mems):
            self.dev.kwrite(b.id, 0, _pattern_bytes(p, b, gen - 1))  # prime: dirty alias
            self._maintain(spec.before_write, b)
            mem.write_bytes(0, _pattern_bytes(p, b, gen))  # the user's uncached write
            self._maintain(spec.after_write, b)
        injected: set[tuple[int, int]] = set()
        if spec.control == "inject" or p.inject_into == arm:
            for b, off in _inject_targets(p, bufs, self.line):
                stale = _pattern_bytes(p, b, gen - 1)[off : off + self.line]
                self.dev.inject(b.id, off, stale)
                injected.add((b.id, off))
            self.out.write({"type": "inject", "arm": arm,
                            "lines": sorted([list(x) for x in injected])})  # fmt: skip

        corrupted: set[tuple[int, int]] = set()
        busy = p.busy_cpus and not spec.single_cpu
        with pressure.pressure(p.pressure, self.device_path, busy) as helpers:
            try:
                misclassified = self._check_loop(arm, bufs, mems, used["via"], gen, injected,
                                                 corrupted, helpers)  # fmt: skip
            finally:
                self.progress(None)
        result = self._verdict(arm, corrupted, injected, misclassified)
        result.access = used
        return result

    def _check_loop(self, arm: str, bufs: list[Buffer], mems: list[PhysMem], via: str,
                    gen: int, injected: set[tuple[int, int]], corrupted: set[tuple[int, int]],
                    helpers: pressure.Helpers) -> int:  # fmt: skip
        """Verify every buffer every interval for the duration, recording each check into
        `corrupted`; return how many injected lines were classified other than stale."""
        p = self.params
        misclassified = 0
        start = time.monotonic()
        while True:
            helpers.check()
            t = time.monotonic() - start
            for b, mem in zip(bufs, mems):
                self._maintain(ARMS[arm].before_check, b)
                t0 = time.perf_counter()
                res = _check(mem, b, p, gen, self.line)
                secs = time.perf_counter() - t0
                for off, cls in res.corrupted():  # every bad line, listed or not
                    corrupted.add((b.id, off))
                    if (b.id, off) in injected and cls != "stale":
                        misclassified += 1
                listed = [[m.phys_addr - b.phys_addr, m.classification] for m in res.mismatches]
                self.out.write({
                    "type": records.CHECK, "arm": arm, "t": round(t, 3), "buffer": b.id,
                    "phys_addr": b.phys_addr, "generation": gen, "via": via,
                    "lines_checked": res.lines_checked, "bad_lines": res.bad_lines,
                    **{c: res.counts.get(c, 0) for c in records.CLASSES},
                    "bytes": b.size, "seconds": round(secs, 6),
                    "bad": listed, "listed": len(listed), "bad_truncated": res.reports_truncated,
                })  # fmt: skip
            self.progress(f"[{arm}] {t:5.1f}/{p.duration:.1f}s  "
                               f"corrupted lines: {len(corrupted)}")  # fmt: skip
            if t >= p.duration:
                return misclassified
            time.sleep(max(0.0, min(p.interval, p.duration - t)))

    def _verdict(self, arm: str, corrupted: set[tuple[int, int]],
                 injected: set[tuple[int, int]], misclassified: int) -> ArmResult:  # fmt: skip
        result = ArmResult(arm, "clean", corrupted=corrupted, injected=injected)
        if injected:
            missed, extra = injected - corrupted, corrupted - injected
            if missed or misclassified:
                result.verdict = "broken"
                result.note = (f"injection not detected exactly: {len(missed)} missed, "
                               f"{misclassified} not read as stale, {len(extra)} other lines "
                               "corrupted")  # fmt: skip
            elif extra:  # the detector found every injected line; the rest is real
                result.verdict = "corrupted"
                result.note = (f"all {len(injected)} injected lines found as stale, and "
                               f"{len(extra)} lines that were not injected corrupted")  # fmt: skip
            else:
                result.verdict = "injected-detected"
                result.note = f"all {len(injected)} injected lines found, nothing else"
        elif ARMS[arm].control == "positive":
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


def check_params(p: RunParams) -> None:
    """Refuse parameters no run can take, naming the option (the CLI's own checks catch
    them first; this is for library callers)."""
    known = MODES + CONTROLS
    bad = [a for a in p.arms if a not in known]
    if bad or not p.arms:
        raise InvalidRequestError(f"unknown arm(s) {', '.join(bad) or '(none)'}: use "
                                  f"{', '.join(known)}", E.EINVAL)  # fmt: skip
    if p.inject_into is not None and p.inject_into not in p.arms:
        raise InvalidRequestError(f"--inject-into {p.inject_into}: that arm is not in this run",
                                  E.EINVAL)  # fmt: skip
    for name, ok, rule in (("--buffers", p.buffers >= 1, ">= 1"),
                           ("--duration", p.duration >= 0, ">= 0"),
                           ("--interval", p.interval > 0, "> 0"),
                           ("--inject-lines", p.inject_lines >= 1, ">= 1")):  # fmt: skip
        if not ok:
            raise InvalidRequestError(f"{name} must be {rule}", E.EINVAL)
    if p.pattern not in PATTERNS:
        raise InvalidRequestError(f"unknown pattern {p.pattern!r}: one of {', '.join(PATTERNS)}",
                                  E.EINVAL)  # fmt: skip
