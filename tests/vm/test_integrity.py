"""fill, verify and compare-views against the real module: the user view and the
kernel view of the same bytes, and corruption made on purpose through the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import zlib

import pytest

from pagebuf import Buffer, Device, access, verify
from pagebuf import patterns as P
from pagebuf.physmem import PhysMem

KERNEL = os.environ.get("PAGEBUF_KERNEL", "")
VIAS = ["mmap-uc", "mmap-wc", "mmap-wb", "devmem", "devmem-rw"]


def via_args(via: str) -> list[str]:
    if via == "devmem-rw":
        return ["--via", "devmem", "--method", "rw"]
    return ["--via", via]


def pagebuf(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pagebuf", *argv], capture_output=True, text=True)


@pytest.fixture
def buf(dev: Device) -> Buffer:
    return dev.alloc(2)


@pytest.fixture(params=VIAS)
def via(request: pytest.FixtureRequest) -> list[str]:
    if KERNEL == "debian" and request.param.startswith("devmem"):
        pytest.skip("CONFIG_STRICT_DEVMEM=y: /dev/mem refuses RAM")
    return via_args(request.param)


def expected(buf: Buffer, generation: int = 3, pattern: str = "tagged") -> bytes:
    return P.generate(pattern, phys_addr=buf.phys_addr, size=buf.size, generation=generation,
                      seed=9).tobytes()  # fmt: skip


def user_path(buf: Buffer, via: list[str]) -> PhysMem:
    method = via[via.index("--method") + 1] if "--method" in via else "auto"
    return access.open_region(buf.phys_addr, buf.size, via=via[1], method=method)[0]


def test_user_writes_equal_the_kernel_view(dev: Device, buf: Buffer, via: list[str]) -> None:
    """In-process across every path (each CLI call costs seconds in the guest)."""
    spec = {"pattern": "tagged", "phys_addr": buf.phys_addr, "generation": 3, "seed": 9}
    with user_path(buf, via) as mem:
        if mem.method == "mmap":
            with mem.view() as view:
                verify.fill(view, **spec)
        else:
            mem.write_bytes(0, expected(buf))
        assert dev.kchecksum(buf.id) == zlib.crc32(expected(buf))
        assert verify.verify(mem.read_bytes(0, buf.size), **spec).ok


def test_kernel_writes_equal_the_user_view(dev: Device, buf: Buffer, via: list[str]) -> None:
    dev.kwrite(buf.id, 0, expected(buf, 5, "random"))
    with user_path(buf, via) as mem:
        got = mem.read_bytes(0, buf.size)
    res = verify.verify(got, pattern="random", phys_addr=buf.phys_addr, generation=5, seed=9)
    assert res.ok and res.lines_checked == buf.size // res.line_size


def test_cli_fill_verify_compare_views(dev: Device, buf: Buffer) -> None:
    r = pagebuf("fill", str(buf.id), "--generation", "3", "--seed", "9", "--via", "mmap-uc")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (f"filled buffer {buf.id}: {buf.size} bytes of tagged (generation 3) "
                        "via mmap-uc\n")  # fmt: skip
    assert dev.kchecksum(buf.id) == zlib.crc32(expected(buf))
    views = json.loads(pagebuf("compare-views", str(buf.id), "--via", "mmap-uc", "--json").stdout)
    assert views["differing_pages"] == 0 and len(views["pages"]) == 4


def test_verify_finds_exactly_what_was_corrupted(dev: Device, buf: Buffer, via: list[str]) -> None:
    dev.kwrite(buf.id, 0, expected(buf))
    old = expected(buf, 2)
    dev.kwrite(buf.id, 64 * 5, old[64 * 5 : 64 * 6])  # stale: generation 2
    dev.kwrite(buf.id, 64 * 9, expected(buf)[8192 : 8192 + 64])  # foreign
    dev.kwrite(buf.id, 64 * 40 + 16, b"\x5e" * 8)  # random
    dev.kwrite(buf.id, 4096, bytes(64))  # reverted to the zero fill
    with user_path(buf, via) as mem:
        data = mem.read_bytes(0, buf.size)
    res = verify.verify(data, pattern="tagged", phys_addr=buf.phys_addr, generation=3, seed=9,
                        line_size=64)  # fmt: skip
    got = {m.phys_addr - buf.phys_addr: m for m in res.mismatches}
    assert {k: m.classification for k, m in got.items()} == {
        320: "stale", 576: "foreign", 2560: "random", 4096: "stale"}  # fmt: skip
    assert got[320].generation == 2
    assert got[576].source == buf.phys_addr + 8192
    assert got[2560].bad_words == 1
    assert res.counts == {"stale": 2, "foreign": 1, "random": 1}


def test_cli_verify_reports_corruption(dev: Device, buf: Buffer) -> None:
    dev.kwrite(buf.id, 0, expected(buf))
    dev.kwrite(buf.id, 64 * 5, expected(buf, 2)[64 * 5 : 64 * 6])
    r = pagebuf("verify", str(buf.id), "--generation", "3", "--seed", "9", "--via", "mmap-uc")
    assert r.returncode == 1  # corruption found
    assert "1 corrupted (1 stale, 0 foreign, 0 random)" in r.stdout
    assert f"0x{buf.phys_addr + 320:016x}  stale" in r.stdout and "generation 2" in r.stdout


def test_compare_views_shows_the_difference(dev: Device, buf: Buffer) -> None:
    dev.kwrite(buf.id, 0, expected(buf))
    r = pagebuf("compare-views", str(buf.id), "--via", "mmap-uc")
    assert r.returncode == 0 and "0 differ" in r.stdout
    d = dev.alloc(1, dma=True)
    r = pagebuf("compare-views", str(d.id), "--via", "mmap-wb", "--sync", "--all")
    assert r.returncode == 0 and r.stdout.count("yes") == 2


def test_fill_through_the_kernel(dev: Device, buf: Buffer) -> None:
    r = pagebuf("fill", str(buf.id), "--via", "kernel", "--pattern", "walking-ones", "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert (done["id"], done["bytes"], done["via"]) == (buf.id, buf.size, "kernel")
    want = P.generate("walking-ones", phys_addr=buf.phys_addr, size=buf.size).tobytes()
    assert dev.kread(buf.id, 0, buf.size) == want
