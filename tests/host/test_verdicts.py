"""Every verdict a run can reach, and the exit codes they lead to, from machines that go
wrong on purpose.

QEMU models no caches, so in the guest nothing but the INJECT ioctl ever corrupts a line;
here a stand-in machine does: a user write that never lands, a clean that writes the
kernel's stale lines back over the user's data, an injection that lands on the wrong
line or writes the wrong bytes. The real engine (pagebuf.experiment), the real verifier
and the real CLI judge them; only the module (Device) and physical memory (PhysMem) are
faked. The module itself is tested in tests/vm.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pagebuf import access, cli, experiment, records, uapi
from pagebuf.device import Buffer, ModuleInfo
from pagebuf.doctor import Report
from pagebuf.experiment import Experiment, RunParams
from pagebuf.results import ResultWriter, read_records
from pagebuf.sysinfo import cache_line_size

LINE = cache_line_size()
PAGE = 4096

# What can go wrong, per arm:
LOST_WRITE = "the user's write never lands"
LOST_LINE = "the user's write misses one line"  # the line at LOST_AT of the first buffer
STALE_CLEAN = "a clean writes the kernel's stale lines back"  # KFLUSH with clean_only
INJECT_ASKEW = "an injection lands one line further on"
INJECT_GARBAGE = "an injection writes bytes that are no earlier generation"
LOST_AT = 5 * LINE


@dataclass
class Machine:
    """Physical memory, a cached kernel alias that remembers what it last wrote (the dirty
    lines a write-back would bring back), and the faults of each arm."""

    faults: dict[str, set[str]] = field(default_factory=dict)
    memory: dict[int, bytearray] = field(default_factory=dict)  # phys -> bytes
    kernel: dict[int, bytes] = field(default_factory=dict)  # buffer id -> its last kwrite
    bufs: dict[int, Buffer] = field(default_factory=dict)
    arm: str = ""
    injected_at: list[tuple[int, int]] = field(default_factory=list)  # where they landed
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def has(self, fault: str) -> bool:
        return fault in self.faults.get(self.arm, set())

    def mem(self, buf_id: int) -> bytearray:
        return self.memory[self.bufs[buf_id].phys_addr]


class FakeDevice:
    """/dev/pagebuf on the Machine: cache clean and flush, and INJECT (inject=1)."""

    features = uapi.FEAT_FLUSH | uapi.FEAT_CLEAN | uapi.FEAT_INJECT

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.next_id = 1

    def __enter__(self) -> FakeDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def info(self) -> ModuleInfo:
        return ModuleInfo(3, self.features, PAGE, 10, 32768, 0, 0, 2**64 - 1, 2**64 - 1,
                          128 << 20, 0)  # fmt: skip

    def alloc(self, order: int, *, dma: bool = False, file_owned: bool = False,
              dma_device: str | None = None, dma_dir: int = 0) -> Buffer:  # fmt: skip
        assert dma_device is None and dma_dir == 0  # no --dma-device here
        buf_id, self.next_id = self.next_id, self.next_id + 1
        phys = 0x100000 * buf_id
        buf = Buffer(buf_id, order, uapi.BUF_DMA if dma else 0, phys, phys if dma else None,
                     PAGE << order)  # fmt: skip
        self.m.bufs[buf_id] = buf
        self.m.memory[phys] = bytearray(buf.size)
        return buf

    def buffer(self, buf_id: int) -> Buffer:
        return self.m.bufs[buf_id]

    def free(self, buf_id: int) -> None:
        self.m.calls.append(("free", buf_id))

    def kwrite(self, buf_id: int, offset: int, data: bytes) -> None:
        self.m.mem(buf_id)[offset : offset + len(data)] = data
        self.m.kernel[buf_id] = bytes(data)

    def kflush(self, buf_id: int, offset: int = 0, length: int | None = None, *,
               clean_only: bool = False) -> None:  # fmt: skip
        self.m.calls.append(("kclean" if clean_only else "kflush", buf_id))
        if clean_only and self.m.has(STALE_CLEAN):
            stale = self.m.kernel[buf_id]
            self.m.mem(buf_id)[: len(stale)] = stale

    def inject(self, buf_id: int, offset: int, data: bytes) -> None:
        mem = self.m.mem(buf_id)
        if self.m.has(INJECT_ASKEW):
            offset = (offset + LINE) % len(mem)
        if self.m.has(INJECT_GARBAGE):
            data = bytes(b ^ 0x5A for b in data)
        mem[offset : offset + len(data)] = data
        self.m.injected_at.append((buf_id, offset))

    def sync(self, buf_id: int, direction: int, offset: int = 0, length: int = 0) -> None:
        self.m.calls.append(("sync", buf_id, direction))

    def kchecksum(self, buf_id: int, offset: int = 0, length: int | None = None) -> int:
        view = self.m.kernel.get(buf_id, bytes(self.m.mem(buf_id)))
        end = len(view) if length is None else offset + length
        return zlib.crc32(view[offset:end])


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    """The Machine behind /dev/pagebuf and /dev/mem for the engine and the CLI alike."""
    m = Machine()

    class FakePhysMem:
        """A window on the Machine's memory, as access.open_region makes one."""

        method = "rw"

        def __init__(self, phys: int, size: int, **kw: object) -> None:
            self.buf = m.memory[phys]
            self.phys = phys

        def __enter__(self) -> FakePhysMem:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def close(self) -> None:
            return None

        def read_bytes(self, offset: int, length: int) -> bytes:
            return bytes(self.buf[offset : offset + length])

        @contextmanager
        def snapshot(self) -> Iterator[bytes]:
            yield self.read_bytes(0, len(self.buf))

        def write_bytes(self, offset: int, data: bytes) -> None:
            if m.has(LOST_WRITE):
                return
            new = bytearray(data)
            if m.has(LOST_LINE) and self.phys == min(m.memory) and offset == 0:
                new[LOST_AT : LOST_AT + LINE] = self.buf[LOST_AT : LOST_AT + LINE]
            self.buf[offset : offset + len(new)] = new

    run_arm = Experiment.run_arm

    def tracking_run_arm(self: Experiment, arm: str) -> experiment.ArmResult:
        m.arm = arm
        m.memory.clear()  # each arm's first buffer is "the first buffer"
        return run_arm(self, arm)

    @contextmanager
    def single_cpu(keep: int = 0) -> Iterator[list[int]]:
        yield [1]

    monkeypatch.setattr(access, "PhysMem", FakePhysMem)
    monkeypatch.setattr(Experiment, "run_arm", tracking_run_arm)
    monkeypatch.setattr(experiment.doctor, "diagnose", lambda open_device: Report())
    monkeypatch.setattr(experiment.cpus, "single_cpu", single_cpu)
    monkeypatch.setattr(cli, "Device", lambda path=None: FakeDevice(m))
    sigterm = signal.getsignal(signal.SIGTERM)  # the CLI's run path sets its own
    yield m
    signal.signal(signal.SIGTERM, sigterm)


