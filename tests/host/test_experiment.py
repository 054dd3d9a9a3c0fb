"""The order of cache maintenance in each arm of an experiment.

QEMU models no caches, so in the VM every arm comes out clean whether or not its
dma_sync/flush calls happen; this host test pins down which calls each arm makes and
when, against a recording stand-in for the device. It tests the engine's logic only:
the module itself, and these ioctls, are tested in tests/vm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pagebuf import experiment, pressure, uapi
from pagebuf.device import Buffer, ModuleInfo
from pagebuf.doctor import Report
from pagebuf.experiment import Experiment, RunParams
from pagebuf.results import ResultWriter, read_records

LOG: list[tuple[Any, ...]] = []


class FakeDevice:
    """Records every call; keeps each buffer's bytes as the kernel's view."""

    features = uapi.FEAT_FLUSH | uapi.FEAT_CLEAN | uapi.FEAT_INJECT
    dma_max_size = 2**64 - 1
    bounce_flag = 0  # BUF_BOUNCED on DMA buffers: bounced, whatever the features say
    refuse_device = 0  # the errno ALLOC fails with for a named device (0: it maps)

    def __init__(self) -> None:
        self.bufs: dict[int, bytearray] = {}
        self.next_id = 1

    def info(self) -> ModuleInfo:
        return ModuleInfo(3, self.features, 4096, 10, 32768, 0, 0, 2**64 - 1,
                          self.dma_max_size, 128 << 20, 0)  # fmt: skip

    def alloc(self, order: int, *, dma: bool = False, file_owned: bool = False,
              dma_device: str | None = None, dma_dir: int = 0) -> Buffer:  # fmt: skip
        if dma_device and self.refuse_device:
            from pagebuf.errors import device_refusal, from_oserror

            code = self.refuse_device
            raise from_oserror(OSError(code, "no"), "alloc", device_refusal(code, dma_device))
        buf_id, self.next_id = self.next_id, self.next_id + 1
        size = 4096 << order
        self.bufs[buf_id] = bytearray(size)
        LOG.append(("alloc", buf_id, dma) + ((dma_device,) if dma_device else ()))
        phys = 0x100000 * buf_id
        flags = (uapi.BUF_DMA | self.bounce_flag) if dma else 0
        if not dma:
            return Buffer(buf_id, order, flags, phys, None, size)
        return Buffer(buf_id, order, flags, phys, phys, size, dma_dir, uapi.DEV_SYNC,
                      2**40 - 1, dma_device)  # fmt: skip

    def free(self, buf_id: int) -> None:
        LOG.append(("free", buf_id))

    def kwrite(self, buf_id: int, offset: int, data: bytes) -> None:
        self.bufs[buf_id][offset : offset + len(data)] = data
        LOG.append(("kwrite", buf_id))

    def kflush(self, buf_id: int, *, clean_only: bool = False) -> None:
        LOG.append(("kclean" if clean_only else "kflush", buf_id))

    def inject(self, buf_id: int, offset: int, data: bytes) -> None:
        self.bufs[buf_id][offset : offset + len(data)] = data
        LOG.append(("inject", buf_id))

    def sync(self, buf_id: int, direction: int) -> None:
        LOG.append(("sync-for-cpu" if direction == uapi.SYNC_FOR_CPU else "sync-for-device",
                    buf_id))  # fmt: skip


class FakeMem:
    """The user's uncached path: writes land in the same bytes the kernel view holds."""

    method = "rw"

    def __init__(self, dev: FakeDevice, buf: Buffer) -> None:
        self.dev, self.buf = dev, buf

    def __enter__(self) -> FakeMem:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write_bytes(self, offset: int, data: bytes) -> None:
        self.dev.bufs[self.buf.id][offset : offset + len(data)] = data
        LOG.append(("user-write", self.buf.id))

    def read_bytes(self, offset: int, length: int) -> bytes:
        LOG.append(("check", self.buf.id))
        return bytes(self.dev.bufs[self.buf.id][offset : offset + length])

    @contextmanager
    def snapshot(self) -> Iterator[bytes]:
        yield self.read_bytes(0, self.buf.size)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    dev = FakeDevice()

    @contextmanager
    def single_cpu(keep: int = 0) -> Iterator[list[int]]:
        LOG.append(("offline-others",))
        try:
            yield [1]
        finally:
            LOG.append(("restore-cpus",))

    monkeypatch.setattr(experiment.doctor, "diagnose", lambda open_device: Report())
    monkeypatch.setattr(experiment.cpus, "single_cpu", single_cpu)

    def user_path(b: Buffer, via: str, path: str | None, owner: object = None) -> Any:
        # A file-owned buffer maps only through the open file that allocated it.
        assert owner is dev, "the user path must map through the allocating file"
        return FakeMem(dev, b), "mmap-uc" if via == "auto" else via

    monkeypatch.setattr(experiment, "open_user_path", user_path)
    LOG.clear()

    def go(arm: str, progress: Any = None, **kw: Any) -> list[tuple[Any, ...]]:
        params = RunParams(**{"arms": (arm,), "buffers": 1, "order": 0, "duration": 0,
                              "interval": 1, **kw})  # fmt: skip
        with ResultWriter(tmp_path / f"{arm}.jsonl") as out:
            engine = Experiment(dev, params, out)  # type: ignore[arg-type]
            if progress is not None:
                engine.progress = progress
            result = engine.run()[0]
        go.result = result  # type: ignore[attr-defined]
        return [e[0] for e in LOG]

    return go


