"""The CLI's argument handling, error lines and output shapes (the device is faked here:
these tests are about formatting; the module itself is tested in tests/vm)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pagebuf import cli, device, uapi
from pagebuf.device import Buffer, ModuleInfo
from pagebuf.discovery import DeviceNode
from pagebuf.results import read_records

DMA_BUF = Buffer(id=7, order=2, flags=0x1, phys_addr=0x3E58000, dma_addr=0x3E58000, size=16384)


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pagebuf", *argv], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["alloc"],
        ["alloc", "--order", "x"],
        ["alloc", "--order", "-1"],
        ["free"],
        ["free", "3", "--all"],
        ["info", "0"],
        ["info", "abc"],
        ["bogus"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    proc = run_cli(*argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "usage: pagebuf" in proc.stderr


def test_missing_device_exits_4_with_one_line(tmp_path: pytest.TempPathFactory) -> None:
    proc = run_cli("--device", "/nonexistent/pagebuf", "list")
    assert proc.returncode == 4
    assert proc.stderr.startswith("pagebuf: pagebuf module not loaded: run `sudo insmod")
    assert len(proc.stderr.splitlines()) == 1


class FakeDevice:
    """Stands in for /dev/pagebuf so output formatting can be checked on any host."""

    freed: list[int] = []
    allocs: list[tuple[int, bool, bool]] = []  # (order, dma, file_owned) asked for
    targets: list[tuple[str | None, int]] = []  # (dma_device, dma_dir) asked for
    sys_path: Path | None = None

    def __init__(self, path: object = None) -> None:
        self.node = DeviceNode(Path("/dev/pagebuf"), self.sys_path)

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def alloc(self, order: int, *, dma: bool = False, file_owned: bool = False,
              dma_device: str | None = None, dma_dir: int = 0) -> Buffer:  # fmt: skip
        self.allocs.append((order, dma, file_owned))
        self.targets.append((dma_device, dma_dir))
        flags = (uapi.BUF_DMA if dma else 0) | (uapi.BUF_FILE_OWNED if file_owned else 0)
        return Buffer(7, order, flags, 0x3E58000, 0x3E58000 if dma else None, 4096 << order)

    def buffers(self) -> list[Buffer]:
        return [DMA_BUF]

    def buffer(self, buf_id: int) -> Buffer:
        from pagebuf.errors import NoSuchBufferError

        if buf_id != 7:
            raise NoSuchBufferError(f"buffer {buf_id}: no such buffer", 2)
        return DMA_BUF

    def free(self, buf_id: int) -> None:
        self.freed.append(buf_id)

    def info(self) -> ModuleInfo:
        return ModuleInfo(1, 1, 4096, 10, 32768, 4, 1, 2**64 - 1)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeDevice]]:
    monkeypatch.setattr(cli, "Device", FakeDevice)
    FakeDevice.freed = []
    FakeDevice.allocs = []
    FakeDevice.targets = []
    FakeDevice.sys_path = None
    yield FakeDevice
    assert device.Device is not FakeDevice


def test_alloc_json_is_one_object(fake: type[FakeDevice], capsys: pytest.CaptureFixture) -> None:
    """What was asked reaches the module, and the buffer it made is what is printed: a
    module-owned buffer (a file-owned one would die when the command exits)."""
    assert cli.main(["alloc", "--order", "3", "--dma", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["phys_addr"] == 0x3E58000 and obj["phys_addr_hex"] == "0x3e58000"
    assert (obj["order"], obj["pages"], obj["size"]) == (3, 8, 32768)
    assert (obj["dma"], obj["dma_addr"], obj["dma_addr_hex"]) == (True, 0x3E58000, "0x3e58000")
    assert obj["owner"] == "module" and not obj["bounced"]
    assert cli.main(["alloc", "--order", "0", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert (obj["order"], obj["pages"], obj["size"]) == (0, 1, 4096)
    assert (obj["dma"], obj["dma_addr"], obj["dma_addr_hex"]) == (False, None, None)
    assert fake.allocs == [(3, True, False), (0, False, False)]
    assert cli.main(["alloc", "--order", "1", "-q"]) == 0
    assert capsys.readouterr().out == "0x3e58000\n"  # the address alone, for a shell


def test_alloc_dma_device_and_dir_imply_dma_and_reach_the_module(
    fake: type[FakeDevice], capsys: pytest.CaptureFixture
) -> None:
    assert cli.main(["alloc", "--order", "0", "--dma-device", "13000000.gpu"]) == 0
    assert cli.main(["alloc", "--order", "0", "--dma-dir", "from-device"]) == 0
    assert cli.main(["alloc", "--order", "0", "--dma", "--dma-dir", "to-device"]) == 0
    assert [a[1] for a in fake.allocs] == [True, True, True]
    assert fake.targets == [("13000000.gpu", uapi.DMA_BIDIRECTIONAL),
                            (None, uapi.DMA_FROM_DEVICE), (None, uapi.DMA_TO_DEVICE)]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        cli.main(["alloc", "--order", "0", "--dma-dir", "sideways"])
    assert exc.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err


def test_alloc_human_shows_dma_only_when_mapped(
    fake: type[FakeDevice], capsys: pytest.CaptureFixture
) -> None:
    cli.main(["alloc", "--order", "1"])
    plain = capsys.readouterr().out
    assert "phys_addr  0x0000000003e58000" in plain and "dma_addr" not in plain
    cli.main(["alloc", "--order", "2", "--dma"])
    assert "dma_addr   0x0000000003e58000" in capsys.readouterr().out


def test_list_and_info(fake: type[FakeDevice], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["list", "--json"]) == 0
    assert [b["id"] for b in json.loads(capsys.readouterr().out)] == [7]
    assert cli.main(["info", "8"]) == 6
    assert capsys.readouterr().err == "pagebuf: buffer 8: no such buffer\n"
    assert cli.main(["free", "0x7"]) == 0
    assert fake.freed == [7]
    assert capsys.readouterr().out == "freed buffer 7\n"
    assert cli.main(["free", "7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"freed": 1, "id": 7}


def test_status(fake: type[FakeDevice], capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    fake.sys_path = tmp_path
    (tmp_path / "cache_ops").write_text("dma\n")
    assert cli.main(["status", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["max_order"] == 10 and obj["dma_coherent"] is True
    assert obj["cache_ops"] == "dma"
    (tmp_path / "cache_ops").unlink()  # a module older than api 2 has no such file
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "cache_ops      unknown" in lines
    assert "dma_coherent   yes" in lines  # words, not Python's True
    assert not [line for line in lines if line.endswith((" True", " False"))]


def test_report_and_run_errors_are_one_line_and_the_table_s_code(tmp_path: Path) -> None:
    """Errors of report and run: never a traceback, and the exit code every command gives
    that error (a missing module is 4 here as for `list`)."""
    good = tmp_path / "run.jsonl"
    good.write_text(json.dumps({"type": "check", "arm": "cached", "t": 0.0, "buffer": 1,
                                "bytes": 4096, "lines_checked": 64, "bad_lines": 0,
                                "bad": [], "seconds": 0.001}) + "\n")  # fmt: skip
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    cases = [
        (["report", str(tmp_path / "missing.jsonl")], "No such file", 9),
        (["report", str(tmp_path)], "Is a directory", 9),
        (["report", str(junk)], "no pagebuf run records", 8),
        (["report", str(good), "--plot", str(tmp_path / "x.gif")], ".svg, .png or .pdf", 8),
        (["report", str(good), "--plot", str(tmp_path / "no" / "dir" / "x.svg")],
         "cannot write", 9),
        (["--device", "/nonexistent", "run", "--output", str(good)], "not loaded", 4),
        (["--device", "/nonexistent", "list"], "not loaded", 4),
    ]  # fmt: skip
    for argv, message, code in cases:
        proc = run_cli(*argv)
        assert proc.returncode == code, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and message in proc.stderr, (argv, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1, (argv, proc.stderr)
    assert good.read_text().count("\n") == 1  # an existing --output is never touched


def test_run_refuses_to_overwrite_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.jsonl"
    out.write_text("precious\n")
    monkeypatch.setattr(cli, "Device", lambda path=None: FakeOpen())
    assert cli.main(["run", "--output", str(out)]) == 9  # EEXIST: an operating-system error
    assert out.read_text() == "precious\n"
    assert "already exists" in capsys.readouterr().err


class FakeOpen:
    def __enter__(self) -> FakeOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def compare_file(path: Path, arms: list[str]) -> Path:
    """A finished run's records: cached corrupted, every other arm clean."""
    recs: list[dict[str, object]] = [{"type": "header", "params": {"arms": arms}, "doctor": {}}]
    for arm in arms:
        bad = [[0, "stale"]] if arm == "cached" else []
        recs.append({"type": "check", "arm": arm, "t": 0.0, "buffer": 1, "bytes": 4096,
                     "lines_checked": 64, "bad": bad, "seconds": 0.001})  # fmt: skip
    verdict = {"cached": "corrupted", "positive": "fired", "inject": "injected-detected"}
    recs += [{"type": "arm_summary", "arm": a, "verdict": verdict.get(a, "clean"), "note": ""}
             for a in arms]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