def engine(machine: Machine, tmp_path: Path, arms: tuple[str, ...], **kw: Any
           ) -> tuple[dict[str, experiment.ArmResult], list[dict[str, Any]]]:  # fmt: skip
    """Run the real engine on the Machine: each arm's result, and the records written."""
    params = RunParams(**{"arms": arms, "buffers": 2, "order": 0, "duration": 0,
                          "interval": 1, "via": "devmem", "inject_lines": 4, **kw})  # fmt: skip
    out = tmp_path / "run.jsonl"
    with ResultWriter(out) as w:
        results = Experiment(FakeDevice(machine), params, w).run()  # type: ignore[arg-type]
    return {r.arm: r for r in results}, list(read_records(out))


def summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    (last,) = [r for r in recs if r["type"] == "summary"]
    assert recs[-1] is last
    return last


LINES = PAGE // LINE  # per order-0 buffer


def test_a_user_write_that_never_lands_is_corruption(machine: Machine, tmp_path: Path) -> None:
    machine.faults = {"cached": {LOST_WRITE}}
    got, recs = engine(machine, tmp_path, ("cached", "flush"))
    assert got["cached"].verdict == "corrupted"
    assert got["cached"].corrupted == {(b, off) for b in (1, 2) for off in range(0, PAGE, LINE)}
    checks = [r for r in recs if r["type"] == "check" and r["arm"] == "cached"]
    # Every line still holds the previous generation: the write-back signature, stale.
    assert [(c["bad_lines"], c["stale"], c["foreign"], c["random"]) for c in checks] == [
        (LINES, LINES, 0, 0)] * 2  # fmt: skip
    assert got["flush"].verdict == "clean" and not got["flush"].corrupted
    assert summary(recs)["exit_code"] == 1
    assert summary(recs)["verdicts"] == {"cached": "corrupted", "flush": "clean"}


