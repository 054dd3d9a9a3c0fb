"""`pagebuf run`, `compare`, `report` and `cpus restore` end to end against the module
loaded with inject=1 (QEMU models no caches: only injected corruption can appear)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import reload

from pagebuf import Device
from pagebuf.doctor import swiotlb_forced
from pagebuf.errors import DMA_BOUNCED
from pagebuf.sysinfo import cache_line_size

KERNEL = os.environ.get("PAGEBUF_KERNEL", "")
# swiotlb=force (KERNEL=custom-swiotlb): the dma arm is refused with its reason there.
BOUNCED = swiotlb_forced(Path("/proc/cmdline").read_text())
MODES = ("cached", "dma", "single-cpu", "flush")
QUICK = ["--duration", "1", "--interval", "0.5", "--buffers", "2", "--order", "2"]
CPU1 = Path("/sys/devices/system/cpu/cpu1/online")
LINE = cache_line_size()
STALE_AT = 5 * LINE


@pytest.fixture
def injectable(module: None) -> Iterator[None]:
    reload("inject=1")
    yield
    reload()


def pagebuf(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pagebuf", *argv], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rows(stdout: str) -> dict[str, dict[str, object]]:
    return {r["arm"]: r for r in json.loads(stdout)}


@pytest.mark.parametrize("mode", ["cached", "dma", "single-cpu", "flush"])
def test_each_arm_end_to_end(injectable: None, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "run.jsonl"
    proc = pagebuf("run", "--mode", mode, *QUICK, "--output", str(out), "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    got = rows(proc.stdout)
    if mode == "dma" and BOUNCED:
        assert got[mode]["verdict"] == "skipped" and got[mode]["note"] == DMA_BOUNCED
    else:
        assert got[mode]["verdict"] == "clean" and got[mode]["lines_checked"] > 0
    assert got["inject"]["verdict"] == "injected-detected"
    assert got["inject"]["corrupted_lines"] == 8 and got["inject"]["stale"] == 8
    assert got["positive"]["verdict"] == "did-not-fire"
    assert "expected here" in got["positive"]["note"]  # says why, claims no safety
    recs = records(out)
    assert recs[0]["type"] == "header" and recs[-1]["type"] == "summary"
    assert recs[0]["doctor"]["findings"]
    # QEMU models no caches: the positive control cannot fire, so no run here can pass.
    assert recs[-1]["overall"] == "INCONCLUSIVE"
    assert "the positive control did not fire" in str(recs[-1]["overall_reason"])
    if mode == "cached":
        strict = pagebuf("report", str(out), "--strict")
        assert strict.returncode == 10 and "overall: INCONCLUSIVE: " in strict.stdout
    checks = [r for r in recs if r["type"] == "check" and r["arm"] == mode]
    assert len(checks) >= (0 if mode == "dma" and BOUNCED else 2 * 2)  # two checks of two
    assert CPU1.read_text().strip() == "1"


@pytest.mark.parametrize("via", ["auto", "mmap-uc", "mmap-wc", "mmap-wb", "devmem"])
def test_injection_is_detected_exactly_in_every_arm(
    injectable: None, tmp_path: Path, via: str
) -> None:
    """In-process (a CLI call costs seconds in the guest): every mode, every path."""
    if via == "devmem" and KERNEL == "debian":
        pytest.skip("CONFIG_STRICT_DEVMEM=y: /dev/mem refuses RAM")
    from pagebuf.experiment import Experiment, RunParams
    from pagebuf.report import summarize
    from pagebuf.results import ResultWriter, read_records

    for mode in ("cached", "single-cpu", "flush") if BOUNCED else MODES:
        out = tmp_path / f"{mode}.jsonl"
        params = RunParams(arms=MODES, buffers=2, order=2, via=via, duration=0, inject_into=mode)
        with Device() as dev, ResultWriter(out) as w:
            results = {r.arm: r for r in Experiment(dev, params, w).run()}
        assert results[mode].verdict == "injected-detected", (mode, results[mode].note)
        assert len(results[mode].corrupted) == 8
        for arm, r in results.items():
            if arm == "dma" and BOUNCED:
                assert r.verdict == "skipped" and r.note == DMA_BOUNCED
            elif arm != mode:
                assert r.verdict == "clean" and not r.corrupted, (mode, arm)
        rows = {r.arm: r for r in summarize(read_records(out))[1]}
        assert rows[mode].stale == 8 and rows[mode].corrupted_lines == 8
        assert CPU1.read_text().strip() == "1"


def test_cli_compare_flags_exactly_the_injected_arm(injectable: None, tmp_path: Path) -> None:
    if BOUNCED:
        pytest.skip("swiotlb=force refuses the dma arm: test_swiotlb.py runs compare there")
    out = tmp_path / "cmp.jsonl"
    proc = pagebuf("compare", "--inject-into", "dma", *QUICK, "--duration", "0",
                   "--output", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    got = rows(proc.stdout)
    assert got["dma"]["verdict"] == "injected-detected" and got["dma"]["corrupted_lines"] == 8
    for arm in ("cached", "single-cpu", "flush"):
        assert got[arm]["verdict"] == "clean" and got[arm]["corrupted_lines"] == 0, arm
    rendered = pagebuf("report", str(out))  # plots are tested on the host: matplotlib is slow here
    assert rendered.returncode == 0
    assert [line.split()[0] for line in rendered.stdout.splitlines()[1:7]] == [
        "cached", "dma", "single-cpu", "flush", "positive", "inject"]  # fmt: skip


class FaultyDevice(Device):
    """The real module, made to go wrong where a machine with caches would, by real
    INJECTs (bytes written through the kernel's cached alias and cleaned to memory):
    `stale-sync`: dma_sync_single_for_cpu brings one line of the kernel's stale data back
    over the user's; `stale-clean`: the positive control's clean writes the kernel's
    stale lines back, as it does where aliases are not coherent; `askew`: an injection
    lands one line further on than the engine asked."""

    faults: frozenset[str] = frozenset()

    def __init__(self, path: object = None) -> None:
        super().__init__(path)  # type: ignore[arg-type]
        self.primed: dict[int, bytes] = {}  # what the kernel's alias last wrote

    def kwrite(self, buf_id: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        super().kwrite(buf_id, offset, data)
        self.primed[buf_id] = bytes(data)

    def sync(self, buf_id: int, direction: int, offset: int = 0, length: int = 0) -> None:
        from pagebuf import uapi

        super().sync(buf_id, direction, offset, length)
        if direction == uapi.SYNC_FOR_CPU and "stale-sync" in self.faults:
            super().inject(buf_id, STALE_AT, self.primed[buf_id][STALE_AT : STALE_AT + LINE])

    def kflush(self, buf_id: int, offset: int = 0, length: int | None = None, *,
               clean_only: bool = False) -> None:  # fmt: skip
        super().kflush(buf_id, offset, length, clean_only=clean_only)
        if clean_only and "stale-clean" in self.faults:
            super().inject(buf_id, 0, self.primed[buf_id])

    def inject(self, buf_id: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        if "askew" in self.faults:
            offset = (offset + LINE) % self.buffer(buf_id).size
        super().inject(buf_id, offset, data)


@pytest.mark.parametrize(
    ("mode", "faults", "code", "verdicts"),
    [
        ("dma", {"stale-sync"}, 1, ("corrupted", "did-not-fire", "injected-detected")),
        ("cached", {"stale-clean"}, 0, ("clean", "fired", "injected-detected")),
        ("cached", {"askew"}, 3, ("clean", "did-not-fire", "broken")),
    ],
)
def test_real_injections_reach_every_verdict_and_exit_code(
    injectable: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], mode: str, faults: set[str], code: int,
    verdicts: tuple[str, ...],
) -> None:  # fmt: skip
    """QEMU models no caches: without help every arm is clean and the positive control
    never fires. Corruption put where a machine would make it must come out as
    corrupted (exit 1), fired (no corruption of the run: exit 0) and broken (exit 3),
    from the real module through the CLI's own run path (in-process: its Device is the
    faulty one)."""
    from pagebuf import cli

    if mode == "dma" and BOUNCED:
        pytest.skip("swiotlb=force refuses the dma arm")
    monkeypatch.setattr(FaultyDevice, "faults", frozenset(faults))
    monkeypatch.setattr(cli, "Device", FaultyDevice)
    out = tmp_path / "run.jsonl"
    argv = ["run", "--mode", mode, "--buffers", "1", "--order", "0", "--duration", "0",
            "--inject-lines", "4", "--output", str(out), "--json"]  # fmt: skip
    assert cli.main(argv) == code
    got = rows(capsys.readouterr().out)
    assert tuple(r["verdict"] for r in got.values()) == verdicts
    assert list(got) == [mode, "positive", "inject"]
    recs = records(out)
    assert recs[-1]["type"] == "summary" and recs[-1]["exit_code"] == code
    lines = 4096 // LINE
    if "stale-sync" in faults:  # the one line, as the write-back signature: stale
        assert (got[mode]["corrupted_lines"], got[mode]["stale"]) == (1, 1)
        bad = [r["bad"] for r in recs if r["type"] == "check" and r["arm"] == mode]
        assert bad == [[[STALE_AT, "stale"]]]
    if "stale-clean" in faults:  # every line of the page
        assert (got["positive"]["corrupted_lines"], got["positive"]["stale"]) == (lines, lines)
    if "askew" in faults:  # a line's stale bytes one line on: another address's, foreign
        inject = got["inject"]
        assert (inject["corrupted_lines"], inject["stale"], inject["foreign"]) == (4, 0, 4)


def test_controls_without_inject_are_reported(module: None, tmp_path: Path) -> None:
    proc = pagebuf("run", *QUICK, "--output", str(tmp_path / "r.jsonl"), "--json")
    assert proc.returncode == 0, proc.stderr
    got = rows(proc.stdout)
    assert got["inject"]["verdict"] == "skipped" and "inject=1" in got["inject"]["note"]


def _wait_for_checks(path: Path, n: int) -> None:
    for _ in range(600):
        if path.exists() and path.read_text().count('"type":"check"') >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {n} checks in {path}")


def test_single_cpu_restores_after_sigint(injectable: None, tmp_path: Path) -> None:
    out = tmp_path / "int.jsonl"
    proc = subprocess.Popen(["pagebuf", "run", "--mode", "single-cpu", "--no-controls",
                             "--duration", "60", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for_checks(out, 2)
    assert CPU1.read_text().strip() == "0"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert CPU1.read_text().strip() == "1"
    assert pagebuf("report", str(out)).returncode == 0


def test_single_cpu_after_sigkill_then_cpus_restore(injectable: None, tmp_path: Path) -> None:
    out = tmp_path / "kill.jsonl"
    proc = subprocess.Popen(["pagebuf", "run", "--mode", "single-cpu", "--no-controls",
                             "--duration", "60", "--output", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_checks(out, 2)
    proc.kill()
    proc.wait()
    assert CPU1.read_text().strip() == "0"  # nobody restored it
    again = pagebuf("run", "--mode", "single-cpu", *QUICK, "--output", str(tmp_path / "x"))
    assert again.returncode == 9 and "pagebuf cpus restore" in again.stderr
    restored = pagebuf("cpus", "restore")
    assert restored.returncode == 0 and "cpu1" in restored.stdout
    assert CPU1.read_text().strip() == "1"
    # The file cut off by kill -9 still renders.
    rendered = pagebuf("report", str(out), "--json")
    assert rendered.returncode == 0
    assert rows(rendered.stdout)["single-cpu"]["checks"] >= 2


def eventually(pred: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def children(pid: int) -> set[int]:
    kids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.add(int(stat.parent.name))
    return kids


def _start_run(out: Path, *argv: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["pagebuf", "run", "--buffers", "2", "--order", "2", "--output",
                             str(out), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    _wait_for_checks(out, 2)
    return proc


@pytest.mark.parametrize("pressure", ["user", "kernel"])
def test_pressure_and_busy_cpus(injectable: None, tmp_path: Path, pressure: str) -> None:
    from conftest import sysfs_int

    out = tmp_path / "p.jsonl"
    proc = _start_run(out, "--duration", "4", "--interval", "0.5", "--pressure", pressure,
                      "--busy-cpus", "--json")  # fmt: skip
    # While the arm runs: a thrasher and a spinner for the one other CPU, and the kernel
    # thrasher's own scratch buffer next to the arm's two.
    kids = children(proc.pid)
    thrashing = pressure == "user" or eventually(lambda: sysfs_int("nr_buffers") == 3)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    spinners = (os.cpu_count() or 1) - 1
    assert len(kids) == 1 + spinners and thrashing, (kids, thrashing)
    got = rows(stdout)
    assert got["cached"]["verdict"] == "clean" and got["inject"]["verdict"] == "injected-detected"
    assert records(out)[0]["params"]["pressure"] == pressure


def test_kill_9_leaves_no_children_and_no_buffers(injectable: None, tmp_path: Path) -> None:
    from conftest import rmmod, sysfs_int

    out = tmp_path / "k.jsonl"
    proc = _start_run(out, "--mode", "cached", "--no-controls", "--duration", "60",
                      "--pressure", "kernel", "--busy-cpus")  # fmt: skip
    kids = children(proc.pid)
    assert len(kids) == 1 + (os.cpu_count() or 1) - 1
    assert eventually(lambda: sysfs_int("nr_buffers") == 3)
    proc.kill()
    proc.wait()
    # PR_SET_PDEATHSIG: they die with the tool (a zombie awaiting init counts as dead).
    assert eventually(lambda: not any(alive(k) for k in kids))
    assert sysfs_int("nr_buffers") == 0 and sysfs_int("pages_in_use") == 0
    rmmod()  # nothing holds /dev/pagebuf open any more
