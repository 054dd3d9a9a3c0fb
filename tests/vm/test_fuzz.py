"""Property-based fuzzing of every /dev/pagebuf ioctl against the header's contract.

Each hypothesis example is a sequence of operations on four descriptors: an O_RDWR file
through two of them (the second a dup() of the first), another O_RDWR file and an O_RDONLY
one, which start with a few buffers of each owner. Every ioctl is issued raw, with valid,
boundary and garbage fields, ids that live, were freed or never existed, offsets and
lengths that overflow, buffers owned by the module and by a file; command numbers of the
struct's own size and of others (shorter, longer with a zero or a non-zero tail), other
directions, unknown numbers and magics; the struct and the data behind NULL, unmapped,
kernel, read-only and page-straddling pointers, or ending exactly where readable memory
ends (so the kernel touching one byte more faults).

A model of the registry predicts each outcome from kmod/include/uapi/pagebuf.h: success,
or failure with one of the errnos the request's defects allow (where the header leaves the
order of the checks open, any of them). Every errno must be in ERRNOS; outputs must match
the model (ALLOC, BUF_INFO, LIST, GET_INFO, FREE's count, KREAD and KCHECKSUM against what
was written); nothing may be written past the caller's size; sysfs, GET_INFO and LIST must
agree after every few calls; FREE_ALL and closing every file must leave nothing behind.

PAGEBUF_FUZZ_CALLS: ioctls in all, split between the two module configurations (default
2000; `make stress` 100000).
PAGEBUF_FUZZ_SEED: the first round's seed (default fixed; `random` picks one). Both are
printed: a failure replays with the same two values on the same kernel.
"""

from __future__ import annotations

import ctypes
import errno as E
import fcntl
import json
import mmap
import os
import random
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
from conftest import reload, sysfs_int
from hypothesis import HealthCheck, Phase, given, note, seed, settings
from hypothesis import strategies as st
from ioctl_opt import IOC, IOC_NONE, IOC_READ, IOC_WRITE

from pagebuf import uapi

CALLS = int(os.environ.get("PAGEBUF_FUZZ_CALLS", "2000"))
CONFIGS = {  # module parameters: the defaults; tight limits, max_bytes hit often, INJECT on
    "defaults": (),
    "tight-limits-inject": ("max_order=5", f"max_bytes={24 * mmap.PAGESIZE}", "inject=1"),
}
_SEED = os.environ.get("PAGEBUF_FUZZ_SEED", "0x9A6EB0F")
SEED = random.SystemRandom().getrandbits(32) if _SEED == "random" else int(_SEED, 0)
REPORT = os.environ.get("PAGEBUF_STRESS_REPORT")  # figures, one JSON line, if set
MAX_OPS = 40  # operations per example: shrinking a failure stays quick

# The errnos the header documents; any other is a failure by itself.
ERRNOS = frozenset(
    {E.EINVAL, E.ENOTTY, E.ENOENT, E.EPERM, E.EBADF, E.EFAULT, E.ENOMEM, E.E2BIG}
    | {E.EOPNOTSUPP, E.EIO, E.ENODEV}
)
PAGE = mmap.PAGESIZE
PROT_NONE = 0  # mmap.PROT_NONE is Python 3.13's
RW = IOC_READ | IOC_WRITE
U32 = 2**32 - 1
U64 = 2**64 - 1


@dataclass(frozen=True)
class Cmd:
    nr: int
    dir: int
    struct: type[ctypes.Structure]
    first: int  # the struct's size in its first version: smaller is ENOTTY
    writes: bool  # needs a file opened for writing

    @property
    def size(self) -> int:
        return ctypes.sizeof(self.struct)


INFO_V1 = uapi.PagebufInfo.dma_max_size.offset  # the version 1 struct ended at dma_mask
ENTRY = ctypes.sizeof(uapi.PagebufBuffer)
ENTRY_V1 = uapi.PagebufBuffer.dma_dir.offset  # version 1's struct ended at size
# Every other struct is still at its first version.
CMDS = {
    "get_info": Cmd(0x00, IOC_READ, uapi.PagebufInfo, INFO_V1, False),
    "alloc": Cmd(0x01, RW, uapi.PagebufBuffer, ENTRY_V1, True),
    "free": Cmd(0x02, RW, uapi.PagebufFree, ctypes.sizeof(uapi.PagebufFree), True),
    "buf_info": Cmd(0x03, RW, uapi.PagebufBuffer, ENTRY_V1, False),
    "list": Cmd(0x04, RW, uapi.PagebufList, ctypes.sizeof(uapi.PagebufList), False),
    "set_caching": Cmd(0x05, IOC_WRITE, uapi.PagebufCaching, 8, False),
    "kread": Cmd(0x06, RW, uapi.PagebufKaccess, 40, False),
    "kwrite": Cmd(0x07, RW, uapi.PagebufKaccess, 40, True),
    "kchecksum": Cmd(0x08, RW, uapi.PagebufKaccess, 40, False),
    "sync": Cmd(0x09, IOC_WRITE, uapi.PagebufSync, 24, True),
    "kflush": Cmd(0x0A, RW, uapi.PagebufKaccess, 40, True),
    "inject": Cmd(0x0B, RW, uapi.PagebufKaccess, 40, True),
}
assert all(c.first == c.size for n, c in CMDS.items() if n not in ("get_info", "alloc", "buf_info"))
# Magics whose numbers the VFS answers itself before any driver (FIGETBSZ, FIONBIO,
# FIFREEZE, FS_IOC_GETFLAGS, FICLONE, FS_IOC_GETFSUUID, ...): not pagebuf's to refuse.
VFS_MAGICS = frozenset({0x00, 0x15, 0x54, 0x58, 0x66, 0x94})

# --- raw memory: mmap/mprotect/ioctl through libc, for pointers Python will not make ---

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.ioctl.restype = ctypes.c_int
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
_libc.mmap.argtypes += [ctypes.c_int, ctypes.c_long]
_libc.mmap.restype = ctypes.c_void_p
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

# A kernel address and a non-canonical one: access_ok() refuses both on x86 and arm64.
KERNEL_ADDR = 0xFFFF_FFFF_FFFF_0000
NONCANONICAL = 0x8000_0000_0000_0000


def ioctl_at(fd: int, cmd: int, addr: int) -> int:
    """ioctl(fd, cmd, addr) with any pointer; 0 or the errno."""
    if _libc.ioctl(fd, cmd, addr) == 0:
        return 0
    return ctypes.get_errno()