@pytest.mark.parametrize("arm", ["cached", "dma", "single-cpu", "flush"])
def test_one_lost_line_is_found_exactly_in_every_arm(
    machine: Machine, tmp_path: Path, arm: str
) -> None:
    machine.faults = {arm: {LOST_LINE}}
    got, recs = engine(machine, tmp_path, (arm,))
    assert got[arm].verdict == "corrupted" and got[arm].corrupted == {(1, LOST_AT)}
    (bad,) = [r["bad"] for r in recs if r["type"] == "check" and r["bad_lines"]]
    assert bad == [[LOST_AT, "stale"]]
    assert summary(recs)["exit_code"] == 1


def test_the_positive_control_fires_when_a_clean_brings_stale_lines_back(
    machine: Machine, tmp_path: Path
) -> None:
    """What the positive control exists to show: the kernel's dirty lines cleaned over
    the user's data. It fired, and that alone is no corruption of the run (exit 0)."""
    machine.faults = {"positive": {STALE_CLEAN}}
    got, recs = engine(machine, tmp_path, ("cached", "positive"))
    assert got["positive"].verdict == "fired" and got["positive"].note == ""
    assert len(got["positive"].corrupted) == 2 * LINES
    assert ("kclean", 3) in machine.calls and ("kclean", 4) in machine.calls
    assert got["cached"].verdict == "clean"
    assert summary(recs)["exit_code"] == 0
    assert summary(recs)["verdicts"] == {"cached": "clean", "positive": "fired"}


def counts(note: str) -> list[int]:
    """The numbers a verdict's note gives, smallest first (its wording is not pinned)."""
    return sorted(int(n) for n in re.findall(r"\d+", note))


def inject_record(recs: list[dict[str, Any]]) -> set[tuple[int, int]]:
    (rec,) = [r for r in recs if r["type"] == "inject"]
    return {(b, off) for b, off in rec["lines"]}


def test_an_injection_on_the_wrong_line_breaks_the_detector(
    machine: Machine, tmp_path: Path
) -> None:
    machine.faults = {"inject": {INJECT_ASKEW}}
    got, recs = engine(machine, tmp_path, ("cached", "inject"))
    asked, landed = inject_record(recs), set(machine.injected_at)
    assert len(asked) == 4 and landed != asked
    # A line's stale bytes one line on read as another address's: foreign, not stale.
    missed, extra, misread = asked - landed, landed - asked, asked & landed
    assert got["inject"].verdict == "broken" and got["inject"].corrupted == landed
    assert counts(got["inject"].note) == sorted([len(missed), len(misread), len(extra)])
    assert summary(recs)["exit_code"] == 3


def test_corruption_besides_the_injected_lines_is_corruption(
    machine: Machine, tmp_path: Path
) -> None:
    """inject_into an arm that also corrupts by itself: the detector found every injected
    line, and the one more is the arm's own corruption."""
    machine.faults = {"cached": {LOST_LINE}}
    got, recs = engine(machine, tmp_path, ("cached",), inject_into="cached")
    injected = inject_record(recs)
    assert len(injected) == 4 and (1, LOST_AT) not in injected  # the seed's targets miss it
    assert got["cached"].verdict == "corrupted" and counts(got["cached"].note) == [1, 4]
    assert got["cached"].corrupted == injected | {(1, LOST_AT)}
    assert summary(recs)["exit_code"] == 1


