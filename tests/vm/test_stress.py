"""Concurrent stress of /dev/pagebuf for a fixed time, and many alloc/free cycles.

The stress: PROCESSES worker processes of THREADS threads each, for PAGEBUF_STRESS_SECONDS
(default 30; `make stress` 300), under a byte limit they keep running into. Each thread has
a private file whose FILE_OWNED buffers hold a byte pattern only it writes (through KWRITE,
pwrite() at the physical address and a shared mmap()) and checks (KREAD, KCHECKSUM, pread(),
the mapping, a forked child through the inherited descriptor); its process shares another
file and an O_RDONLY one. Threads allocate and free, map and unmap, read and write, KWRITE,
SYNC and LIST, and poke at buffers they learnt of through LIST: other threads' and other
processes' buffers, which may vanish at any moment. Every errno must be one the race
explains (ENOENT for a buffer freed meanwhile, EPERM for another file's, EINVAL for a
physical address no buffer holds any more, ENOMEM at the limit); another file's FILE_OWNED
buffer must never be reachable by id; an ALLOC through the O_RDONLY file must be EBADF; a
pattern must never change under its owner; closing a file must free its buffers. Then the
registry, sysfs and GET_INFO agree, FREE_ALL leaves nothing, rmmod succeeds, the kernel log
shows no report, and MemAvailable is back within MEM_TOLERANCE of where it started.

The cycles: PAGEBUF_STRESS_CYCLES (default 2000; `make stress` 100000) allocations, each
freed again, of varied orders and flags, by FREE or by closing the owning file, with the
counters checked along the way and memory at the end.

Figures (calls, cycles, duration, results by errno) are printed (shown in the pytest log)
and, if PAGEBUF_STRESS_REPORT names a file, appended to it as one JSON line per test.
"""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import json
import mmap
import multiprocessing
import os
import random
import re
import subprocess
import threading
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import KERNEL_TROUBLE, reload, rmmod, sysfs_int

from pagebuf import uapi

SECONDS = float(os.environ.get("PAGEBUF_STRESS_SECONDS", "30"))
CYCLES = int(os.environ.get("PAGEBUF_STRESS_CYCLES", "2000"))
REPORT = os.environ.get("PAGEBUF_STRESS_REPORT")
PROCESSES = 3
THREADS = 2
LIMIT = 512 << 10  # max_bytes for the stress: the workers run into it all the time
MAX_ORDER = 3
# MemAvailable may end this far below where it started (KiB), slab growth and the per-CPU
# page lists aside: memory the slab holds (KASAN's quarantine keeps up to 1/32 of RAM of
# freed objects) is not pagebuf's pages, and kmemleak checks pagebuf's own objects.
MEM_TOLERANCE = 16 * 1024  # KiB: page cache moves a few MiB
DEV = "/dev/pagebuf"
PAGE = mmap.PAGESIZE
PROT_RW = mmap.PROT_READ | mmap.PROT_WRITE


def ename(rc: int) -> str:
    return "ok" if rc == 0 else E.errorcode.get(rc, str(rc))


def ioc(fd: int, request: int, arg: ctypes.Structure) -> int:
    """One ioctl on a struct in place: 0 or the errno."""
    try:
        fcntl.ioctl(fd, request, arg, True)
    except OSError as exc:
        return exc.errno or -1
    return 0


