"""What a compare run showed and what to do about it, in plain words.

`recommend()` is a pure function over the verdict and note of each arm (the run's
`arm_summary` records, or the rows `report.summarize` rebuilds from a file) and the
machine its header's doctor findings describe. `compare` and `report` print it after
the table; `RecommendingWriter` puts it into the run's final summary record.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .names import CONTROLS, MODES
from .report import summarize
from .results import ResultWriter

CLEAN = ("clean", "injected-detected")  # injected-detected: the injected lines, nothing else
PREVENTING = 'README "Preventing it"'
BUG_REPORT = 'README "On an arm64 board"'


class ArmOutcome(Protocol):
    """What `recommend` reads of an arm; `report.ArmRow` is one."""

    arm: str
    verdict: str
    note: str


@dataclass(frozen=True)
class Machine:
    """What the run's header says about the machine it ran on."""

    vm: str | None = None  # "QEMU", another hypervisor's name, or None on bare metal
    self_snoop: bool = False  # x86 CPU that snoops its caches on uncached accesses

    @classmethod
    def from_header(cls, header: Mapping[str, Any] | None) -> Machine:
        doctor = (header or {}).get("doctor")
        findings = doctor.get("findings") if isinstance(doctor, dict) else None
        by_name = {f.get("name"): f for f in findings or () if isinstance(f, dict)}
        vm, snoop = by_name.get("virtual machine"), by_name.get("self-snoop")
        name = None if vm is None else str(vm.get("value", ""))
        if name in ("", "yes"):  # files written before doctor named the hypervisor
            name = "a hypervisor"
        return cls(vm=name, self_snoop=snoop is not None and snoop.get("verdict") == "ok")

    def blind_because(self) -> str | None:
        """Why no corruption can show up here whatever a driver does, or None."""
        if self.vm == "QEMU":
            return "emulated by QEMU, which models no caches"
        if self.vm is not None:
            return f"a virtual machine ({self.vm})"
        if self.self_snoop:
            return "x86 self-snoop keeps the aliases coherent"
        return None


@dataclass(frozen=True)
class Recommendation:
    facts: tuple[str, ...]  # which arms stayed clean, corrupted, were not tested and why
    advice: tuple[str, ...]  # what to do, most important first

    @property
    def text(self) -> str:
        return "\n".join([*self.facts, *(f"=> {a}" for a in self.advice)])


@dataclass(frozen=True)
class _Arms:
    """A run's arms sorted by outcome."""

    clean: list[str]
    corrupted: list[str]
    untested: list[tuple[str, str]]  # (arm, why)
    broken: list[tuple[str, str]]
    detected: list[str]  # arms whose injected lines were all found, and nothing else
    positive: str | None  # the positive control's verdict, if it ran at all

    @classmethod
    def of(cls, arms: Iterable[ArmOutcome], expected: Sequence[str]) -> _Arms:
        got = {a.arm: a for a in arms}
        order = [a for a in (*MODES, *CONTROLS) if a in got or a in expected]
        untested = [(a, _why_untested(got.get(a))) for a in order if _untested(got.get(a))]
        return cls(
            clean=[a for a in MODES if a in got and got[a].verdict in CLEAN],
            corrupted=[a for a in MODES if a in got and got[a].verdict == "corrupted"],
            untested=untested,
            broken=[(a, got[a].note) for a in order if a in got and got[a].verdict == "broken"],
            detected=[a for a in order if a in got and got[a].verdict == "injected-detected"],
            positive=got["positive"].verdict if "positive" in got else None,
        )

    def skipped(self, arm: str) -> bool:
        return any(a == arm for a, _ in self.untested)


def _untested(outcome: ArmOutcome | None) -> bool:
    return outcome is None or outcome.verdict in ("skipped", "incomplete")


def _why_untested(outcome: ArmOutcome | None) -> str:
    if outcome is None:
        return "the run stopped before it started"
    if outcome.verdict == "incomplete":
        return "the run stopped before it finished"
    return outcome.note or "skipped"


def recommend(
    arms: Iterable[ArmOutcome], machine: Machine, expected: Sequence[str] = ()
) -> Recommendation:
    """The plain-words ending of a compare run. `expected`: the arms the run meant to
    run (its header's params), so arms a cut-off run never reached count as untested."""
    s = _Arms.of(arms, expected)
    return Recommendation(_facts(s), tuple(_advice(s, machine)))


def _facts(s: _Arms) -> tuple[str, ...]:
    facts = [f"corrupted: {', '.join(s.corrupted)}"] if s.corrupted else []
    facts += [f"clean: {', '.join(s.clean)}"] if s.clean else []
    facts += [f"not tested: {arm} ({why})" for arm, why in s.untested]
    facts += [f"broken: {arm} ({note})" for arm, note in s.broken]
    if s.positive in ("fired", "did-not-fire"):
        facts.append(f"positive control: {s.positive.replace('-', ' ')}")
    if s.detected:
        facts.append(f"detector: found exactly the injected lines ({', '.join(s.detected)})")
    return tuple(facts)


