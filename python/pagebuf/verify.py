"""Compare a region with its expected pattern, cache line by cache line, and say what
each corrupted line holds:

    stale    an earlier generation's value at the same address, or the zero fill the
             module hands out: the signature of a write-back of an old cached line
    foreign  (tagged pattern) words tagged with another address: bytes from elsewhere
    random   anything else

The whole region is compared in one numpy pass; only corrupted lines are looked at
one by one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from . import patterns
from .sysinfo import cache_line_size

STALE_WINDOW = 16  # how many earlier generations a stale line is matched against
CLASSES = ("stale", "foreign", "random")


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
    bytes_checked: int
    lines_checked: int
    line_size: int
    bad_lines: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.bad_lines == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        for m in d["mismatches"]:
            m["phys_addr_hex"] = f"0x{m['phys_addr']:x}"
        return d


@lru_cache(maxsize=8)
def _expected(pattern: str, phys_addr: int, size: int, generation: int, seed: int,
              value: int) -> np.ndarray:  # fmt: skip
    arr = patterns.generate(pattern, phys_addr=phys_addr, size=size, generation=generation,
                            seed=seed, value=value)  # fmt: skip
    arr.flags.writeable = False  # shared by every caller through the cache
    return arr


def expected(pattern: str, *, phys_addr: int, size: int, generation: int, seed: int = 0,
             value: int = 0) -> np.ndarray:  # fmt: skip
    """The expected words (read-only, cached: repeated checks do not regenerate them)."""
    return _expected(pattern, phys_addr, size, generation, seed, value)


def verify(
    actual: bytes | bytearray | memoryview,
    *,
    pattern: str,
    phys_addr: int,
    generation: int,
    seed: int = 0,
    value: int = 0,
    line_size: int | None = None,
    max_reports: int = 4096,
) -> VerifyResult:
    line = line_size or cache_line_size()
    words = np.frombuffer(actual, dtype="<u8")
    size = words.size * 8
    exp = expected(pattern, phys_addr=phys_addr, size=size, generation=generation, seed=seed,
                   value=value)  # fmt: skip
    result = VerifyResult(bytes_checked=size, lines_checked=-(-size // line), line_size=line)
    if np.array_equal(words, exp):
        return result

    wpl = line // 8
    pad = (-words.size) % wpl
    got = np.concatenate([words, np.zeros(pad, np.uint64)]) if pad else words.copy()
    want = np.concatenate([exp, np.zeros(pad, np.uint64)]) if pad else exp
    got, want = got.reshape(-1, wpl), want.reshape(-1, wpl)
    bad_idx = np.flatnonzero((got != want).any(axis=1))
    g, w = got[bad_idx], want[bad_idx]
    diff = g != w
    cls, gens, srcs = _classify(g, w, diff, pattern, phys_addr, size, generation, seed, value,
                                bad_idx, wpl)  # fmt: skip

    result.bad_lines = int(bad_idx.size)
    for name in CLASSES:
        result.counts[name] = int((cls == name).sum())
    for k in range(min(bad_idx.size, max_reports)):
        first = int(np.argmax(diff[k]))
        result.mismatches.append(
            Mismatch(
                phys_addr=phys_addr + int(bad_idx[k]) * line,
                classification=str(cls[k]),
                expected=f"0x{int(w[k, first]):016x}",
                actual=f"0x{int(g[k, first]):016x}",
                bad_words=int(diff[k].sum()),
                generation=None if gens[k] < 0 else int(gens[k]),
                source=None if srcs[k] < 0 else int(srcs[k]),
            )
        )
    return result


def _classify(got: np.ndarray, want: np.ndarray, diff: np.ndarray, pattern: str,
              phys_addr: int, size: int, generation: int, seed: int, value: int,
              bad_idx: np.ndarray, wpl: int,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per corrupted line: class, the stale generation (or -1), the foreign source (or -1)."""
    n = got.shape[0]
    zero = got == 0
    gens = np.full(n, -1, dtype=np.int64)
    srcs = np.full(n, -1, dtype=np.int64)
    if pattern == "tagged":
        is_tag, gen, addr = patterns.decode_tags(got)
        _, _, want_addr = patterns.decode_tags(want)
        older = gen < np.uint64(generation & 0xFFFF)
        stale_w = zero | (is_tag & (addr == want_addr) & older)
        foreign_w = is_tag & (addr != want_addr)
        stale = ~(diff & ~stale_w).any(axis=1)
        foreign = (
            ~stale & ~(diff & ~(stale_w | foreign_w)).any(axis=1) & (diff & foreign_w).any(axis=1)
        )
        tag_gens = np.where(diff & is_tag & ~zero, gen.astype(np.int64), -1)
        gens = np.where(stale, tag_gens.max(axis=1), -1)
        first_foreign = np.argmax(diff & foreign_w, axis=1)
        srcs = np.where(foreign, addr[np.arange(n), first_foreign].astype(np.int64), -1)
    else:
        stale_w = zero.copy()
        for older_gen in range(generation - 1, max(-1, generation - 1 - STALE_WINDOW), -1):
            old = expected(pattern, phys_addr=phys_addr, size=size, generation=older_gen,
                           seed=seed, value=value)  # fmt: skip
            pad = (-old.size) % wpl
            old = np.concatenate([old, np.zeros(pad, np.uint64)]) if pad else old
            match = got == old.reshape(-1, wpl)[bad_idx]
            newly = diff & match & ~stale_w
            gens = np.where(newly.any(axis=1) & (gens < 0), older_gen, gens)
            stale_w |= match
        stale = ~(diff & ~stale_w).any(axis=1)
        gens = np.where(stale, gens, -1)
        foreign = np.zeros(n, dtype=bool)
    cls = np.where(stale, "stale", np.where(foreign, "foreign", "random"))
    return cls, gens, srcs


def fill(
    target: memoryview | bytearray,
    *,
    pattern: str,
    phys_addr: int,
    generation: int,
    seed: int = 0,
    value: int = 0,
) -> None:
    """Write the pattern into a writable buffer (a mapping) in one bulk copy."""
    dst = np.frombuffer(target, dtype="<u8")
    dst[:] = expected(pattern, phys_addr=phys_addr, size=dst.size * 8, generation=generation,
                      seed=seed, value=value)  # fmt: skip