def meminfo() -> dict[str, int]:
    """/proc/meminfo in KiB, plus "PerCPULists": free pages the per-CPU lists hold."""
    out = {}
    for line in open("/proc/meminfo"):
        key, value = line.split(":")
        out[key] = int(value.split()[0])
    counts = re.findall(r"^\s+count:\s+(\d+)$", open("/proc/zoneinfo").read(), re.M)
    out["PerCPULists"] = sum(map(int, counts)) * PAGE // 1024
    return out


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The meminfo fields that moved by a MiB or more, in KiB: where memory went."""
    return {k: after[k] - v for k, v in before.items() if abs(after.get(k, v) - v) >= 1024}


def kernel_log() -> list[str]:
    proc = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()


def trouble_since(before: list[str]) -> list[str]:
    """Kernel reports logged since `before` was read (the log is only appended to)."""
    now = kernel_log()
    new = now[len(before) :] if now[: len(before)] == before else now
    return [line for line in new if KERNEL_TROUBLE.search(line)]


def report(capsys: pytest.CaptureFixture[str], name: str, figures: dict[str, Any]) -> None:
    """Print the figures where the log shows them, and append them to PAGEBUF_STRESS_REPORT."""
    figures = {
        "test": name,
        "kernel": os.uname().release,
        "kernel_kind": os.environ.get("PAGEBUF_KERNEL", ""),
        "arch": os.uname().machine,
        **figures,
    }
    with capsys.disabled():
        print(f"\n{name}: " + json.dumps(figures, sort_keys=True))
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps(figures, sort_keys=True) + "\n")


def memory_drop(before: dict[str, int], after: dict[str, int]) -> tuple[int, int]:
    """(MemAvailable drop, that drop less slab growth and pages on the per-CPU lists), in
    KiB. Freed pages of order 3 or less go to a per-CPU list first, and MemFree does not
    count them: after the stress those lists hold some 20 to 75 MiB (measured)."""
    drop = before["MemAvailable"] - after["MemAvailable"]
    held = sum(max(after[k] - before[k], 0) for k in ("SUnreclaim", "PerCPULists"))
    return drop, drop - held


# --- the workers ---


@dataclass
class Own:
    """A FILE_OWNED buffer of a thread's private file, and the byte it must hold."""

    id: int
    phys: int
    size: int
    dma: bool
    pattern: int


@dataclass
class Stats:
    results: Counter[str] = field(default_factory=Counter)
    ioctls: int = 0
    rw: int = 0
    maps: int = 0
    forks: int = 0
    allocs: int = 0
    violations: list[str] = field(default_factory=list)