def test_injected_lines_that_do_not_read_stale_break_the_detector(
    machine: Machine, tmp_path: Path
) -> None:
    machine.faults = {"inject": {INJECT_GARBAGE}}
    got, recs = engine(machine, tmp_path, ("inject",))
    assert got["inject"].corrupted == inject_record(recs)  # found, but as the wrong class
    assert got["inject"].verdict == "broken"
    assert counts(got["inject"].note) == [0, 0, 4]  # 4 misread, nothing missed or extra
    checks = [r for r in recs if r["type"] == "check"]
    assert sum(c["stale"] for c in checks) == 0 and sum(c["bad_lines"] for c in checks) == 4


def test_broken_controls_outrank_corruption(machine: Machine, tmp_path: Path) -> None:
    machine.faults = {"cached": {LOST_WRITE}, "inject": {INJECT_ASKEW}}
    got, recs = engine(machine, tmp_path, ("cached", "positive", "inject"))
    verdicts = {a: r.verdict for a, r in got.items()}
    assert verdicts == {"cached": "corrupted", "positive": "did-not-fire", "inject": "broken"}
    assert summary(recs)["exit_code"] == 3 == records.exit_code(verdicts.values())


# --- The CLI: run and compare on the Machine, report on hand-written files ---

QUICK = ["--buffers", "2", "--order", "0", "--duration", "0", "--inject-lines", "4"]