COMPARE = ["cached", "dma", "single-cpu", "flush", "positive", "inject"]


def test_report_of_a_compare_ends_with_the_recommendation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = compare_file(tmp_path / "cmp.jsonl", COMPARE)
    assert cli.main(["report", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:7]] == COMPARE  # the table comes first
    ending = out[out.index("") + 1 :]
    assert ending[0] == "corrupted: cached"
    assert ending[-5].startswith("=> the dma arm stayed clean while cached corrupted: ")
    assert ending[-2:] == ["", "overall: FAIL: corruption in cached"]
    assert cli.main(["report", str(path), "--json"]) == 1  # JSON stays one array of rows
    assert [r["arm"] for r in json.loads(capsys.readouterr().out)] == COMPARE


def test_report_of_a_single_run_has_no_recommendation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = compare_file(tmp_path / "run.jsonl", ["cached", "positive", "inject"])
    assert cli.main(["report", str(path)]) == 1
    out = capsys.readouterr().out
    assert "=>" not in out and len(out.splitlines()) == 6  # table, a blank, overall
    assert out.splitlines()[-1] == "overall: FAIL: corruption in cached"


def test_compare_prints_and_records_the_recommendation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's part only: the engine is replaced by one that writes a finished run."""
    from pagebuf import experiment

    class Engine:
        def __init__(self, dev: object, params: experiment.RunParams, out: object,
                     device_path: object = None, progress: object = None) -> None:  # fmt: skip
            self.params, self.out = params, out

        def run(self) -> list[experiment.ArmResult]:
            src = compare_file(tmp_path / "src.jsonl", list(self.params.arms))
            for rec in read_records(src):
                self.out.write(rec)  # type: ignore[attr-defined]
            self.out.write({"type": "summary", "exit_code": 1})  # type: ignore[attr-defined]
            return [experiment.ArmResult("cached", "corrupted")]

    monkeypatch.setattr(cli, "Device", lambda path=None: FakeOpen())
    monkeypatch.setattr(experiment, "Experiment", Engine)
    out = tmp_path / "cmp.jsonl"
    assert cli.main(["compare", "--output", str(out)]) == 1
    printed = capsys.readouterr().out
    summary = list(read_records(out))[-1]
    assert summary["type"] == "summary"
    recommended, overall = printed.rstrip("\n").rsplit("\n\n", 1)
    assert recommended.endswith(summary["recommendation"])
    assert overall == "overall: FAIL: corruption in cached"
    assert "=> the dma arm stayed clean while cached corrupted" in summary["recommendation"]