def _advice(s: _Arms, machine: Machine) -> list[str]:
    if s.broken:
        return [
            "the detector did not find exactly the injected lines: no verdict of this run "
            f"can be trusted; send this file with a bug report ({BUG_REPORT})"
        ]
    out = _corruption_advice(s) if s.corrupted else [_clean_advice(s, machine)]
    if s.skipped("inject"):
        where = " where cache_ops is not none" if s.positive == "skipped" else ""
        out.append(
            f"load the module with inject=1{where} and run again: the inject control "
            "proves that the detector finds corruption"
        )
    if any(why.startswith("the run stopped") for _, why in s.untested):
        out.append("the run stopped early: run compare again to the end")
    return out


def _corruption_advice(s: _Arms) -> list[str]:
    bad = " and ".join(s.corrupted)
    if "dma" in s.corrupted:
        too = " too" if len(s.corrupted) > 1 or s.positive == "fired" else ""
        out = [
            f"the dma arm corrupted{too}: the DMA path is not enough here. Check the driver's "
            "syncs (dma_sync_single_for_device before another master or a non-cacheable "
            "alias writes, dma_sync_single_for_cpu before the CPU reads) and doctor's DMA "
            f"findings (DMA coherent, DMA address, swiotlb); send a bug report ({BUG_REPORT})"
        ]
    elif "dma" in s.clean:
        out = [
            f"the dma arm stayed clean while {bad} corrupted: map the pages for DMA and "
            f"sync around each access, as in {PREVENTING}"
        ]
    elif s.skipped("dma") and not dict(s.untested)["dma"].startswith("the run stopped"):
        out = [
            f"{bad} corrupted, and the dma arm could not run here (its reason is above): "
            f"test the fix where pagebuf's DMA is direct, as in {PREVENTING}"
        ]
    else:
        out = [f"{bad} corrupted, and dma was not tested: run compare to the end to see the fix"]
    if "flush" in s.clean and "cached" in s.corrupted:
        too = " too" if "dma" in s.clean else ""
        out.append(
            f"flush stayed clean{too}: the cause is the dirty lines of the kernel's "
            "cached alias, which a clean+invalidate before the write removes"
        )
    elif "flush" in s.corrupted:
        out.append(
            "flush corrupted too: something besides the kernel alias's dirty lines "
            f"writes back here; send a bug report ({BUG_REPORT})"
        )
    if "single-cpu" in s.clean and "cached" in s.corrupted:
        out.append(
            "single-cpu stayed clean: a workaround, not a fix; the cached alias's dirty "
            f"lines remain and are written back eventually ({PREVENTING})"
        )
    elif "single-cpu" in s.corrupted:
        out.append("single-cpu corrupted too: taking the other CPUs offline does not prevent it")
    return out


def _clean_advice(s: _Arms, machine: Machine) -> str:
    blind = machine.blind_because()
    if s.positive == "fired":
        return (
            "the positive control fired, so aliases can diverge here, yet no arm corrupted: "
            "no dirty line was written back within the run; run longer with --pressure "
            "kernel --busy-cpus before trusting the clean arms"
        )
    if blind is not None:
        return (
            f"this machine could not have shown the bug ({blind}): the clean arms prove "
            "nothing about a board; run this on the board"
        )
    if s.positive == "did-not-fire":
        return (
            "the positive control did not fire: this machine kept its aliases coherent in "
            "this run, so its clean arms say nothing about a board whose caches do not"
        )
    return (
        "the positive control did not run, so nothing shows that this machine could "
        "corrupt and the clean arms prove nothing; run it where the module's cache_ops "
        "is pmem or dma"
    )


def is_compare(header: Mapping[str, Any] | None) -> bool:
    """Whether a run's header says it ran every arm, as `pagebuf compare` does."""
    params = (header or {}).get("params")
    arms = params.get("arms") if isinstance(params, dict) else None
    return isinstance(arms, (list, tuple)) and set(MODES) <= set(arms)


def for_records(records: Iterable[Mapping[str, Any]]) -> Recommendation | None:
    """The recommendation of a compare run's records; None for any other run."""
    header, rows = summarize(dict(r) for r in records)
    if header is None or not is_compare(header):
        return None
    return recommend(rows, Machine.from_header(header), expected=header["params"]["arms"])


class RecommendingWriter(ResultWriter):
    """A ResultWriter that adds `recommendation` (its text) to a compare run's final
    summary record, from the header and arm summaries written before it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._kept: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind in ("header", "arm_summary"):
            self._kept.append(record)
        elif kind == "summary":
            rec = for_records(self._kept)
            if rec is not None:
                record = {**record, "recommendation": rec.text}
        super().write(record)