class Arena:
    """[read-write | none | read-only | none]: memory to point the kernel at."""

    def __init__(self, rw: int, ro: int) -> None:
        self.rw_size, self.ro_size = rw, ro
        self.total = rw + PAGE + ro + PAGE
        none = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        base = _libc.mmap(None, self.total, PROT_NONE, none, -1, 0)
        assert base not in (None, ctypes.c_void_p(-1).value), "mmap of the fuzz arena failed"
        self.rw = base
        self.hole = base + rw  # PROT_NONE: unmapped as far as the kernel can tell
        self.ro = self.hole + PAGE
        self.rw_end = self.hole
        rwp = mmap.PROT_READ | mmap.PROT_WRITE
        assert _libc.mprotect(self.rw, rw, rwp) == 0
        self.ro_pattern = random.Random(ro).randbytes(ro)
        self.set_ro(self.ro_pattern)

    def set_ro(self, data: bytes) -> None:
        rwp = mmap.PROT_READ | mmap.PROT_WRITE
        assert _libc.mprotect(self.ro, self.ro_size, rwp) == 0
        ctypes.memmove(self.ro, data, len(data))
        assert _libc.mprotect(self.ro, self.ro_size, mmap.PROT_READ) == 0

    def close(self) -> None:
        _libc.munmap(self.rw, self.total)


# --- the model ---


@dataclass
class OpenFile:
    key: int
    writable: bool
    fds: list[int] = field(default_factory=list)


@dataclass
class Buf:
    id: int
    order: int
    flags: int
    phys: int
    dma: int
    size: int
    owner: int | None  # OpenFile.key, or None for the module's
    data: bytearray | None  # what the buffer holds; None once that is not known
    dma_dir: int = 0
    dma_info: int = 0  # what pagebuf's own device is (the fuzzer names no other)
    dma_mask: int = 0

    def entry(self) -> bytes:
        return bytes(
            uapi.PagebufBuffer(
                id=self.id, order=self.order, flags=self.flags, phys_addr=self.phys,
                dma_addr=self.dma, size=self.size, dma_dir=self.dma_dir,
                dma_info=self.dma_info, dma_mask=self.dma_mask,
            )
        )  # fmt: skip


class Expect:
    """What a call may return: `must_fail` with one of `allowed`, or 0 or one of `allowed`."""

    def __init__(self) -> None:
        self.allowed: set[int] = set()
        self.must_fail = False
        self.why: list[str] = []

    def defect(self, why: str, *errnos: int) -> None:
        self.allowed.update(errnos)
        self.must_fail = True
        self.why.append(why)

    def maybe(self, *errnos: int) -> None:
        self.allowed.update(errnos)

    def describe(self) -> str:
        names = sorted(E.errorcode[e] for e in self.allowed)
        return f"{'failure' if self.must_fail else 'success'} {names} ({'; '.join(self.why)})"


def ename(rc: int) -> str:
    return "ok" if rc == 0 else E.errorcode.get(rc, str(rc))


def in_range(offset: int, length: int, size: int) -> bool:
    return offset <= size and length <= size - offset


NATIVE = ("native", 0)
NO_JUNK = (0, 0, 0, 0, 0)
# What every example starts with: buffers of the module's and of both writable files.
PRELUDE = (
    ("alloc", 0, "buf", NATIVE, 0, 0, NO_JUNK),
    ("alloc", 0, "buf", NATIVE, 1, uapi.BUF_FILE_OWNED | uapi.BUF_DMA, NO_JUNK),
    ("alloc", 2, "end", NATIVE, 0, uapi.BUF_FILE_OWNED, NO_JUNK),
    ("alloc", 2, "buf", NATIVE, 2, uapi.BUF_DMA, NO_JUNK),
)