@pytest.mark.parametrize(
    ("arm", "calls"),
    [
        # prime the kernel alias, then the user's uncached write, then the check
        ("cached", ["alloc", "kwrite", "user-write", "check", "free"]),
        # hand to the device before the user's write, back to the CPU before each check
        (
            "dma",
            ["alloc", "kwrite", "sync-for-device", "user-write", "sync-for-cpu", "check", "free"],
        ),  # fmt: skip
        # clean+invalidate the kernel's lines before the user's write
        ("flush", ["alloc", "kwrite", "kflush", "user-write", "check", "free"]),
        # the positive control cleans stale lines *after* the user's write (no invalidate)
        ("positive", ["alloc", "kwrite", "user-write", "kclean", "check", "free"]),
        # single-cpu is cached with the other CPUs offline around all of it
        (
            "single-cpu",
            ["offline-others", "alloc", "kwrite", "user-write", "check", "free", "restore-cpus"],
        ),  # fmt: skip
    ],
)
def test_each_arm_makes_its_calls_in_order(run: Any, arm: str, calls: list[str]) -> None:
    assert run(arm) == calls
    assert run.result.verdict in ("clean", "did-not-fire")
    assert ("alloc", 1, arm == "dma") in LOG  # only the dma arm maps for DMA


def test_injection_lands_after_the_user_write_and_is_found(run: Any, tmp_path: Path) -> None:
    calls = run("cached", inject_into="cached", inject_lines=3)
    assert calls[:3] == ["alloc", "kwrite", "user-write"]
    assert calls[3:6] == ["inject"] * 3 and calls[6:] == ["check", "free"]
    assert run.result.verdict == "injected-detected" and len(run.result.corrupted) == 3
    recs = list(read_records(tmp_path / "cached.jsonl"))
    check = next(r for r in recs if r["type"] == "check")
    assert check["bad_lines"] == 3 and check["stale"] == 3


