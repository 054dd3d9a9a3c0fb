"""Compare a region with its expected pattern, cache line by cache line, and say what
each corrupted line holds:

    stale    an earlier generation's value at the same address, or the zero fill the
             module hands out: the signature of a write-back of an old cached line
    foreign  (tagged pattern) words tagged with another address: bytes from elsewhere
    random   anything else

The whole region is compared with memcmp() first; a region that differs is compared
again a cache-sized chunk at a time, and only the lines of the chunks that differ are
looked at one by one. Counts are exact however many lines are listed.
"""

from __future__ import annotations

import ctypes
import errno as E
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import patterns
from .errors import InvalidRequestError
from .sysinfo import cache_line_size

STALE_WINDOW = 16  # how many earlier generations a stale line is matched against
CLASSES = ("stale", "foreign", "random")
STALE, FOREIGN, RANDOM = range(len(CLASSES))  # class codes: indexes into CLASSES
CHUNK = 1 << 20  # bytes compared at a time once a region differs: stays in the cache

_memcmp = ctypes.CDLL(None).memcmp  # the C library this Python runs on
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_memcmp.restype = ctypes.c_int


@dataclass(frozen=True)
class Mismatch:
    """One corrupted cache line."""

    phys_addr: int
    classification: str
    expected: str
    actual: str
    bad_words: int
    generation: int | None = None
    source: int | None = None