class Fuzzer:
    """Runs operation sequences against /dev/pagebuf and checks them against the model."""

    SLOTS = ("rw", "dup", "rw", "ro")  # slot 1 is a dup() of slot 0's file

    def __init__(self) -> None:
        self.structs = Arena(5 * PAGE, 5 * PAGE)  # a struct may be 0x3fff bytes
        self.data = Arena(64 * PAGE, 64 * PAGE)
        self.calls = 0
        self.examples = 0
        self.table: Counter[tuple[str, str]] = Counter()
        self.next_key = 0
        self.slots: list[tuple[int, OpenFile]] = []
        self.bufs: dict[int, Buf] = {}
        self.freed: list[int] = []
        with open("/dev/pagebuf", "rb") as f:
            info = uapi.PagebufInfo()
            fcntl.ioctl(f.fileno(), uapi.IOC_GET_INFO, info, True)
        self.info = info
        assert info.api_version == uapi.API_VERSION, info.api_version
        assert info.page_size == PAGE
        self.inject = open("/sys/module/pagebuf/parameters/inject").read().strip() == "Y"

    # --- files ---

    def open_file(self, writable: bool) -> OpenFile:
        self.next_key += 1
        f = OpenFile(self.next_key, writable)
        f.fds.append(os.open("/dev/pagebuf", os.O_RDWR if writable else os.O_RDONLY))
        return f

    def begin(self) -> None:
        left = sysfs_int("nr_buffers"), sysfs_int("pages_in_use")
        assert left == (0, 0), f"(nr_buffers, pages_in_use) = {left} between examples"
        self.bufs, self.freed = {}, []
        a, b, c = self.open_file(True), self.open_file(True), self.open_file(False)
        a.fds.append(os.dup(a.fds[0]))
        self.slots = [(a.fds[0], a), (a.fds[1], a), (b.fds[0], b), (c.fds[0], c)]

    def end(self, check: bool) -> None:
        """FREE_ALL through every writable file, close everything: nothing may be left."""
        if check:  # slot 0 is always a writable file
            self.op_free(0, "buf", ("native", 0), ("zero", 0), uapi.FREE_ALL, 0, 0)
        files = {f.key: f for _, f in self.slots}
        for f in files.values():
            if f.writable:
                req = uapi.PagebufFree(flags=uapi.FREE_ALL)
                try:
                    fcntl.ioctl(f.fds[0], uapi.IOC_FREE, req, True)
                except OSError:
                    pass
            for fd in f.fds:
                os.close(fd)
        self.slots = []
        if check:
            left = sysfs_int("nr_buffers"), sysfs_int("pages_in_use")
            assert left == (0, 0), f"(nr_buffers, pages_in_use) = {left} after FREE_ALL and close"

    def reopen(self, slot: int) -> None:
        fd, f = self.slots[slot]
        os.close(fd)
        f.fds.remove(fd)
        if not f.fds:  # its last descriptor: the file is released, its buffers with it
            for bid in [b.id for b in self.bufs.values() if b.owner == f.key]:
                self.forget(bid)
        if self.SLOTS[slot] == "dup":
            nf = self.slots[0][1]
            nfd = os.dup(self.slots[0][0])
            nf.fds.append(nfd)
        else:
            nf = self.open_file(self.SLOTS[slot] == "rw")
            nfd = nf.fds[0]
        self.slots[slot] = (nfd, nf)

    def forget(self, bid: int) -> None:
        del self.bufs[bid]
        self.freed.append(bid)

    # --- argument resolution ---

    def resolve_id(self, sel: tuple[str, int], f: OpenFile) -> int:
        kind, n = sel
        live = sorted(self.bufs)
        pools = {
            "live": live,
            "mine": [i for i in live if self.bufs[i].owner in (None, f.key)],
            "other": [i for i in live if self.bufs[i].owner not in (None, f.key)],
            "freed": self.freed,
        }
        if kind in pools:
            pool = pools[kind]
            return pool[n % len(pool)] if pool else (n * 2654435761) % 2**32
        return n  # "zero", "raw"

    def data_ptr(self, sel: tuple[str, int], length: int) -> tuple[int, int, int]:
        """(address, bytes readable from it, bytes writable from it)."""
        kind, n = sel
        d = self.data
        if kind == "rw":
            off = n % 64
            return d.rw + off, d.rw_size - off, d.rw_size - off
        if kind == "rw_end":
            room = max(min(length, d.rw_size), 0)
            return d.rw_end - room, room, room
        if kind == "ro":
            return d.ro, d.ro_size, 0
        if kind == "straddle":  # the last n+1 bytes before the hole
            k = n + 1
            return d.rw_end - k, k, k
        return {"null": 0, "unmapped": d.hole, "kernel": KERNEL_ADDR}[kind], 0, 0

    @staticmethod
    def resolve_range(sel: tuple[str, int, int], size: int) -> tuple[int, int]:
        kind, a, b = sel
        if kind == "in":
            offset = a % (size + 1)
            return offset, b % (min(size - offset, 16 * PAGE) + 1)
        if kind == "edge":  # around the end: up to 4 bytes too few or too many
            return max(size - a, 0), max(a + b - 4, 0)
        return a, b  # "raw"

    # --- one ioctl ---

    def build(
        self, name: str, payload: bytes, sizev: tuple[str, int]
    ) -> tuple[int, bytes, bool, bool]:
        """(command, bytes to hand over, command valid, non-zero unknown tail)."""
        c = CMDS[name]
        kind, k = sizev
        size = c.size
        if kind == "first":
            size = c.first
        elif kind == "mid":
            size = c.first + k % (c.size - c.first + 1)
        elif kind == "short":
            size = max(c.first - k, 0)
        elif kind in ("long0", "longx"):
            size = c.size + k
        elif kind == "huge0":
            size = 0x3FFF
        blob = bytearray(payload[:size].ljust(size, b"\0"))
        tail = False
        if kind == "longx":
            blob[c.size + (k * 7 + 3) % k] = 1 + k % 255
            tail = True
        cmd = IOC(c.dir, uapi.IOC_MAGIC, c.nr, size)
        return cmd, bytes(blob), size >= c.first, tail

    def issue(self, fd: int, cmd: int, blob: bytes, place: str) -> tuple[int, bytes | None, str]:
        """Hand `blob` to the kernel the way `place` says: (errno or 0, what it holds after,
        a complaint if the kernel wrote past the caller's size)."""
        s = self.structs
        n = len(blob)
        if place == "buf":
            guard = bytes([0x5A]) * 64
            arr = bytearray(blob + guard)
            try:
                fcntl.ioctl(fd, cmd, arr, True)
                rc = 0
            except OSError as exc:
                rc = exc.errno or -1
            bad = "" if arr[n:] == guard else f"bytes past the caller's {n} changed"
            return rc, bytes(arr[:n]), bad
        if place == "end":  # the last readable byte is the struct's last
            addr = s.rw_end - n
            ctypes.memmove(addr, blob, n)
            rc = ioctl_at(fd, cmd, addr)
            return rc, ctypes.string_at(addr, n), ""
        if place == "ro":
            s.set_ro(blob)
            return ioctl_at(fd, cmd, s.ro), blob, ""
        if place == "straddle":  # the struct's last 8 bytes (or all) lie in the hole
            addr = s.rw_end - max(n - 8, 0)
            ctypes.memmove(addr, blob, max(n - 8, 0))
            return ioctl_at(fd, cmd, addr), None, ""
        addr = {"null": 0, "unmapped": s.hole, "kernel": KERNEL_ADDR, "noncanon": NONCANONICAL}
        return ioctl_at(fd, cmd, addr[place]), None, ""

    def call(
        self,
        name: str,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        payload: bytes,
        exp: Expect,
        on_success: Callable[[Any], None] | None = None,
        on_failure: Callable[[int], None] | None = None,
    ) -> int:
        fd, f = self.slots[slot]
        c = CMDS[name]
        cmd, blob, cmd_ok, tail = self.build(name, payload, sizev)
        if not cmd_ok:
            exp = Expect()
            exp.defect(f"size {len(blob)} below the first version's {c.first}", E.ENOTTY)
            if c.writes and not f.writable:
                exp.maybe(E.EBADF)
        else:
            if tail:  # GET_INFO's too: its struct must be zero on entry
                exp.defect("non-zero tail past the kernel's struct", E.EINVAL)
            if place in ("null", "unmapped", "kernel", "noncanon", "straddle"):
                exp.defect(f"struct pointer {place}", E.EFAULT)
            elif place == "ro" and c.dir & IOC_READ:
                if name == "free":  # EFAULT with nothing freed, or freed and 0
                    exp.maybe(E.EFAULT)
                else:
                    exp.defect("struct in read-only memory", E.EFAULT)
            if c.writes and not f.writable:
                exp.defect("file not open for writing", E.EBADF)
        rc, out, overwrite = self.issue(fd, cmd, blob, place)
        self.calls += 1
        self.table[(name, ename(rc))] += 1
        what = f"{name} on slot {slot} ({self.SLOTS[slot]}), struct {place} size {len(blob)}"
        assert rc == 0 or rc in ERRNOS, f"{what}: undocumented errno {ename(rc)}"
        assert not overwrite, f"{what}: {overwrite}"
        if exp.must_fail:
            assert rc in exp.allowed, f"{what}: {ename(rc)}, expected {exp.describe()}"
        else:
            assert rc == 0 or rc in exp.allowed, f"{what}: {ename(rc)}, expected {exp.describe()}"
        if rc == 0:
            if out is not None and len(out) > c.size and not tail:
                assert out[c.size :] == bytes(len(out) - c.size), f"{what}: tail not zero"
            if on_success is not None:
                usable = out if place in ("buf", "end") else None
                st_out = None
                if usable is not None:
                    st_out = c.struct.from_buffer_copy(usable[: c.size].ljust(c.size, b"\0"))
                on_success(st_out)
        elif on_failure is not None:
            on_failure(rc)
        return rc

    # --- operations ---

    def op_get_info(self, slot: int, place: str, sizev: tuple[str, int], junk: int) -> None:
        exp = Expect()
        payload = bytearray(ctypes.sizeof(uapi.PagebufInfo))
        size = len(self.build("get_info", bytes(payload), sizev)[1])
        if junk:
            payload[junk % len(payload)] = 1 + junk % 255
            if junk % len(payload) < size:  # past the caller's size it is not handed over
                exp.defect("GET_INFO's struct must be zero on entry", E.EINVAL)

        def ok(o: uapi.PagebufInfo | None) -> None:
            if o is None:
                return
            want = self.expected_info()
            for name, _ in uapi.PagebufInfo._fields_:
                fld = getattr(uapi.PagebufInfo, name)
                if fld.offset + fld.size <= size and name in want:
                    assert getattr(o, name) == want[name], (
                        f"GET_INFO.{name} = {getattr(o, name)}, expected {want[name]}"
                    )

        self.call("get_info", slot, place, sizev, bytes(payload), exp, ok)

    def expected_info(self) -> dict[str, int]:
        i = self.info
        return {
            "api_version": uapi.API_VERSION,
            "features": i.features,
            "page_size": PAGE,
            "max_order": i.max_order,
            "max_pages": i.max_pages,
            "pages_in_use": sum(b.size for b in self.bufs.values()) // PAGE,
            "nr_buffers": len(self.bufs),
            "reserved": 0,
            "dma_mask": i.dma_mask,
            "dma_max_size": i.dma_max_size,
            "max_bytes": i.max_bytes,
            "bytes_in_use": sum(b.size for b in self.bufs.values()),
        }

    def op_alloc(
        self,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        order: int,
        flags: int,
        junk: tuple[int, int, int, int, int],
        target: tuple[int, bytes, int, int] = (0, b"", 0, 0),
    ) -> None:
        f = self.slots[slot][1]
        jid, jres, jphys, jdma, jsize = junk
        req = uapi.PagebufBuffer(
            id=jid, order=order, flags=flags, reserved=jres, phys_addr=jphys, dma_addr=jdma,
            size=jsize, dma_dir=target[0], dma_info=target[2], dma_mask=target[3],
        )  # fmt: skip
        # Byte for byte: a c_char array stops at the first NUL.
        ctypes.memmove(ctypes.addressof(req) + uapi.PagebufBuffer.dma_device.offset,
                       target[1], len(target[1]))  # fmt: skip
        # What reaches the kernel: a struct shorter than today's hands over no more.
        given = len(self.build("alloc", bytes(req), sizev)[1])
        seen = uapi.PagebufBuffer.from_buffer_copy(bytes(req)[:given].ljust(ENTRY, b"\0"))
        direction, device = seen.dma_dir, bytes(seen)[uapi.PagebufBuffer.dma_device.offset :]
        exp = Expect()
        if any(junk) or seen.dma_info or seen.dma_mask:
            exp.defect("an (out) field or reserved is not zero", E.EINVAL)
        if flags & ~uapi.BUF_FLAGS:
            exp.defect(f"unknown flags {flags:#x}", E.EINVAL)
        name, nul, after = device.partition(b"\0")
        if direction > uapi.DMA_FROM_DEVICE or not nul or any(after):
            exp.defect(f"dma_dir {direction} or dma_device {device!r}", E.EINVAL)
        if (direction or name) and not flags & uapi.BUF_DMA:
            exp.defect("dma_dir or dma_device without BUF_DMA", E.EINVAL)
        if name:  # the fuzzer's names: malformed, on another bus, or of no device
            bus, colon, rest = name.partition(b":")
            bad = not colon or not rest or bus not in (b"platform", b"pci", b"amba")
            # pci and amba are buses only where the kernel has them (CONFIG_PCI, _ARM_AMBA).
            maybe_bus = bus in (b"pci", b"amba")
            exp.defect(f"dma_device {name!r}", E.EINVAL if bad else E.ENODEV, E.ENOMEM,
                       *((E.EINVAL,) if maybe_bus else ()))  # fmt: skip
        if order > self.info.max_order:
            exp.defect(f"order {order} > max_order {self.info.max_order}", E.EINVAL)
        else:
            size = PAGE << order
            if flags & uapi.BUF_DMA and size > self.info.dma_max_size:
                exp.defect(f"DMA size {size} > dma_max_size {self.info.dma_max_size}", E.E2BIG)
            held = sum(b.size for b in self.bufs.values())
            if held + size > self.info.max_bytes:
                exp.defect(f"{held} + {size} bytes > max_bytes {self.info.max_bytes}", E.ENOMEM)
        exp.maybe(E.ENOMEM)  # alloc_pages() itself may fail
        if flags & uapi.BUF_DMA:
            exp.maybe(E.EIO)  # a failed DMA mapping

        def ok(o: uapi.PagebufBuffer | None) -> None:
            assert o is not None, "ALLOC succeeded with a struct it could not write back"
            size = PAGE << order
            assert o.id != 0 and o.id not in self.bufs, f"ALLOC gave id {o.id}, in use or 0"
            assert (o.order, o.size, o.reserved) == (order, size, 0), (o.order, o.size)
            assert o.flags & uapi.BUF_FLAGS == flags, f"flags {o.flags:#x} for {flags:#x}"
            extra = o.flags & ~uapi.BUF_FLAGS
            assert extra in (0, uapi.BUF_BOUNCED), f"flags {o.flags:#x}"
            assert not extra or flags & uapi.BUF_DMA, "BOUNCED on a buffer without DMA"
            assert flags & uapi.BUF_DMA or o.dma_addr == 0, "dma_addr without DMA"
            assert o.phys_addr % PAGE == 0, f"phys_addr {o.phys_addr:#x}"
            for b in self.bufs.values():
                overlap = o.phys_addr < b.phys + b.size and b.phys < o.phys_addr + size
                assert not overlap, f"buffer {o.id} overlaps buffer {b.id}"
            owner = f.key if flags & uapi.BUF_FILE_OWNED else None
            buf = Buf(o.id, order, o.flags, o.phys_addr, o.dma_addr, size, owner,
                      bytearray(size))  # fmt: skip
            if flags & uapi.BUF_DMA:  # pagebuf's own device: syncs work unless coherent
                buf.dma_dir, buf.dma_mask = direction, self.info.dma_mask
                coherent = self.info.features & uapi.FEAT_DMA_COHERENT
                buf.dma_info = 0 if coherent else uapi.DEV_SYNC
            # As much of the answer as the caller's struct holds is the buffer's entry.
            n = min(given, ENTRY)
            assert bytes(o)[:n] == buf.entry()[:n], f"ALLOC answered {bytes(o)[:n].hex()}"
            self.bufs[o.id] = buf

        self.call("alloc", slot, place, sizev, bytes(req), exp, ok)

    def op_free(
        self,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        idsel: tuple[str, int],
        flags: int,
        count: int,
        reserved: int,
    ) -> None:
        f = self.slots[slot][1]
        bid = self.resolve_id(idsel, f)
        exp = Expect()
        if count or reserved:
            exp.defect("count or reserved not zero", E.EINVAL)
        if flags & ~uapi.FREE_FLAGS:
            exp.defect(f"unknown flags {flags:#x}", E.EINVAL)
        every = bool(flags & uapi.FREE_ALL)
        mine = [b.id for b in self.bufs.values() if b.owner in (None, f.key)]
        if every and bid:
            exp.defect("FREE_ALL with an id", E.EINVAL)
        elif not every:
            buf = self.bufs.get(bid)
            if not bid:
                exp.defect("id 0", E.EINVAL, E.ENOENT)
            elif buf is None:
                exp.defect(f"no buffer {bid}", E.ENOENT)
            elif buf.owner not in (None, f.key):
                exp.defect(f"buffer {bid} is another file's", E.EPERM)

        def ok(o: uapi.PagebufFree | None) -> None:
            gone = mine if every else [bid]
            if o is not None:
                assert o.count == len(gone), f"FREE count {o.count}, expected {len(gone)}"
            for i in gone:
                self.forget(i)

        payload = bytes(uapi.PagebufFree(id=bid, flags=flags, count=count, reserved=reserved))
        self.call("free", slot, place, sizev, payload, exp, ok)

    def op_buf_info(
        self,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        idsel: tuple[str, int],
        junk: tuple[int, int, int, int, int],
    ) -> None:
        bid = self.resolve_id(idsel, self.slots[slot][1])
        jorder, jflags, jres, jphys, jsize = junk
        req = uapi.PagebufBuffer(
            id=bid, order=jorder, flags=jflags, reserved=jres, phys_addr=jphys, size=jsize
        )
        exp = Expect()
        if any(junk):
            exp.defect("an (out) field or reserved is not zero", E.EINVAL)
        if not bid:
            exp.defect("id 0", E.EINVAL, E.ENOENT)
        elif bid not in self.bufs:
            exp.defect(f"no buffer {bid}", E.ENOENT)

        n = min(len(self.build("buf_info", bytes(req), sizev)[1]), ENTRY)

        def ok(o: uapi.PagebufBuffer | None) -> None:
            if o is not None:
                want = self.bufs[bid].entry()[:n]
                assert bytes(o)[:n] == want, f"BUF_INFO {bid} differs from ALLOC's"

        self.call("buf_info", slot, place, sizev, bytes(req), exp, ok)

    def op_list(
        self,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        capsel: tuple[str, int],
        entry_size: int,
        dptr: tuple[str, int],
        junk: tuple[int, int],
    ) -> None:
        total = len(self.bufs)
        kind, k = capsel
        capacity = {"n": k, "total": total + k % 2, "huge": U32}[kind]
        n = min(capacity, total)
        need = n * entry_size
        addr, _, writable = self.data_ptr(dptr, need)
        exp = Expect()
        if any(junk):
            exp.defect("count or total not zero", E.EINVAL)
        if entry_size < ENTRY_V1:
            exp.defect(f"entry_size {entry_size}", E.EINVAL)
        else:
            if entry_size > PAGE:
                exp.maybe(E.EINVAL)  # the header sets no bound; the kernel may
            if capacity and not addr:
                if total:
                    exp.defect("capacity without an array", E.EINVAL, E.EFAULT)
                else:
                    exp.maybe(E.EINVAL)
            elif need > writable:
                exp.defect(f"{need} bytes of entries, {writable} writable", E.EFAULT)
            elif capacity and dptr[0] in ("unmapped", "kernel"):
                exp.maybe(E.EFAULT)  # nothing to write: a kernel may still check the pointer
        sentinel = 0xA5
        span = min(need + 256, writable)
        if span > 0:
            ctypes.memset(addr, sentinel, span)

        def ok(o: uapi.PagebufList | None) -> None:
            if o is not None:
                assert (o.count, o.total) == (n, total), (
                    f"LIST {o.count}/{o.total}, want {n}/{total}"
                )
            got = ctypes.string_at(addr, span) if span > 0 else b""
            want = sorted(self.bufs.values(), key=lambda b: b.id)[:n]
            size = min(ENTRY, entry_size)
            for i, b in enumerate(want):
                entry = got[i * entry_size : (i + 1) * entry_size]
                assert entry[:size] == b.entry()[:size], f"LIST entry {i} is not buffer {b.id}"
                assert entry[size:] == bytes(entry_size - size), f"LIST entry {i}: tail not zeroed"
            assert got[need:] == bytes([sentinel]) * (span - need), "LIST wrote past its entries"

        cap_req = uapi.PagebufList(
            buffers=addr, capacity=capacity, entry_size=entry_size, count=junk[0], total=junk[1]
        )
        self.call("list", slot, place, sizev, bytes(cap_req), exp, ok)

    def op_set_caching(
        self, slot: int, place: str, sizev: tuple[str, int], mode: int, reserved: int
    ) -> None:
        exp = Expect()
        if mode > uapi.CACHING_DEVICE:
            exp.defect(f"mode {mode}", E.EINVAL)
        if reserved:
            exp.defect("reserved not zero", E.EINVAL)
        payload = bytes(uapi.PagebufCaching(mode=mode, reserved=reserved))
        self.call("set_caching", slot, place, sizev, payload, exp)

    def op_kaccess(
        self,
        name: str,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        idsel: tuple[str, int],
        flags: int,
        rng: tuple[str, int, int],
        dptr: tuple[str, int],
        fill: int,
        junk: tuple[int, int],
    ) -> None:
        f = self.slots[slot][1]
        bid = self.resolve_id(idsel, f)
        buf = self.bufs.get(bid)
        offset, length = self.resolve_range(rng, buf.size if buf else PAGE)
        addr, readable, writable = self.data_ptr(dptr, length)
        nodata = name in ("kchecksum", "kflush")
        writes = name in ("kwrite", "inject")
        feats = self.info.features
        exp = Expect()
        if any(junk):
            exp.defect("checksum or reserved not zero", E.EINVAL)
        if flags & ~(uapi.KFLUSH_FLAGS if name == "kflush" else 0):
            exp.defect(f"flags {flags:#x}", E.EINVAL)
        if nodata and addr:
            exp.defect("data for an ioctl that takes none", E.EINVAL)
        if not nodata and not addr:
            if length:
                exp.defect("NULL data", E.EINVAL, E.EFAULT)
            else:
                exp.maybe(E.EINVAL)
        if name == "inject" and not self.inject:
            exp.defect("INJECT without inject=1", E.EPERM)
        if name in ("kflush", "inject") and not feats & uapi.FEAT_FLUSH:
            exp.defect("no FEAT_FLUSH", E.EOPNOTSUPP)
        if name == "kflush" and flags & uapi.KFLUSH_CLEAN and not feats & uapi.FEAT_CLEAN:
            exp.maybe(E.EOPNOTSUPP)
            if flags == uapi.KFLUSH_CLEAN:
                exp.defect("no FEAT_CLEAN", E.EOPNOTSUPP)
        reachable = False
        if buf is None:
            exp.defect(f"no buffer {bid}", E.ENOENT)
            if not bid:
                exp.maybe(E.EINVAL)
        elif buf.owner not in (None, f.key):
            exp.defect(f"buffer {bid} is another file's", E.EPERM)
        else:
            reachable = True
        if buf is not None and not in_range(offset, length, buf.size):
            exp.defect(f"[{offset}, +{length}) outside {buf.size} bytes", E.EINVAL)
        elif not nodata and addr and length > (writable if name == "kread" else readable):
            if buf is not None:
                exp.defect(f"data pointer {dptr[0]} covers too little", E.EFAULT)
            else:
                exp.maybe(E.EFAULT)
        if not nodata and dptr[0] in ("unmapped", "kernel"):
            exp.maybe(E.EFAULT)  # a kernel may check the user range first, even if empty

        src = b""
        if writes and dptr[0] in ("rw", "rw_end", "straddle") and min(readable, length):
            src = random.Random(fill).randbytes(min(readable, length))
            ctypes.memmove(addr, src, len(src))
        elif writes and dptr[0] == "ro":
            src = self.data.ro_pattern[:length]
        guard = 0
        if name == "kread" and writable:
            guard = min(writable, length + 64)
            ctypes.memset(addr, 0xEE, guard)

        def ok(o: uapi.PagebufKaccess | None) -> None:
            b = self.bufs[bid]
            if o is not None:
                assert (o.id, o.flags, o.offset, o.length, o.data) == (
                    bid, flags, offset, length, addr,
                ), f"{name} changed its (in) fields"  # fmt: skip
                if name != "kchecksum":
                    assert o.checksum == 0, f"{name} wrote a checksum"
            if writes and b.data is not None:
                assert len(src) == length, f"{name} of {length} bytes from {len(src)}"
                b.data[offset : offset + length] = src
            if b.data is None:
                return
            want = bytes(b.data[offset : offset + length])
            if name == "kread":
                got = ctypes.string_at(addr, guard)
                assert got[:length] == want, f"KREAD of buffer {bid} [{offset}, +{length})"
                assert got[length:] == b"\xee" * (guard - length), "KREAD wrote past length"
            if name == "kchecksum" and o is not None:
                crc = zlib.crc32(want)
                assert o.checksum == crc, f"KCHECKSUM {o.checksum:#x}, zlib {crc:#x}"

        def failed(rc: int) -> None:
            # A write may have happened before the failure (a fault part-way, a failed
            # flush, a struct it could not write back): what the buffer holds is unknown.
            if writes and reachable and rc not in (E.EINVAL, E.EPERM, E.EBADF, E.ENOTTY):
                self.bufs[bid].data = None

        req = uapi.PagebufKaccess(
            id=bid, flags=flags, offset=offset, length=length, data=addr, checksum=junk[0],
            reserved=junk[1],
        )  # fmt: skip
        self.call(name, slot, place, sizev, bytes(req), exp, ok, failed)

    def op_sync(
        self,
        slot: int,
        place: str,
        sizev: tuple[str, int],
        idsel: tuple[str, int],
        direction: int,
        rng: tuple[str, int, int],
    ) -> None:
        f = self.slots[slot][1]
        bid = self.resolve_id(idsel, f)
        buf = self.bufs.get(bid)
        offset, length = self.resolve_range(rng, buf.size if buf else PAGE)
        exp = Expect()
        if direction not in (uapi.SYNC_FOR_CPU, uapi.SYNC_FOR_DEVICE):
            exp.defect(f"direction {direction}", E.EINVAL)
        if buf is None:
            exp.defect(f"no buffer {bid}", E.ENOENT)
            if not bid:
                exp.maybe(E.EINVAL)
        else:
            if buf.owner not in (None, f.key):
                exp.defect(f"buffer {bid} is another file's", E.EPERM)
            if not buf.flags & uapi.BUF_DMA:
                exp.defect(f"buffer {bid} has no DMA mapping", E.EINVAL)
            if not in_range(offset, length, buf.size):
                exp.defect(f"[{offset}, +{length}) outside {buf.size} bytes", E.EINVAL)
            elif length == 0 and offset == buf.size:
                exp.maybe(E.EINVAL)  # "to the end" from the end: nothing
        payload = bytes(uapi.PagebufSync(id=bid, direction=direction, offset=offset, length=length))
        self.call("sync", slot, place, sizev, payload, exp)

    def op_raw(self, slot: int, kind: str, a: int, b: int, c: int) -> None:
        """A command pagebuf does not have: ENOTTY, whatever the argument."""
        if kind == "nr":
            cmd = IOC(c % 4, uapi.IOC_MAGIC, 0x0C + a % 0xF4, b % 0x4000)
        elif kind == "magic":
            magic = a % 256
            magic = magic if magic not in VFS_MAGICS | {uapi.IOC_MAGIC} else 0xB9
            cmd = IOC(c % 4, magic, b % 256, (a * 131 + b) % 0x4000)
        elif kind == "dir":
            real = list(CMDS.values())[a % len(CMDS)]
            d = [x for x in (IOC_NONE, IOC_READ, IOC_WRITE, RW) if x != real.dir][b % 3]
            cmd = IOC(d, uapi.IOC_MAGIC, real.nr, real.size)
        else:  # TCGETS, a tty's ioctl
            cmd = 0x5401
        fd = self.slots[slot][0]
        arg = bytearray(random.Random(a ^ b).randbytes((cmd >> 16) & 0x3FFF or 8))
        try:
            fcntl.ioctl(fd, cmd, arg, True)
            rc = 0
        except OSError as exc:
            rc = exc.errno or -1
        self.calls += 1
        self.table[("unknown command", ename(rc))] += 1
        assert rc == E.ENOTTY, f"command {cmd:#x} ({kind}): {ename(rc)}, expected ENOTTY"

    def op_check(self) -> None:
        """GET_INFO, LIST and sysfs agree with each other and with the model."""
        slot = 3
        self.op_get_info(slot, "buf", ("native", 0), 0)
        self.op_list(slot, "buf", ("native", 0), ("total", 0), ENTRY, ("rw", 0), (0, 0))
        want = (len(self.bufs), sum(b.size for b in self.bufs.values()) // PAGE)
        got = sysfs_int("nr_buffers"), sysfs_int("pages_in_use")
        assert got == want, f"sysfs (nr_buffers, pages_in_use) = {got}, model {want}"

    def execute(self, op: tuple[Any, ...]) -> None:
        name, *args = op
        if name == "reopen":
            self.reopen(*args)
        elif name == "check":
            self.op_check()
        elif name == "kaccess":
            self.op_kaccess(*args)
        else:
            getattr(self, f"op_{name}")(*args)

    def run(self, ops: list[tuple[Any, ...]]) -> None:
        self.examples += 1
        self.begin()
        done = False
        try:
            for op in PRELUDE:
                self.execute(op)
            for op in ops:
                note(repr(op))
                self.execute(op)
            self.op_check()
            done = True
        finally:
            self.end(check=done)


# --- what hypothesis draws: per operation one byte string, its kind and fields ---
#
# One draw per operation instead of one per field: under TCG a draw costs milliseconds,
# and 100,000 calls must fit in minutes. The first byte picks the kind, the rest (the
# genome) the fields, zero bytes the simplest and valid ones: shrinking the bytes towards
# zeros shrinks the operation towards a valid call. A failure's operations are printed
# decoded (note()).

GENOME = 64
# Devices the fuzzer names: none that exists, since ALLOC's answers must be foreseeable.
DEVICE_NAMES = (b"platform:no-such-device", b"pci:0000:7f:1f.7", b"amba:x", b"virtio:virtio0",
                b"platform:", b"nobus", b"platform:x\0junk", b"p" * 64)  # fmt: skip
SPECIAL64 = (0, 1, PAGE - 1, PAGE, 2**31, U32, 2**32, 2**63 - 1, 2**63, U64 - PAGE + 1, U64)
KINDS = (
    "alloc", "alloc", "alloc", "alloc", "kread", "kwrite", "kchecksum", "kread", "kwrite",
    "free", "free", "kflush", "inject", "buf_info", "list", "get_info", "set_caching", "sync",
    "raw", "reopen", "check",
)  # fmt: skip


class Genome:
    """Reads fields from bytes, wrapping around; zero bytes give the first, valid choices.
    Half the genomes (a first byte below 128) are valid calls throughout: no rare() field
    is drawn, so the deep paths run as often as the refusals."""

    def __init__(self, raw: bytes) -> None:
        self.raw, self.i = raw, 0
        self.valid = self.byte() < 128

    def byte(self) -> int:
        b = self.raw[self.i % len(self.raw)]
        self.i += 1
        return b

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(nbytes)), "little")

    def rare(self, in256: int) -> bool:
        """True for `in256` of the 256 byte values, never for zero nor in a valid genome."""
        return self.byte() >= 256 - in256 and not self.valid

    def pick(self, seq: tuple[Any, ...] | list[Any]) -> Any:
        return seq[self.byte() % len(seq)]

    def mostly_zero(self, nbytes: int, in256: int = 20) -> int:
        return self.uint(nbytes) if self.rare(in256) else 0

    def u64(self) -> int:
        return self.pick(SPECIAL64) if self.rare(128) else self.uint(8)


