#!/usr/bin/env python3
"""Throughput of pagebuf's bulk paths against plain C in the same run (`make bench`).

A 64 MiB memfd mapped MAP_SHARED stands in for a cached mapping of a buffer: the same
code paths (numpy over a memoryview of an mmap, ctypes width accesses) without a VM.
Each figure is the best of several repetitions; ratios are pagebuf / C, so 1.0 is C
speed and higher is better for throughput. The last table sets the three figures that
have targets against their baselines of the same run. Nothing here is asserted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import numpy as np  # noqa: E402

from pagebuf import patterns, verify  # noqa: E402
from pagebuf.physmem import PhysMem  # noqa: E402

SIZE = 64 << 20
REPS = 5
PHYS = 0x1_0000_0000  # the address the pattern pretends the region has

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
libc.memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
libc.memcmp.restype = ctypes.c_int
libc.memcpy.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def best(fn: Callable[[], object], reps: int = REPS) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_together(*fns: Callable[[], object], reps: int = REPS) -> list[float]:
    """The best time of each, measured in turns: a figure and its baseline see the same
    machine (load from elsewhere, frequency) rather than one its quiet moment."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def gbps(seconds: float, nbytes: int = SIZE) -> float:
    return nbytes / seconds / 1e9


def main() -> int:
    fd = os.memfd_create("pagebuf-bench")
    os.ftruncate(fd, 2 * SIZE)
    m = mmap.mmap(fd, 2 * SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    region = memoryview(m)[:SIZE]
    spec = {"pattern": "tagged", "phys_addr": PHYS, "generation": 3, "seed": 1}

    t_memset = best(lambda: libc.memset(base, 0x5A, SIZE))
    t_fill = best(lambda: verify.fill(region, **spec))
    m[SIZE:] = m[:SIZE]  # a second copy for memcmp
    # A pattern that is not one byte is at best copied: memcpy bounds fill from above.
    # A new generation's expected words are generated allocation included, as a check
    # meets them.
    t_memcpy, t_gen = best_together(
        lambda: libc.memcpy(base, base + SIZE, SIZE),
        lambda: verify._expected.cache_clear() or verify.expected(size=SIZE, **spec),
    )
    verify.expected(size=SIZE, **spec)  # keep it cached, as repeated checks do
    words = np.empty(SIZE // 8, dtype=np.uint64)
    t_gen_into = best(lambda: patterns.generate(size=SIZE, out=words, **spec))
    res = verify.verify(region, line_size=64, **spec)
    assert res.ok, "bench setup: the region should verify clean"
    t_memcmp, t_verify = best_together(
        lambda: libc.memcmp(base, base + SIZE, SIZE),
        lambda: verify.verify(region, line_size=64, **spec),
    )
    m[SIZE // 2 : SIZE // 2 + 64] = bytes(64)  # one line reverted to the zero fill
    t_verify_bad = best(lambda: verify.verify(region, line_size=64, **spec))

    rows = [
        ("fill  (tagged, in place)", gbps(t_fill), "memset", gbps(t_memset)),
        ("fill  (tagged, in place)", gbps(t_fill), "memcpy", gbps(t_memcpy)),
        ("verify (clean, pattern cached)", gbps(t_verify), "memcmp", gbps(t_memcmp)),
        ("verify (1 bad line, cached)", gbps(t_verify_bad), "memcmp", gbps(t_memcmp)),
        ("pattern generation (tagged)", gbps(t_gen), "memset", gbps(t_memset)),
        ("pattern generation (tagged)", gbps(t_gen), "memcpy", gbps(t_memcpy)),
        ("  into a preallocated buffer", gbps(t_gen_into), "memcpy", gbps(t_memcpy)),
    ]
    print(f"bulk paths over a {SIZE >> 20} MiB cached mapping, best of {REPS}")
    print(f"{'pagebuf':<32} {'GB/s':>7}   {'C baseline':<8} {'GB/s':>7}   {'ratio':>6}")
    for name, ours, cname, theirs in rows:
        print(f"{name:<32} {ours:7.2f}   {cname:<8} {theirs:7.2f}   {ours / theirs:6.2f}x")

    n = 100_000
    with PhysMem(0, 1 << 20, path=f"/proc/self/fd/{fd}", sync=False) as mem:
        offs = [(i * 64) % (1 << 20) for i in range(n)]
        t_base, t_r64, t_w64, t_r32 = (t / n for t in best_together(
            lambda: [int.from_bytes(m[o : o + 8], "little") for o in offs],
            lambda: [mem.read64(o) for o in offs],
            lambda: [mem.write64(o, 0x0123456789ABCDEF) for o in offs],
            lambda: [mem.read32(o) for o in offs],
        ))  # fmt: skip
    print()
    print(f"exact-width accesses (one load/store each), {n} per run")
    print(f"{'access':<32} {'ns/op':>7}   {'baseline':<28} {'ns/op':>7}")
    for name, t in (("PhysMem.read64", t_r64), ("PhysMem.write64", t_w64),
                    ("PhysMem.read32", t_r32)):  # fmt: skip
        print(f"{name:<32} {t * 1e9:7.0f}   {'slice + int.from_bytes':<28} {t_base * 1e9:7.0f}")

    targets = [
        ("verify (clean) / C memcmp", t_memcmp / t_verify, ">=", 0.9),
        ("tagged generation / C memcpy", t_memcpy / t_gen, ">=", 0.5),
        ("read64 time / slice+from_bytes", t_r64 / t_base, "<=", 1.5),
        ("write64 time / slice+from_bytes", t_w64 / t_base, "<=", 1.5),
        ("read32 time / slice+from_bytes", t_r32 / t_base, "<=", 1.5),
    ]
    print()
    print("targets: ratios against the baselines above, this run")
    print(f"{'ratio':<32} {'value':>7}   target")
    for name, ratio, op, goal in targets:
        met = ratio >= goal if op == ">=" else ratio <= goal
        print(f"{name:<32} {ratio:6.2f}x   {op} {goal:.2f}x  {'met' if met else 'MISSED'}")
    region.release()
    m.close()
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