class Worker:
    """One thread's loop. Its private file's buffers are its alone; the rest is shared."""

    def __init__(self, wid: str, shared: int, ro: int, fork_lock: threading.Lock) -> None:
        self.wid = wid
        self.shared, self.ro = shared, ro
        self.fork_lock = fork_lock
        self.priv = os.open(DEV, os.O_RDWR)
        self.rng = random.Random(wid)
        self.own: dict[int, Own] = {}
        self.loose: list[int] = []  # allocated through the shared file
        self.seen: list[uapi.PagebufBuffer] = []  # learnt from LIST: anyone's
        # (mapping, the own buffer it shows or None): through the private file if an own
        # buffer's, the shared file otherwise
        self.maps: list[tuple[mmap.mmap, int | None]] = []
        self.stats = Stats()

    # --- bookkeeping ---

    def ioctl(self, what: str, fd: int, request: int, arg: ctypes.Structure) -> int:
        rc = ioc(fd, request, arg)
        self.stats.ioctls += 1
        self.stats.results[f"{what} {ename(rc)}"] += 1
        return rc

    def violation(self, message: str) -> None:
        if len(self.stats.violations) < 20:
            self.stats.violations.append(f"{self.wid}: {message}")

    def expect(self, what: str, rc: int, tolerated: tuple[int, ...] = ()) -> bool:
        """True on success; a violation unless the errno is one the race explains."""
        if rc and rc not in tolerated:
            self.violation(f"{what}: {ename(rc)} (tolerated: {[ename(t) for t in tolerated]})")
        return rc == 0

    def syscall(self, what: str, fn: Any, *args: Any) -> tuple[int, Any]:
        try:
            out = fn(*args)
            rc = 0
        except OSError as exc:
            out, rc = None, exc.errno or -1
        self.stats.results[f"{what} {ename(rc)}"] += 1
        return rc, out

    # --- actions ---

    def alloc(self) -> None:
        order = self.rng.randint(0, MAX_ORDER)
        dma = self.rng.random() < 0.3
        private = self.rng.random() < 0.4
        flags = (uapi.BUF_DMA if dma else 0) | (uapi.BUF_FILE_OWNED if private else 0)
        if not private and self.rng.random() < 0.3:
            flags |= uapi.BUF_FILE_OWNED  # the process's shared file owns it
        req = uapi.PagebufBuffer(order=order, flags=flags)
        rc = self.ioctl("alloc", self.priv if private else self.shared, uapi.IOC_ALLOC, req)
        tolerated = (E.ENOMEM, E.E2BIG, E.EIO) if dma else (E.ENOMEM,)
        if not self.expect("ALLOC", rc, tolerated):
            return
        self.stats.allocs += 1
        if not private:
            self.loose.append(req.id)
            if len(self.loose) > 8:
                self.free_loose(0)
            return
        own = Own(req.id, req.phys_addr, req.size, dma, self.rng.randrange(256))
        self.own[own.id] = own
        self.write_own(own)
        if len(self.own) > 6:
            self.free_own()

    def alloc_read_only(self) -> None:
        req = uapi.PagebufBuffer(order=0)
        rc = self.ioctl("alloc(O_RDONLY)", self.ro, uapi.IOC_ALLOC, req)
        if rc != E.EBADF:
            self.violation(f"ALLOC through an O_RDONLY file: {ename(rc)}, not EBADF")
        if rc == 0:
            self.ioctl("free", self.shared, uapi.IOC_FREE, uapi.PagebufFree(id=req.id))

    def free_own(self) -> None:
        if not self.own:
            return
        own = self.own.pop(self.rng.choice(list(self.own)))
        rc = self.ioctl("free(own)", self.priv, uapi.IOC_FREE, uapi.PagebufFree(id=own.id))
        if self.expect(f"FREE of own buffer {own.id}", rc):
            rc = self.ioctl("buf_info", self.ro, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=own.id))
            if rc != E.ENOENT:
                self.violation(f"BUF_INFO of freed buffer {own.id}: {ename(rc)}, not ENOENT")

    def free_loose(self, index: int | None = None) -> None:
        if not self.loose:
            return
        bid = self.loose.pop(self.rng.randrange(len(self.loose)) if index is None else index)
        rc = self.ioctl("free(shared)", self.shared, uapi.IOC_FREE, uapi.PagebufFree(id=bid))
        self.expect(f"FREE of shared-file buffer {bid}", rc, (E.ENOENT,))

    def pick_seen(self) -> uapi.PagebufBuffer | None:
        return self.rng.choice(self.seen) if self.seen else None

    def foreign(self, b: uapi.PagebufBuffer) -> bool:
        """Another file's FILE_OWNED buffer, as far as this thread's private file goes."""
        return bool(b.flags & uapi.BUF_FILE_OWNED) and b.id not in self.own

    def free_seen(self) -> None:
        b = self.pick_seen()
        if b is None or b.id in self.own:
            return
        rc = self.ioctl("free(seen)", self.priv, uapi.IOC_FREE, uapi.PagebufFree(id=b.id))
        if rc == 0 and self.foreign(b):
            self.violation(f"FREE of another file's buffer {b.id} succeeded")
        self.expect("FREE of a listed buffer", rc, (E.ENOENT, E.EPERM))
        self.seen.remove(b)

    def kaccess(self, request: int, what: str, fd: int, bid: int, off: int, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, len(data))
        req = uapi.PagebufKaccess(id=bid, offset=off, length=len(data), data=ctypes.addressof(buf))
        rc = self.ioctl(what, fd, request, req)
        self.last_read = buf.raw
        return rc

    def write_own(self, own: Own) -> None:
        """A new pattern into an own buffer, one way or another."""
        own.pattern = (own.pattern + 1 + self.rng.randrange(255)) % 256
        data = bytes([own.pattern]) * own.size
        how = self.rng.randrange(3)
        if how == 0:
            rc = self.kaccess(uapi.IOC_KWRITE, "kwrite(own)", self.priv, own.id, 0, data)
            self.expect(f"KWRITE of own buffer {own.id}", rc)
        elif how == 1:
            rc, n = self.syscall("pwrite(own)", os.pwrite, self.priv, data, own.phys)
            self.stats.rw += 1
            if self.expect(f"pwrite of own buffer {own.id}", rc) and n != own.size:
                self.violation(f"pwrite of own buffer {own.id}: {n} of {own.size} bytes")
        else:
            m = self.map(own.phys, own.size, "mmap(own)", fd=self.priv)
            if m is None:
                self.violation(f"mmap of own buffer {own.id} failed")
                return
            m[:] = data
            self.maps.append((m, own.id))

    def check_own(self) -> None:
        """An own buffer still holds its pattern, however it is read."""
        if not self.own:
            return
        own = self.own[self.rng.choice(list(self.own))]
        how = self.rng.randrange(4)
        got: bytes | None = None
        if how == 0:
            off = self.rng.randrange(own.size)
            n = self.rng.randint(1, own.size - off)
            rc = self.kaccess(uapi.IOC_KREAD, "kread(own)", self.priv, own.id, off, bytes(n))
            got = self.last_read if self.expect(f"KREAD of own buffer {own.id}", rc) else None
        elif how == 1:
            rc, got = self.syscall("pread(own)", os.pread, self.priv, own.size, own.phys)
            self.stats.rw += 1
            self.expect(f"pread of own buffer {own.id}", rc)
        elif how == 2:
            mapped = [m for m, i in self.maps if i == own.id]
            m = mapped[0] if mapped else self.map(own.phys, own.size, "mmap(own)", fd=self.priv)
            if m is None:
                self.violation(f"mmap of own buffer {own.id} failed")
                return
            got = m[:]
            if not mapped:
                self.maps.append((m, own.id))
        else:
            crc = uapi.PagebufKaccess(id=own.id, length=own.size)
            rc = self.ioctl("kchecksum(own)", self.priv, uapi.IOC_KCHECKSUM, crc)
            want = zlib.crc32(bytes([own.pattern]) * own.size)
            if self.expect(f"KCHECKSUM of own buffer {own.id}", rc) and crc.checksum != want:
                self.violation(f"own buffer {own.id}: checksum {crc.checksum:#x}, want {want:#x}")
        if got is not None and got != bytes([own.pattern]) * len(got):
            bad = next(i for i, c in enumerate(got) if c != own.pattern)
            self.violation(
                f"own buffer {own.id} (method {how}): byte {bad} is {got[bad]:#x}, "
                f"not {own.pattern:#x}"
            )
        if self.rng.random() < 0.5:
            self.write_own(own)
        if own.dma and self.rng.random() < 0.5:
            direction = self.rng.choice([uapi.SYNC_FOR_CPU, uapi.SYNC_FOR_DEVICE])
            req = uapi.PagebufSync(id=own.id, direction=direction)
            rc = self.ioctl("sync(own)", self.priv, uapi.IOC_SYNC, req)
            self.expect(f"SYNC of own buffer {own.id}", rc)

    def map(self, phys: int, size: int, what: str, fd: int) -> mmap.mmap | None:
        rc, m = self.syscall(what, mmap.mmap, fd, size, mmap.MAP_SHARED, PROT_RW, 0, phys)
        self.stats.maps += 1
        return m if rc == 0 else None

    def list(self) -> None:
        array = (uapi.PagebufBuffer * 64)()
        req = uapi.PagebufList(
            buffers=ctypes.addressof(array), capacity=64, entry_size=ctypes.sizeof(array[0])
        )
        fd = self.rng.choice([self.ro, self.shared, self.priv])
        rc = self.ioctl("list", fd, uapi.IOC_LIST, req)
        if self.expect("LIST", rc, (E.ENOMEM,)):
            ids = [array[i].id for i in range(req.count)]
            if ids != sorted(set(ids)) or 0 in ids:
                self.violation(f"LIST ids not increasing: {ids}")
            self.seen = [uapi.PagebufBuffer.from_buffer_copy(array[i]) for i in range(req.count)]

    def poke_seen(self) -> None:
        """KREAD/KWRITE, pread/pwrite or mmap of a buffer someone else may free any time."""
        b = self.pick_seen()
        if b is None:
            return
        how = self.rng.randrange(4)
        n = self.rng.randint(1, 64)
        if how == 0:
            rc = self.kaccess(uapi.IOC_KREAD, "kread(seen)", self.priv, b.id, 0, bytes(n))
            if rc == 0 and self.foreign(b):
                self.violation(f"KREAD of another file's buffer {b.id} succeeded")
            self.expect("KREAD of a listed buffer", rc, (E.ENOENT, E.EPERM))
        elif how == 1:
            if self.foreign(b):  # must be refused: nothing of the owner's is at risk
                rc = self.kaccess(uapi.IOC_KWRITE, "kwrite(seen)", self.priv, b.id, 0, bytes(n))
                if rc == 0:
                    self.violation(f"KWRITE of another file's buffer {b.id} succeeded")
                self.expect("KWRITE of another file's buffer", rc, (E.ENOENT, E.EPERM))
            else:
                rc = self.kaccess(uapi.IOC_KWRITE, "kwrite(seen)", self.shared, b.id, 0, bytes(n))
                self.expect("KWRITE of a listed buffer", rc, (E.ENOENT, E.EPERM))
        elif how == 2:
            # By physical address, where a new buffer may be by now: written only through
            # the shared file, which cannot reach any thread's own buffers (EPERM).
            if b.flags & uapi.BUF_FILE_OWNED:
                fd = self.rng.choice([self.shared, self.priv])
                rc, _ = self.syscall("pread(seen)", os.pread, fd, n, b.phys_addr)
            else:
                fd = self.shared
                rc, _ = self.syscall("pwrite(seen)", os.pwrite, fd, bytes(n), b.phys_addr)
            self.stats.rw += 1
            self.expect("pread/pwrite of a listed buffer", rc, (E.EINVAL, E.EPERM))
        else:
            m = self.map(b.phys_addr, b.size, "mmap(seen)", fd=self.shared)
            if m is not None:
                _ = m[0]
                self.maps.append((m, None))
            # EINVAL: no buffer holds that range any more; EPERM: another file's.

    def unmap(self) -> None:
        if self.maps:
            m, _ = self.maps.pop(self.rng.randrange(len(self.maps)))
            m.close()
            self.stats.results["munmap ok"] += 1

    def fork(self) -> None:
        """A child reaches the private file's buffers through the inherited descriptor."""
        own = next(iter(self.own.values()), None)
        with self.fork_lock:  # no other thread closes a file while a child holds copies
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    if own is not None:
                        out = ctypes.create_string_buffer(own.size)
                        req = uapi.PagebufKaccess(
                            id=own.id, length=own.size, data=ctypes.addressof(out)
                        )
                        if ioc(self.priv, uapi.IOC_KREAD, req):
                            code = 2
                        elif out.raw != bytes([own.pattern]) * own.size:
                            code = 3
                    req = uapi.PagebufBuffer(order=0, flags=uapi.BUF_FILE_OWNED)
                    rc = ioc(self.priv, uapi.IOC_ALLOC, req)
                    if rc == 0:
                        if ioc(self.priv, uapi.IOC_FREE, uapi.PagebufFree(id=req.id)):
                            code = 4
                    elif code == 0:
                        code = 5 if rc == E.ENOMEM else 6  # ENOMEM: the limit, no violation
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
        self.stats.forks += 1
        code = os.waitstatus_to_exitcode(status)
        self.stats.results["fork " + ("ok" if code == 0 else f"exit-status-{code}")] += 1
        if code not in (0, 5):
            what = {2: "KREAD failed", 3: "KREAD saw another pattern", 4: "FREE failed"}
            what[6] = "ALLOC failed, not with ENOMEM"
            self.violation(f"forked child: {what.get(code, code)} (own buffer {own})")

    def reopen(self) -> None:
        """Close the private file: its buffers must be gone; then open a new one."""
        with self.fork_lock:
            # A mapping holds its file (and Python's mmap a dup of the descriptor): the
            # file is released, its buffers freed, when the last of them goes.
            for m, own in self.maps:
                if own is not None:
                    m.close()
            self.maps = [(m, own) for m, own in self.maps if own is None]
            os.close(self.priv)
            gone = list(self.own)
            self.own.clear()
            for bid in gone:
                rc = self.ioctl("buf_info", self.ro, uapi.IOC_BUF_INFO, uapi.PagebufBuffer(id=bid))
                if rc != E.ENOENT:
                    self.violation(f"buffer {bid} of a closed file: BUF_INFO {ename(rc)}")
            self.priv = os.open(DEV, os.O_RDWR)
        self.stats.results["reopen ok"] += 1

    def free_all(self) -> None:
        req = uapi.PagebufFree(flags=uapi.FREE_ALL)
        rc = self.ioctl("free_all", self.shared, uapi.IOC_FREE, req)
        self.expect("FREE_ALL", rc)

    ACTIONS = (
        ("alloc", 16),
        ("free_own", 5),
        ("free_loose", 5),
        ("free_seen", 3),
        ("check_own", 14),
        ("list", 6),
        ("poke_seen", 14),
        ("unmap", 6),
        ("alloc_read_only", 1),
        ("fork", 1),
        ("reopen", 1),
        ("free_all", 1),
    )

    def run(self, deadline: float) -> None:
        names = [n for n, _ in self.ACTIONS]
        weights = [w for _, w in self.ACTIONS]
        try:
            while time.monotonic() < deadline:
                for name in self.rng.choices(names, weights, k=16):
                    getattr(self, name)()
        except Exception:
            self.violation(traceback.format_exc())
        finally:
            for m, _ in self.maps:
                m.close()
            os.close(self.priv)