def decode(kind: str, raw: bytes) -> tuple[Any, ...]:
    """The operation `kind` with the fields `raw` selects, as Fuzzer.execute takes it."""
    g = Genome(raw)
    if kind == "reopen":
        return ("reopen", g.byte() % 4)
    if kind == "check":
        return ("check",)
    if kind == "raw":
        return ("raw", g.pick((0, 2, 1, 3)), g.pick(("nr", "magic", "dir", "tcgets")),
                g.uint(4), g.uint(4), g.uint(4))  # fmt: skip
    slot = g.pick((0, 2, 0, 2, 1, 3))
    place = "buf"
    if g.rare(48):
        place = g.pick(("ro", "straddle", "null", "unmapped", "kernel", "noncanon"))
    elif g.byte() & 1:
        place = "end"
    sizev: tuple[str, int] = ("native", 0)
    if g.rare(32):
        sizev = (g.pick(("first", "mid", "short", "long0", "longx", "huge0")), 1 + g.byte() % 64)
    call = (slot, place, sizev)

    def ids() -> tuple[str, int]:
        k = g.pick(("mine", "mine", "mine", "live", "live", "other", "freed", "zero", "raw"))
        k = "mine" if g.valid else k
        return (k, g.uint(4) if k == "raw" else 0 if k == "zero" else g.byte())

    def data() -> tuple[str, int]:
        k = "rw_end" if g.byte() & 1 else "rw"
        if g.rare(40):
            k = g.pick(("ro", "straddle", "null", "unmapped", "kernel"))
        return (k, g.byte() % 64)

    def rng() -> tuple[str, int, int]:
        k = g.pick(("in", "in", "in", "in", "edge", "raw"))
        k = "in" if g.valid else k
        if k == "in":
            return (k, g.uint(4), g.uint(4))
        if k == "edge":
            return (k, g.byte() % 9, g.byte() % 9)
        return (k, g.u64(), g.u64())

    if kind == "alloc":
        order = g.byte() % 3
        if g.rare(48):  # larger: the limits; seldom the largest, slow to zero under TCG
            order = 3 + g.byte() % 3 if not g.rare(48) else 6 + g.byte() % 7
        if g.rare(16):
            order = g.uint(4)
        flags = g.pick((0, uapi.BUF_FILE_OWNED, uapi.BUF_DMA, uapi.BUF_FLAGS))
        if g.rare(20):
            flags = g.uint(4)
        junk = (0, 0, 0, 0, 0)
        if g.rare(20):
            junk = (g.mostly_zero(4, 128), g.mostly_zero(4, 128), g.mostly_zero(8, 128),
                    g.mostly_zero(8, 128), g.mostly_zero(8, 128))  # fmt: skip
        direction = g.pick((0, 0, uapi.DMA_TO_DEVICE, uapi.DMA_FROM_DEVICE))
        direction = direction if flags & uapi.BUF_DMA else 0
        if g.rare(20):
            direction = g.pick((1, 2, 3, U32))
        target = (direction, b"", 0, 0)
        if g.rare(24):
            target = (direction, g.pick(DEVICE_NAMES), g.mostly_zero(4, 64), g.mostly_zero(8, 64))
        return ("alloc", *call, order, flags, junk, target)
    if kind == "free":
        flags = g.pick((1, 2, 0x80000000, U32)) if g.rare(24) else 0
        return ("free", *call, ids(), flags, g.mostly_zero(4), g.mostly_zero(4))
    if kind in ("kread", "kwrite", "kchecksum", "kflush", "inject"):
        flags = uapi.KFLUSH_CLEAN if kind == "kflush" and g.byte() & 1 else 0
        if g.rare(48):
            flags = g.pick((1, 2, 0x80000000)) if g.byte() & 1 else g.uint(4)
        junk = (g.mostly_zero(4), g.mostly_zero(4))
        bid, r = ids(), rng()
        d = data()
        if kind in ("kchecksum", "kflush") and not g.rare(40):
            d = ("null", 0)  # these take no data: a pointer is EINVAL
        return ("kaccess", kind, *call, bid, flags, r, d, g.uint(4), junk)
    if kind == "buf_info":
        junk = (0, 0, 0, 0, 0)
        if g.rare(24):
            junk = (g.mostly_zero(4, 128), g.mostly_zero(4, 128), g.mostly_zero(4, 128),
                    g.mostly_zero(8, 128), g.mostly_zero(8, 128))  # fmt: skip
        return ("buf_info", *call, ids(), junk)
    if kind == "list":
        cap = (g.pick(("total", "n", "total", "huge")), g.byte() % 41)
        entry = ENTRY
        if g.rare(40):
            entry = g.pick((0, 8, ENTRY_V1 - 1, ENTRY_V1, ENTRY_V1 + 8, ENTRY - 1, ENTRY + 1,
                            ENTRY + 8, 2 * ENTRY, 4096, 4097, U32))  # fmt: skip
        return ("list", *call, cap, entry, data(), (g.mostly_zero(4), g.mostly_zero(4)))
    if kind == "get_info":
        return ("get_info", *call, g.mostly_zero(4))
    if kind == "set_caching":
        mode = g.uint(4) if g.rare(32) else g.byte() % 5
        return ("set_caching", *call, mode, g.mostly_zero(4))
    assert kind == "sync", kind
    direction = g.uint(4) if g.rare(32) else 1 + g.byte() % 2
    return ("sync", *call, ids(), direction, rng())