def test_status_says_what_pat_nopat_and_bouncing_rule_out(
    fake: type[FakeDevice], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pagebuf import uapi

    features = uapi.FEAT_X86_PAT | uapi.FEAT_DMA_BOUNCE | uapi.FEAT_FLUSH
    info = ModuleInfo(3, features, 4096, 10, 32768, 4, 1, 2**64 - 1, 262144, 128 << 20, 16384)
    monkeypatch.setattr(fake, "info", lambda self: info)
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "dma_max_size   262144 bytes (swiotlb bounce buffering)" in out
    assert "max_bytes      134217728" in out and "bytes_in_use   16384" in out
    notes = [line for line in out if line.startswith("note: ")]
    assert len(notes) == 2
    assert "refused (EPERM); load it with x86_pat_alias=1" in notes[0]
    assert "bounced through swiotlb" in notes[1] and "dma arm is skipped" in notes[1]
    assert cli.main(["status", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["x86_pat"] and not obj["pat_alias"] and obj["dma_bounce"]
    assert obj["dma_max_size"] == 262144 and obj["notes"] == [n[6:] for n in notes]
    nopat = ModuleInfo(3, uapi.FEAT_WC_IS_UC, 4096, 10, 32768, 0, 0, 2**64 - 1, 2**64 - 1)
    monkeypatch.setattr(fake, "info", lambda self: nopat)
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "dma_max_size   unlimited" in out
    assert [line for line in out if line.startswith("note: ")] == [
        "note: booted nopat: write-combining maps (--via mmap-wc) are UC- here, the same as mmap-uc"
    ]


def test_compare_views_sync_refuses_a_bounced_buffer(
    fake: type[FakeDevice], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pagebuf import uapi

    bounced = Buffer(7, 0, uapi.BUF_DMA | uapi.BUF_BOUNCED, 0x3E58000, 0x7F000000, 4096)
    monkeypatch.setattr(fake, "buffer", lambda self, buf_id: bounced)
    assert cli.main(["compare-views", "7", "--sync", "--via", "mmap-wb"]) == 8
    err = capsys.readouterr().err
    assert err.startswith("pagebuf: compare-views 7 --sync: DMA is bounced through swiotlb")
    assert len(err.splitlines()) == 1


def test_mem_takes_busybox_devmem_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mem read ADDR [WIDTH]` and `mem write ADDR [WIDTH] VALUE`, as busybox devmem, and
    --width; a file stands in for physical memory (--force: no buffer is asked about)."""
    from pagebuf.physmem import PhysMem

    backing = tmp_path / "mem"
    backing.write_bytes(bytes(4096))

    def region(phys: int, size: int, **kw: object) -> tuple[PhysMem, str]:
        return PhysMem(phys, size, path=str(backing), sync=False, method="rw"), "devmem-rw"

    monkeypatch.setattr(cli.access, "open_region", region)
    assert cli.main(["mem", "write", "0x10", "8", "0x5a", "--force"]) == 0
    assert backing.read_bytes()[0x10:0x12] == b"\x5a\x00"
    assert cli.main(["mem", "write", "0x20", "0x11223344", "--force"]) == 0  # 32 bits
    assert backing.read_bytes()[0x20:0x25] == bytes.fromhex("4433221100")
    capsys.readouterr()
    assert cli.main(["mem", "read", "0x20", "16", "--force"]) == 0
    assert cli.main(["mem", "read", "0x20", "--width", "16", "--force"]) == 0
    assert cli.main(["mem", "read", "0x20", "--force"]) == 0
    assert capsys.readouterr().out.split() == ["0x3344", "0x3344", "0x11223344"]
    assert cli.main(["mem", "read", "0x20", "16", "--width", "32", "--force"]) == 8
    assert "disagree" in capsys.readouterr().err
    assert cli.main(["mem", "write", "0x20", "16", "0x1ffff", "--force"]) == 8  # too wide
    with pytest.raises(SystemExit) as usage:
        cli.main(["mem", "read", "0x20", "12", "--force"])
    assert usage.value.code == 2