def worker_process(index: int, deadline: float, queue: Any) -> None:
    """THREADS threads sharing one O_RDWR and one O_RDONLY file; their figures, queued."""
    shared = os.open(DEV, os.O_RDWR)
    ro = os.open(DEV, os.O_RDONLY)
    lock = threading.Lock()
    workers = [Worker(f"p{index}t{t}", shared, ro, lock) for t in range(THREADS)]
    threads = [threading.Thread(target=w.run, args=(deadline,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    os.close(shared)
    os.close(ro)
    total = Stats()
    for w in workers:
        total.results.update(w.stats.results)
        total.violations += w.stats.violations
        for name in ("ioctls", "rw", "maps", "forks", "allocs"):
            setattr(total, name, getattr(total, name) + getattr(w.stats, name))
    queue.put(total.__dict__)


def registry_consistent() -> tuple[int, int]:
    """LIST, GET_INFO and sysfs agree; (buffers, bytes) they report."""
    with open(DEV, "rb") as f:
        info = uapi.PagebufInfo()
        assert ioc(f.fileno(), uapi.IOC_GET_INFO, info) == 0
        array = (uapi.PagebufBuffer * 1024)()
        req = uapi.PagebufList(
            buffers=ctypes.addressof(array), capacity=1024, entry_size=ctypes.sizeof(array[0])
        )
        assert ioc(f.fileno(), uapi.IOC_LIST, req) == 0
        bufs = [array[i] for i in range(req.count)]
    held = sum(b.size for b in bufs)
    assert req.total == req.count == len(bufs) == info.nr_buffers == sysfs_int("nr_buffers")
    # Every buffer, and none other, has its sysfs directory, saying its address.
    dirs = {int(d.name): d for d in Path("/sys/class/misc/pagebuf/buffers").iterdir()}
    assert sorted(dirs) == sorted(b.id for b in bufs)
    for b in bufs:
        assert int((dirs[b.id] / "phys_addr").read_text(), 16) == b.phys_addr
    assert info.bytes_in_use == held, (info.bytes_in_use, held)
    assert info.pages_in_use == sysfs_int("pages_in_use") == held // PAGE
    return len(bufs), held


def test_concurrent_stress(module: None, capsys: pytest.CaptureFixture[str]) -> None:
    reload(f"max_bytes={LIMIT}")
    log = kernel_log()
    mem_before = meminfo()
    start = time.monotonic()
    deadline = start + SECONDS
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=worker_process, args=(i, deadline, queue)) for i in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=SECONDS + 600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    duration = time.monotonic() - start
    exit_codes = [p.exitcode for p in procs]

    total = Counter()
    violations: list[str] = []
    figures = Counter()
    for r in results:
        total.update(r["results"])
        violations += r["violations"]
        for name in ("ioctls", "rw", "maps", "forks", "allocs"):
            figures[name] += r[name]
    by_errno = Counter()
    for key, n in total.items():
        by_errno[key.rsplit(" ", 1)[1]] += n

    # Every worker has exited: their files are closed, their FILE_OWNED buffers gone.
    left, held = registry_consistent()
    with open(DEV, "wb") as f:
        req = uapi.PagebufFree(flags=uapi.FREE_ALL)
        assert ioc(f.fileno(), uapi.IOC_FREE, req) == 0
        assert req.count == left
    in_use = sysfs_int("pages_in_use"), sysfs_int("nr_buffers")
    rmmod()
    reports = trouble_since(log)
    mem_after = meminfo()
    reload()
    drop, unexplained = memory_drop(mem_before, mem_after)
    report(
        capsys,
        "stress",
        {
            "seconds": round(duration, 1),
            "processes": PROCESSES,
            "threads": PROCESSES * THREADS,
            **figures,
            "calls": figures["ioctls"] + figures["rw"] + figures["maps"] + figures["forks"],
            "by_errno": dict(by_errno.most_common()),
            "by_call": dict(sorted(total.items())),
            "left_after_workers": {"buffers": left, "bytes": held},
            "mem_available_drop_kib": drop,
            "mem_free_drop_kib": mem_before["MemFree"] - mem_after["MemFree"],
            "slab_unreclaimable_growth_kib": mem_after["SUnreclaim"] - mem_before["SUnreclaim"],
            "meminfo_moved_kib": moved(mem_before, mem_after),
            "violations": len(violations),
            "kernel_reports": len(reports),
        },
    )
    assert exit_codes == [0] * PROCESSES, exit_codes
    assert not violations, "\n".join(violations)
    assert not reports, "kernel log during the stress:\n" + "\n".join(reports)
    assert in_use == (0, 0), f"(pages_in_use, nr_buffers) = {in_use} after FREE_ALL"
    assert unexplained <= MEM_TOLERANCE, (
        f"MemAvailable {drop} KiB lower after rmmod ({unexplained} KiB unexplained)"
    )
    # The race paths ran: successes, the limit, and buffers vanishing under a thread.
    for want in ("ok", "ENOMEM", "ENOENT", "EBADF"):
        assert by_errno[want], f"no call ended {want} in {duration:.0f} s"
    assert figures["forks"] and figures["maps"] and figures["rw"]


def test_alloc_free_cycles(module: None, capsys: pytest.CaptureFixture[str]) -> None:
    """CYCLES allocations, each freed again, leave nothing behind."""
    log = kernel_log()
    mem_before = meminfo()
    orders = (0, 1, 0, 2, 0, 3, 1, 5)
    results = Counter()
    errors: list[str] = []
    start = time.monotonic()
    files = [os.open(DEV, os.O_RDWR), os.open(DEV, os.O_RDWR)]
    for i in range(CYCLES):
        flags = (uapi.BUF_DMA if i % 3 == 0 else 0) | (uapi.BUF_FILE_OWNED if i % 2 else 0)
        req = uapi.PagebufBuffer(order=orders[i % len(orders)], flags=flags)
        fd = files[i % 2]
        rc = ioc(fd, uapi.IOC_ALLOC, req)
        results[f"alloc {ename(rc)}"] += 1
        if rc:
            errors.append(f"cycle {i}: ALLOC order {req.order} flags {flags}: {ename(rc)}")
        elif flags & uapi.BUF_FILE_OWNED and i % 64 == 1:
            os.close(fd)  # freed by closing the file that owns it
            files[i % 2] = os.open(DEV, os.O_RDWR)
            results["close ok"] += 1
        else:
            rc = ioc(fd, uapi.IOC_FREE, uapi.PagebufFree(id=req.id))
            results[f"free {ename(rc)}"] += 1
            if rc:
                errors.append(f"cycle {i}: FREE {req.id}: {ename(rc)}")
        if i % 1024 == 1023:
            now = sysfs_int("nr_buffers"), sysfs_int("pages_in_use")
            if now != (0, 0):
                errors.append(f"cycle {i}: (nr_buffers, pages_in_use) = {now}")
        if len(errors) > 20:
            break
    for fd in files:
        os.close(fd)
    duration = time.monotonic() - start
    in_use = sysfs_int("nr_buffers"), sysfs_int("pages_in_use")
    reports = trouble_since(log)
    mem_after = meminfo()
    drop, unexplained = memory_drop(mem_before, mem_after)
    report(
        capsys,
        "alloc-free cycles",
        {
            "cycles": CYCLES,
            "seconds": round(duration, 1),
            "cycles_per_second": round(CYCLES / max(duration, 1e-9)),
            "ioctls": sum(n for k, n in results.items() if not k.startswith("close")),
            "results": dict(sorted(results.items())),
            "mem_available_drop_kib": drop,
            "slab_unreclaimable_growth_kib": mem_after["SUnreclaim"] - mem_before["SUnreclaim"],
            "meminfo_moved_kib": moved(mem_before, mem_after),
            "kernel_reports": len(reports),
        },
    )
    assert not errors, "\n".join(errors)
    assert in_use == (0, 0), f"(nr_buffers, pages_in_use) = {in_use} after {CYCLES} cycles"
    assert not reports, "kernel log during the cycles:\n" + "\n".join(reports)
    assert unexplained <= MEM_TOLERANCE, (
        f"MemAvailable {drop} KiB lower after the cycles ({unexplained} KiB unexplained)"
    )