@dataclass
class VerifyResult:
    """A check of one region. `bad_lines` and `counts` cover every corrupted line;
    `mismatches` lists the first `max_reports` of them (`reports_truncated` says when
    that is not all); `bad_offsets` and `bad_classes` hold every one, unlisted."""

    bytes_checked: int
    lines_checked: int
    line_size: int
    bad_lines: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    mismatches: list[Mismatch] = field(default_factory=list)
    max_reports: int = 4096
    # Every corrupted line: its byte offset in the region, its class (an index into CLASSES).
    bad_offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64), repr=False,
                                    compare=False)  # fmt: skip
    bad_classes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8), repr=False,
                                    compare=False)  # fmt: skip

    @property
    def ok(self) -> bool:
        return self.bad_lines == 0

    @property
    def reports_truncated(self) -> bool:
        """Corrupted lines exist beyond those listed in `mismatches`."""
        return self.bad_lines > len(self.mismatches)

    def corrupted(self) -> list[tuple[int, str]]:
        """Every corrupted line, listed or not: (byte offset in the region, class)."""
        return [(off, CLASSES[c]) for off, c in zip(self.bad_offsets.tolist(),
                                                   self.bad_classes.tolist())]  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        mismatches = [{**asdict(m), "phys_addr_hex": f"0x{m.phys_addr:x}"}
                      for m in self.mismatches]  # fmt: skip
        return {
            "bytes_checked": self.bytes_checked,
            "lines_checked": self.lines_checked,
            "line_size": self.line_size,
            "bad_lines": self.bad_lines,
            "counts": dict(self.counts),
            "mismatches": mismatches,
            "max_reports": self.max_reports,
            "reports_listed": len(self.mismatches),
            "reports_truncated": self.reports_truncated,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class _Spec:
    """What a region should hold, and how it is cut into lines."""

    pattern: str
    phys_addr: int
    words: int
    generation: int
    seed: int
    value: int | None
    wpl: int  # words per line


@lru_cache(maxsize=8)
def _expected(pattern: str, phys_addr: int, size: int, generation: int, seed: int,
              value: int | None) -> np.ndarray:  # fmt: skip
    arr = patterns.generate(pattern, phys_addr=phys_addr, size=size, generation=generation,
                            seed=seed, value=value)  # fmt: skip
    arr.flags.writeable = False  # shared by every caller through the cache
    return arr


def expected(pattern: str, *, phys_addr: int, size: int, generation: int, seed: int = 0,
             value: int | None = None) -> np.ndarray:  # fmt: skip
    """The expected words (read-only, cached: repeated checks do not regenerate them)."""
    return _expected(pattern, phys_addr, size, generation, seed, value)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Two contiguous word arrays hold the same bytes: one memcmp(), reading `a` (the
    region, maybe an uncached mapping) as the aligned first operand."""
    return a.size == b.size and _memcmp(a.ctypes.data, b.ctypes.data, a.nbytes) == 0


def verify(
    actual: bytes | bytearray | memoryview,
    *,
    pattern: str,
    phys_addr: int,
    generation: int,
    seed: int = 0,
    value: int | None = None,
    line_size: int | None = None,
    max_reports: int = 4096,
) -> VerifyResult:
    """Check `actual`, the contents of [phys_addr, phys_addr + len(actual)), against
    the pattern; list at most `max_reports` corrupted lines, count them all."""
    line = line_size or cache_line_size()
    if line <= 0 or line % 8:
        raise InvalidRequestError(f"line size {line}: not a whole number of 64-bit words",
                                  E.EINVAL)  # fmt: skip
    words = np.frombuffer(actual, dtype="<u8")
    size = words.size * 8
    exp = expected(pattern, phys_addr=phys_addr, size=size, generation=generation, seed=seed,
                   value=value)  # fmt: skip
    result = VerifyResult(bytes_checked=size, lines_checked=-(-size // line), line_size=line,
                          max_reports=max_reports)  # fmt: skip
    if _equal(words, exp):
        return result
    spec = _Spec(pattern, phys_addr, words.size, generation, seed, value, line // 8)
    step = max(1, CHUNK // line) * spec.wpl  # words per chunk, whole lines
    lines: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    for start in range(0, words.size, step):
        got, want = words[start : start + step], exp[start : start + step]
        if not _equal(got, want):
            idx, cls = _check_chunk(result, spec, got, want, start // spec.wpl)
            lines.append(idx)
            classes.append(cls)
    result.bad_offsets = np.concatenate(lines) * line
    result.bad_classes = np.concatenate(classes)
    result.bad_lines = int(result.bad_offsets.size)
    result.counts = dict(zip(CLASSES, np.bincount(result.bad_classes, minlength=len(CLASSES))
                             .tolist()))  # fmt: skip
    return result


def _as_lines(words: np.ndarray, wpl: int) -> np.ndarray:
    """Words as rows of a line each, a short last line padded with zeros."""
    pad = (-words.size) % wpl
    if pad:
        words = np.concatenate([words, np.zeros(pad, np.uint64)])
    return words.reshape(-1, wpl)


def _check_chunk(result: VerifyResult, spec: _Spec, got_words: np.ndarray,
                 want_words: np.ndarray, first_line: int,
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Find and classify the corrupted lines of one chunk starting at line `first_line`;
    list them in `result` while it has room. Returns their line indexes and classes."""
    got_lines, want_lines = _as_lines(got_words, spec.wpl), _as_lines(want_words, spec.wpl)
    rows = np.flatnonzero((got_lines != want_lines).any(axis=1))
    got, want = got_lines[rows], want_lines[rows]
    diff = got != want
    line_idx = rows + first_line
    cls, gens, srcs = _classify(got, want, diff, spec, line_idx)
    room = max(0, result.max_reports - len(result.mismatches))
    for k in range(min(rows.size, room)):
        first = int(np.argmax(diff[k]))
        result.mismatches.append(
            Mismatch(
                phys_addr=spec.phys_addr + int(line_idx[k]) * spec.wpl * 8,
                classification=CLASSES[cls[k]],
                expected=f"0x{int(want[k, first]):016x}",
                actual=f"0x{int(got[k, first]):016x}",
                bad_words=int(diff[k].sum()),
                generation=None if gens[k] < 0 else int(gens[k]),
                source=None if srcs[k] < 0 else int(srcs[k]),
            )
        )
    return line_idx, cls


def _classify(got: np.ndarray, want: np.ndarray, diff: np.ndarray, spec: _Spec,
              line_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per corrupted line: class code, the stale generation (or -1), the foreign source
    (or -1)."""
    if spec.pattern == "tagged":
        stale, foreign, gens, srcs = _classify_tagged(got, want, diff, spec.generation)
    else:
        stale, gens = _classify_stale(got, diff, spec, line_idx)
        foreign, srcs = np.zeros(got.shape[0], dtype=bool), np.full(got.shape[0], -1, np.int64)
    cls = np.where(stale, STALE, np.where(foreign, FOREIGN, RANDOM)).astype(np.int8)
    return cls, gens, srcs


def _classify_tagged(got: np.ndarray, want: np.ndarray, diff: np.ndarray, generation: int,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Tags say it all: an older generation at the same address, or another address."""
    n = got.shape[0]
    zero = got == 0
    is_tag, gen, addr = patterns.decode_tags(got)
    _, _, want_addr = patterns.decode_tags(want)
    older = gen < np.uint64(generation & 0xFFFF)
    stale_w = zero | (is_tag & (addr == want_addr) & older)
    foreign_w = is_tag & (addr != want_addr)
    stale = ~(diff & ~stale_w).any(axis=1)
    foreign = ~stale & ~(diff & ~(stale_w | foreign_w)).any(axis=1) & (diff & foreign_w).any(axis=1)
    tag_gens = np.where(diff & is_tag & ~zero, gen.astype(np.int64), -1)
    gens = np.where(stale, tag_gens.max(axis=1), -1)
    first_foreign = np.argmax(diff & foreign_w, axis=1)
    srcs = np.where(foreign, addr[np.arange(n), first_foreign].astype(np.int64), -1)
    return stale, foreign, gens, srcs


def _classify_stale(got: np.ndarray, diff: np.ndarray, spec: _Spec, line_idx: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Untagged patterns: match each corrupted word against the zero fill and the
    STALE_WINDOW earlier generations, built only for the span of the corrupted lines."""
    gens = np.full(got.shape[0], -1, dtype=np.int64)
    stale_w = got == 0
    top = spec.generation - 1
    for older_gen in range(top, max(-1, top - STALE_WINDOW), -1):
        match = got == _older_lines(spec, older_gen, line_idx)
        newly = diff & match & ~stale_w
        gens = np.where(newly.any(axis=1) & (gens < 0), older_gen, gens)
        stale_w |= match
    stale = ~(diff & ~stale_w).any(axis=1)
    return stale, np.where(stale, gens, -1)


def _older_lines(spec: _Spec, generation: int, line_idx: np.ndarray) -> np.ndarray:
    """Lines `line_idx` (ascending) of an earlier generation, a short last line padded
    with zeros as the compared lines are."""
    lo, hi = int(line_idx[0]), int(line_idx[-1]) + 1
    first, last = lo * spec.wpl, min(hi * spec.wpl, spec.words)
    old = np.zeros((hi - lo) * spec.wpl, dtype=np.uint64)
    patterns.fill_words(spec.pattern, old[: last - first], phys_addr=spec.phys_addr,
                        generation=generation, seed=spec.seed, value=spec.value,
                        first=first)  # fmt: skip
    return old.reshape(-1, spec.wpl)[line_idx - lo]


def fill(
    target: memoryview | bytearray,
    *,
    pattern: str,
    phys_addr: int,
    generation: int,
    seed: int = 0,
    value: int | None = None,
) -> None:
    """Write the pattern into a writable buffer (a mapping), built in place a chunk at
    a time: no copy of the region's size."""
    dst = np.frombuffer(target, dtype="<u8")
    patterns.generate(pattern, phys_addr=phys_addr, size=dst.size * 8, generation=generation,
                      seed=seed, value=value, out=dst)  # fmt: skip