def test_progress_is_drawn_on_a_terminal_only(
    run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The engine reports progress to a callback; the CLI's draws it on a terminal."""
    import io
    import sys

    from pagebuf.cli import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    seen: list[str | None] = []
    run("cached", progress=seen.append)
    assert seen[-1] is None and "[cached]" in str(seen[0]) and "corrupted lines: 0" in str(seen[0])
    tty, pipe = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", tty)
    for text in seen:
        Progress()(text)
    assert "[cached]" in tty.getvalue() and tty.getvalue().endswith("\r\x1b[K")  # cleared
    monkeypatch.setattr(sys, "stderr", pipe)
    for text in seen:
        Progress()(text)
    assert pipe.getvalue() == ""


def test_a_helper_that_stops_fails_the_run_and_the_rest_are_reaped(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Real forks: a thrasher that raises exits 1 with one line on stderr; check() names
    it; the spinners still running are killed and reaped when the block ends."""
    import os
    import time

    from pagebuf.errors import PagebufError

    def broken_thrash(kind: str, device_path: str | None) -> None:
        raise RuntimeError("no scratch buffer")

    monkeypatch.setattr(pressure, "thrash", broken_thrash)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)  # two spinners
    with pytest.raises(PagebufError, match="user thrasher stopped early.*0x100"):
        with pressure.pressure("user", None, busy=True) as helpers:
            pids = helpers.pids
            assert len(pids) == 3
            time.sleep(0.5)
            helpers.check()
    assert "pagebuf: pressure child: no scratch buffer" in capfd.readouterr().err
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # gone and reaped: nothing left to wait for


@pytest.mark.parametrize(
    ("features", "arm", "reason"),
    [
        (0, "flush", "no cache clean or flush"),
        (0, "positive", "no cache clean or flush"),
        (0, "inject", "cannot flush here (cache_ops none)"),
        (uapi.FEAT_FLUSH | uapi.FEAT_CLEAN, "inject", "not loaded with inject=1"),
    ],
)
def test_skipped_arms_say_why(
    run: Any, monkeypatch: pytest.MonkeyPatch, features: int, arm: str, reason: str
) -> None:
    monkeypatch.setattr(FakeDevice, "features", features)
    assert run(arm) == []  # nothing allocated, nothing touched
    assert run.result.verdict == "skipped" and reason in run.result.note


@pytest.mark.parametrize(
    ("features", "max_size", "order", "reason"),
    [
        (uapi.FEAT_DMA_BOUNCE, 2**64 - 1, 0, "DMA is bounced through swiotlb here"),
        (uapi.FEAT_DMA_BOUNCE, 256 << 10, 7, "DMA is bounced through swiotlb here"),
        (0, 256 << 10, 7, "order 7 is 524288 bytes, above the largest DMA mapping here "
                          "(262144 bytes: dma_max_mapping_size() of pagebuf's device)"),
    ],
)  # fmt: skip
def test_dma_arm_refused_up_front_where_it_would_lie_or_fail(
    run: Any, monkeypatch: pytest.MonkeyPatch, features: int, max_size: int, order: int,
    reason: str,
) -> None:  # fmt: skip
    """Bounced, the syncs copy a stale bounce slot over the user's write: every line
    would read as stale corruption. Over dma_max_size, ALLOC fails (E2BIG). Either way
    the arm is skipped with the reason before anything is allocated."""
    monkeypatch.setattr(FakeDevice, "features", FakeDevice.features | features)
    monkeypatch.setattr(FakeDevice, "dma_max_size", max_size)
    assert run("dma", order=order) == []
    assert run.result.verdict == "skipped" and reason in run.result.note
    assert run("cached", order=order)[0] == "alloc"  # the other arms still run


def test_a_bounced_buffer_skips_the_dma_arm_even_without_the_feature(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeDevice, "bounce_flag", uapi.BUF_BOUNCED)
    assert run("dma") == ["alloc", "free"]  # nothing written, no sync, freed
    assert run.result.verdict == "skipped"
    assert "sync_for_cpu would copy it over the user's writes" in run.result.note


def test_the_dma_arm_maps_for_the_named_device_and_records_it(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pagebuf's own device bounced: no reason to refuse a device that may not be.
    monkeypatch.setattr(FakeDevice, "features", FakeDevice.features | uapi.FEAT_DMA_BOUNCE)
    calls = ["alloc", "kwrite", "sync-for-device", "user-write", "sync-for-cpu", "check", "free"]
    assert run("dma", dma_device="platform:13000000.gpu") == calls
    assert ("alloc", 1, True, "platform:13000000.gpu") in LOG
    recs = list(read_records(tmp_path / "dma.jsonl"))
    assert recs[0]["params"]["dma_device"] == "platform:13000000.gpu"
    access = next(r for r in recs if r["type"] == "access")
    assert access["dma"] == {"dma_device": "platform:13000000.gpu", "dma_dir": "bidirectional",
                             "dma_mask_hex": "0xffffffffff", "dma_coherence": "unknown",
                             "dma_syncs": True, "dma_iommu": "none", "bounced": False}  # fmt: skip
    from pagebuf import report

    _, rows = report.summarize(recs)
    assert report.render_table(rows).endswith(
        "dma: mapped for platform:13000000.gpu (mask 0xffffffffff, firmware says unknown, "
        "IOMMU none): syncs needed"
    )
    assert run("cached", dma_device="platform:13000000.gpu")[0:1] == ["alloc"]
    assert ("alloc", 2, False) in LOG  # the other arms' buffers are not mapped


@pytest.mark.parametrize(("errno_", "words"), [(95, "does no DMA"), (16, "VFIO"),
                                                (19, "no device platform:gpu"),
                                                (6, "no driver is bound")])  # fmt: skip
def test_a_device_that_cannot_be_mapped_for_skips_the_dma_arm(
    run: Any, monkeypatch: pytest.MonkeyPatch, errno_: int, words: str
) -> None:
    monkeypatch.setattr(FakeDevice, "refuse_device", errno_)
    assert run("dma", dma_device="platform:gpu") == []
    assert run.result.verdict == "skipped"
    assert run.result.note.startswith("cannot map for platform:gpu: ") and words in run.result.note


def test_a_named_device_refusal_that_is_not_about_the_device_is_raised(
    run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pagebuf.errors import PermissionDeniedError

    monkeypatch.setattr(FakeDevice, "refuse_device", 1)  # EPERM: no CAP_SYS_ADMIN
    with pytest.raises(PermissionDeniedError, match="needs CAP_SYS_ADMIN"):
        run("dma", dma_device="platform:gpu")


def test_records_say_the_path_each_arm_really_took(run: Any, tmp_path: Path) -> None:
    """`auto` resolved to the module's uncached mmap: the access record, every check and
    the arm summary say so, while the header keeps what was asked."""
    run("cached", via="auto")
    recs = list(read_records(tmp_path / "cached.jsonl"))
    assert recs[0]["params"]["via"] == "auto"
    access = [r for r in recs if r["type"] == "access"]
    want = {"via": "mmap-uc", "path": "/dev/pagebuf", "method": "mmap", "o_sync": False,
            "caching": "uc"}  # fmt: skip
    assert access == [{"type": "access", "arm": "cached", **want}]
    summary = next(r for r in recs if r["type"] == "arm_summary")
    assert summary["access"] == want and run.result.access == want


@pytest.mark.parametrize(
    ("via", "errno_", "taken", "opened"),
    [
        # PAT refuses the mmap: `devmem` never falls back to the cached read()/write().
        ("devmem", 22, None, [("/dev/mem", "mmap")]),
        # `auto` takes the module's uncached mmap instead (the real access.open_region).
        ("auto", 22, "mmap-uc", [("/dev/mem", "mmap"), ("/dev/pagebuf", "mmap")]),
        ("auto", 1, "mmap-uc", [("/dev/mem", "mmap"), ("/dev/pagebuf", "mmap")]),  # STRICT
        ("auto", 0, "devmem", [("/dev/mem", "mmap")]),
        ("devmem-rw", 0, "devmem-rw", [("/dev/mem", "rw")]),
        ("mmap-wb", 0, "mmap-wb", [("/dev/pagebuf", "mmap")]),
    ],
)
def test_a_cached_user_path_only_by_name(
    monkeypatch: pytest.MonkeyPatch, via: str, errno_: int, taken: str | None,
    opened: list[tuple[str, str]],
) -> None:  # fmt: skip
    """What a run's user path opens, through the real access.open_region: only the files
    and methods (PhysMem) are faked."""
    from pagebuf.discovery import DeviceNode
    from pagebuf.errors import PagebufError
    from pagebuf.physmem import PhysMemError

    seen: list[tuple[str, str]] = []

    def physmem(phys: int, size: int, *, path: str, method: str, **kw: Any) -> str:
        seen.append((path, method))
        if errno_ and path == "/dev/mem" and method == "mmap":
            raise PhysMemError("mmap /dev/mem: refused", errno_)
        return "mem"

    monkeypatch.setattr(experiment.access, "PhysMem", physmem)
    monkeypatch.setattr(experiment.access, "find_device",
                        lambda path=None: DeviceNode(Path("/dev/pagebuf"), None))  # fmt: skip
    buf = Buffer(1, 0, 0, 0x100000, None, 4096)
    if taken is None:
        with pytest.raises(PagebufError) as err:
            experiment.open_user_path(buf, via, None)
        assert err.value.errno == 22 and "\n" not in err.value.message
        assert "--via mmap-uc" in err.value.message and "--via devmem-rw" in err.value.message
    else:
        assert experiment.open_user_path(buf, via, None) == ("mem", taken)
    assert seen == opened


def test_counts_are_exact_when_the_list_is_cut(
    run: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The user's write never lands on an order-8 buffer: all 16384 lines read stale. The
    record counts them all, lists 4096, says the list was cut; the injected lines among
    them are found, and the rest is real corruption, not a broken detector."""
    monkeypatch.setattr(FakeMem, "write_bytes", lambda self, offset, data: None)
    run("cached", order=8, inject_into="cached", inject_lines=8)
    check = next(r for r in read_records(tmp_path / "cached.jsonl") if r["type"] == "check")
    assert (check["bad_lines"], check["stale"], check["foreign"], check["random"]) == (
        16384, 16384, 0, 0)  # fmt: skip
    assert check["listed"] == len(check["bad"]) == 4096 and check["bad_truncated"] is True
    assert check["via"] == "mmap-uc"
    result = run.result
    assert result.verdict == "corrupted" and len(result.corrupted) == 16384
    assert "all 8 injected lines found as stale, and 16376 lines" in result.note