OPS = st.binary(min_size=1 + GENOME, max_size=1 + GENOME)
# A length first, then that many operations: a plain st.lists() stays short on average.
SEQUENCES = st.integers(1, MAX_OPS).flatmap(lambda n: st.lists(OPS, min_size=n, max_size=n))


def fuzz(fz: Fuzzer, calls: int, first_seed: int) -> list[int]:
    """Run rounds of hypothesis examples until `calls` ioctls are done; the seeds used."""
    seeds = []
    per_example = 25.0
    while fz.calls < calls:
        round_seed = first_seed + len(seeds)
        seeds.append(round_seed)
        examples = max(5, min(200, int((calls - fz.calls) / per_example) + 1))
        before_calls, before_examples = fz.calls, fz.examples

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.filter_too_much,
                HealthCheck.large_base_example,
            ],
            print_blob=False,
        )
        @seed(round_seed)
        @given(SEQUENCES)
        def prop(ops: list[bytes]) -> None:
            fz.run([decode(KINDS[raw[0] % len(KINDS)], raw[1:]) for raw in ops])

        prop()
        ran = fz.examples - before_examples
        if ran:
            per_example = max(1.0, (fz.calls - before_calls) / ran)
    return seeds


def table(counts: Counter[tuple[str, str]]) -> list[str]:
    names = sorted({n for n, _ in counts})
    errs = sorted({e for _, e in counts}, key=lambda e: (e != "ok", e))
    lines = [f"{'':16}" + "".join(f"{e:>11}" for e in errs)]
    for n in names:
        lines.append(f"{n:16}" + "".join(f"{counts.get((n, e), 0) or '':>11}" for e in errs))
    return lines