def cli_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *argv: str
            ) -> tuple[int, dict[str, dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """`pagebuf ARGV --json`: its exit code, its rows by arm, the records it wrote."""
    out = tmp_path / "cli.jsonl"
    code = cli.main([*argv, *QUICK, "--output", str(out), "--json"])
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    return code, rows, list(read_records(out))


@pytest.mark.parametrize(
    ("faults", "code", "verdicts"),
    [
        ({}, 0, ("clean", "did-not-fire", "injected-detected")),
        ({"cached": {LOST_LINE}}, 1, ("corrupted", "did-not-fire", "injected-detected")),
        ({"positive": {STALE_CLEAN}}, 0, ("clean", "fired", "injected-detected")),
        ({"inject": {INJECT_ASKEW}}, 3, ("clean", "did-not-fire", "broken")),
        ({"cached": {LOST_WRITE}, "inject": {INJECT_GARBAGE}}, 3,
         ("corrupted", "did-not-fire", "broken")),
    ],
)  # fmt: skip
def test_pagebuf_run_exits_with_what_the_run_found(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    faults: dict[str, set[str]], code: int, verdicts: tuple[str, ...],
) -> None:  # fmt: skip
    machine.faults = faults
    got, rows, recs = cli_run(tmp_path, capsys, "run", "--mode", "cached")
    assert got == code
    assert tuple(r["verdict"] for r in rows.values()) == verdicts
    assert list(rows) == ["cached", "positive", "inject"]
    assert summary(recs)["exit_code"] == code


def test_pagebuf_compare_says_what_a_failing_machine_showed(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference note's bug on a machine where the positive control fires: cached
    and single-cpu corrupt, dma and flush stay clean."""
    machine.faults = {"cached": {LOST_LINE}, "single-cpu": {LOST_LINE},
                      "positive": {STALE_CLEAN}}  # fmt: skip
    out = tmp_path / "cmp.jsonl"
    assert cli.main(["compare", *QUICK, "--output", str(out)]) == 1
    ending = capsys.readouterr().out.split("\n\n")[1].splitlines()
    assert ending[:4] == ["corrupted: cached, single-cpu", "clean: dma, flush",
                          "positive control: fired",
                          "detector: found exactly the injected lines (inject)"]  # fmt: skip
    assert ending[4].startswith("=> the dma arm stayed clean while cached and single-cpu "
                                "corrupted: ")  # fmt: skip
    last = summary(list(read_records(out)))
    assert last["exit_code"] == 1 and last["recommendation"].splitlines() == ending
    assert last["verdicts"] == {"cached": "corrupted", "dma": "clean", "single-cpu": "corrupted",
                                "flush": "clean", "positive": "fired",
                                "inject": "injected-detected"}  # fmt: skip


def test_pagebuf_compare_with_a_broken_detector_trusts_nothing(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    machine.faults = {"cached": {LOST_LINE}, "inject": {INJECT_ASKEW}}
    out = tmp_path / "cmp.jsonl"
    assert cli.main(["compare", *QUICK, "--output", str(out)]) == 3
    ending = capsys.readouterr().out.split("\n\n")[1].splitlines()
    assert ending[0] == "corrupted: cached" and ending[2].startswith("broken: inject (")
    assert ending[-1].startswith("=> the detector did not find exactly the injected lines: "
                                 "no verdict of this run can be trusted")  # fmt: skip
    assert summary(list(read_records(out)))["exit_code"] == 3


def hand_written(path: Path, verdicts: dict[str, str]) -> Path:
    """A finished run's records as a person would write them: a header, one check and an
    arm summary per arm; an arm that corrupted lists one stale line."""
    recs: list[dict[str, Any]] = [{"type": "header", "params": {"arms": list(verdicts)}}]
    for arm, verdict in verdicts.items():
        bad = [[0, "stale"]] if verdict in ("corrupted", "fired", "broken") else []
        recs.append({"type": "check", "arm": arm, "t": 0.0, "buffer": 1, "bytes": PAGE,
                     "lines_checked": LINES, "bad_lines": len(bad), "bad": bad,
                     "seconds": 0.001})  # fmt: skip
    recs += [{"type": "arm_summary", "arm": a, "verdict": v, "note": ""}
             for a, v in verdicts.items()]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


REPORTS = [
    ({"cached": "clean", "positive": "did-not-fire", "inject": "injected-detected"}, 0),
    ({"cached": "clean", "positive": "fired", "inject": "skipped"}, 0),
    ({"cached": "corrupted", "positive": "fired", "inject": "injected-detected"}, 1),
    ({"cached": "clean", "positive": "did-not-fire", "inject": "broken"}, 3),
    ({"cached": "corrupted", "positive": "fired", "inject": "broken"}, 3),
]


@pytest.mark.parametrize(("verdicts", "code"), REPORTS)
def test_pagebuf_report_exits_with_the_verdicts_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verdicts: dict[str, str], code: int
) -> None:
    path = hand_written(tmp_path / "run.jsonl", verdicts)
    assert cli.main(["report", str(path)]) == code
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[1:4]] == list(verdicts)
    assert [line.split()[-1] for line in table[1:4]] == list(verdicts.values())
    assert cli.main(["report", str(path), "--json"]) == code
    rows = json.loads(capsys.readouterr().out)
    assert {r["arm"]: r["verdict"] for r in rows} == verdicts


OVERALLS = [
    # verdicts of the file's arms -> overall verdict, a piece of its reason, exit, --strict
    ({"cached": "clean", "positive": "fired", "inject": "injected-detected"},
     "PASS", "the controls showed", 0, 0),
    ({"cached": "clean", "positive": "did-not-fire", "inject": "injected-detected"},
     "INCONCLUSIVE", "the positive control did not fire", 0, 10),
    ({"cached": "clean", "positive": "fired", "inject": "skipped"},
     "INCONCLUSIVE", "inject was skipped", 0, 10),
    ({"cached": "clean"}, "INCONCLUSIVE", "no positive control ran", 0, 10),
    ({"cached": "clean", "positive": "fired", "inject": "incomplete"},
     "INCONCLUSIVE", "inject was cut off", 0, 10),
    ({"cached": "corrupted", "positive": "did-not-fire", "inject": "skipped"},
     "FAIL", "corruption in cached", 1, 1),
    ({"cached": "clean", "positive": "fired", "inject": "broken"},
     "BROKEN", "injection check in inject", 3, 3),
]  # fmt: skip


@pytest.mark.parametrize(("verdicts", "overall", "why", "code", "strict"), OVERALLS)
def test_one_overall_verdict_and_its_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verdicts: dict[str, str],
    overall: str, why: str, code: int, strict: int,
) -> None:  # fmt: skip
    path = hand_written(tmp_path / "run.jsonl", verdicts)
    assert cli.main(["report", str(path)]) == code
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"overall: {overall}: ") and why in last, last
    assert cli.main(["report", str(path), "--strict"]) == strict


def test_a_run_cut_before_its_last_arms_is_inconclusive(tmp_path: Path) -> None:
    path = hand_written(tmp_path / "run.jsonl", {"cached": "clean", "positive": "fired"})
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    header["params"]["arms"] = ["cached", "positive", "inject"]
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    h, rows = records.summarize(read_records(path))
    assert records.overall(h, rows) == ("INCONCLUSIVE", "inject never ran (the run was cut)")


def test_the_engine_records_the_overall_verdict(machine: Machine, tmp_path: Path) -> None:
    machine.faults = {"positive": {STALE_CLEAN}}
    _, recs = engine(machine, tmp_path, ("cached", "positive"), strict=True)
    last = summary(recs)
    assert last["overall"] == "INCONCLUSIVE" and last["exit_code"] == 10
    assert last["overall_reason"] == (
        "no injection ran, so nothing shows the detector finds corruption"
    )


def test_readme_explains_every_column_verdict_and_overall() -> None:
    from pagebuf.report import COLUMNS

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for col in COLUMNS:
        assert f"| `{col}` |" in readme, col
    for word, meaning in records.VERDICTS.items():
        assert f"| `{word}` | {meaning} |" in readme, word
    for word in records.OVERALL:
        assert f"| `{word}` |" in readme, word


def test_the_exit_code_reaches_the_shell(tmp_path: Path) -> None:
    """As a process, not only as main()'s return value."""
    for verdicts, code in (REPORTS[2], REPORTS[3]):
        path = hand_written(tmp_path / f"{code}.jsonl", verdicts)
        proc = subprocess.run([sys.executable, "-m", "pagebuf", "report", str(path)],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == code, proc.stderr
        assert proc.stderr == ""


# --- compare-views: the kernel's view and the user's, page by page ---


@pytest.fixture
def views(machine: Machine) -> Buffer:
    """A 4-page DMA buffer the kernel wrote, as the user's view still shows."""
    dev = FakeDevice(machine)
    buf = dev.alloc(2, dma=True)
    data = bytes(range(256)) * (buf.size // 256)
    dev.kwrite(buf.id, 0, data)
    return buf


def test_compare_views_exits_1_and_names_the_pages_that_differ(
    machine: Machine, views: Buffer, capsys: pytest.CaptureFixture[str]
) -> None:
    user = machine.memory[views.phys_addr]
    user[2 * PAGE + 3 * LINE : 2 * PAGE + 4 * LINE] = bytes(LINE)  # a line the kernel lacks
    kernel = machine.kernel[views.id]
    assert cli.main(["compare-views", str(views.id), "--json"]) == 1
    obj = json.loads(capsys.readouterr().out)
    assert (obj["buffer"], obj["differing_pages"]) == (views.id, 1)
    assert [(p["page"], p["phys_addr"], p["same"]) for p in obj["pages"]] == [
        (i, views.phys_addr + i * PAGE, i != 2) for i in range(4)]  # fmt: skip
    for i, p in enumerate(obj["pages"]):
        assert p["user_crc32"] == zlib.crc32(user[i * PAGE : (i + 1) * PAGE])
        assert p["kernel_crc32"] == zlib.crc32(kernel[i * PAGE : (i + 1) * PAGE])
    assert cli.main(["compare-views", str(views.id)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].split()[0] == "2" and out[1].split()[-1] == "NO"
    assert out[2] == f"buffer {views.id}: 4 pages, 1 differ between the views"
    assert cli.main(["compare-views", str(views.id), "--all"]) == 1
    rows = capsys.readouterr().out.splitlines()[1:-1]
    assert [r.split()[-1] for r in rows] == ["yes", "yes", "NO", "yes"]


def test_compare_views_exits_0_when_the_views_agree(
    machine: Machine, views: Buffer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["compare-views", str(views.id), "--sync", "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["differing_pages"] == 0 and all(p["same"] for p in obj["pages"])
    assert machine.calls[-1] == ("sync", views.id, uapi.SYNC_FOR_CPU)
    assert cli.main(["compare-views", str(views.id)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"buffer {views.id}: 4 pages, 0 differ between the views"
    )