@pytest.mark.parametrize("config", CONFIGS)
def test_fuzz_ioctls(module: None, config: str, capsys: pytest.CaptureFixture[str]) -> None:
    params = CONFIGS[config]
    calls = -(-CALLS // len(CONFIGS))
    if params:
        reload(*params)
    fz = Fuzzer()
    start = time.monotonic()
    seed_here = SEED + (1 << 32) * list(CONFIGS).index(config)  # its own examples
    print(f"fuzz {config}: PAGEBUF_FUZZ_SEED={SEED:#x} PAGEBUF_FUZZ_CALLS={CALLS}")
    try:
        seeds = fuzz(fz, calls, seed_here)
    finally:
        fz.structs.close()
        fz.data.close()
    seconds = time.monotonic() - start
    errors: Counter[str] = Counter()
    for (_, e), n in fz.table.items():
        errors[e] += n
    summary = [
        f"fuzz {' '.join((config, *params))}: {fz.calls} ioctls in {fz.examples} examples "
        f"({len(seeds)} rounds, PAGEBUF_FUZZ_SEED={SEED:#x} PAGEBUF_FUZZ_CALLS={CALLS}), "
        f"{seconds:.1f} s, {fz.calls / max(seconds, 1e-9):.0f}/s",
        "results: " + ", ".join(f"{e} {n}" for e, n in errors.most_common()),
        *table(fz.table),
    ]
    with capsys.disabled():
        print("\n" + "\n".join(summary))
    if REPORT:  # `make stress` collects every long test's figures there
        figures = {
            "test": f"fuzz {config}",
            "kernel": os.uname().release,
            "kernel_kind": os.environ.get("PAGEBUF_KERNEL", ""),
            "arch": os.uname().machine,
            "params": list(params),
            "seed": hex(SEED),
            "ioctls": fz.calls,
            "examples": fz.examples,
            "seconds": round(seconds, 1),
            "by_errno": dict(errors.most_common()),
            "by_call": {f"{n} {e}": c for (n, e), c in sorted(fz.table.items())},
        }
        with open(REPORT, "a") as f:
            f.write(json.dumps(figures, sort_keys=True) + "\n")
    assert fz.calls >= calls
    # The fuzzer reached what it is for: each command's success and the main refusals.
    wants = ["ok", "EINVAL", "ENOENT", "EPERM", "EBADF", "EFAULT", "ENOTTY"]
    if config == "tight-limits-inject":
        wants.append("ENOMEM")
    for want in wants:
        assert errors[want], f"no call ended {want}: the fuzzer does not reach it"
    succeeded = {name for (name, e), n in fz.table.items() if e == "ok"}
    needed = set(CMDS) - {"kflush", "inject"}
    if fz.info.features & uapi.FEAT_FLUSH:
        needed |= {"kflush", "inject"} if fz.inject else {"kflush"}
    assert needed <= succeeded, f"never succeeded: {sorted(needed - succeeded)}"
