"""The plain-words ending of `pagebuf compare`: one test per kind of outcome, fed the
records a run writes (header with doctor's findings, one arm_summary per arm)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pagebuf import advice
from pagebuf.names import CONTROLS, MODES
from pagebuf.results import read_records

ALL_ARMS = [*MODES, *CONTROLS]
NO_INJECT = (
    "the module was not loaded with inject=1, so this run did not prove "
    "that its detector finds corruption"
)
NO_FLUSH = "this kernel gives the module no cache clean or flush (KFLUSH unsupported)"
QEMU = {"name": "virtual machine", "verdict": "warn", "value": "QEMU", "detail": "..."}
SNOOP = {"name": "self-snoop", "verdict": "ok", "value": "yes", "detail": "..."}


def compare_records(
    verdicts: dict[str, str],
    notes: dict[str, str] | None = None,
    findings: list[dict[str, str]] | None = None,
    arms: list[str] | None = None,
) -> list[dict[str, Any]]:
    header = {
        "type": "header",
        "params": {"arms": arms or ALL_ARMS},
        "doctor": {"findings": findings or [], "summary": "..."},
    }
    recs = [header]
    for arm, verdict in verdicts.items():
        note = (notes or {}).get(arm, "")
        recs.append(
            {
                "type": "arm_summary",
                "arm": arm,
                "verdict": verdict,
                "note": note,
                "corrupted_lines": 0,
                "injected_lines": 0,
            }
        )
    return recs


def arms(verdicts: str) -> dict[str, str]:
    """The verdicts of cached, dma, single-cpu, flush, positive and inject, in that order."""
    words = verdicts.split()
    assert len(words) == len(ALL_ARMS), verdicts
    return dict(zip(ALL_ARMS, words))


def recommend(*args: Any, **kw: Any) -> advice.Recommendation:
    rec = advice.for_records(compare_records(*args, **kw))
    assert rec is not None
    return rec


def test_cached_corrupted_dma_clean_says_map_for_dma() -> None:
    rec = recommend(arms("corrupted clean clean clean fired injected-detected"))
    assert rec.facts == (
        "corrupted: cached",
        "clean: dma, single-cpu, flush",
        "positive control: fired",
        "detector: found exactly the injected lines (inject)",
    )
    assert rec.advice[0] == (
        "the dma arm stayed clean while cached corrupted: map the pages for DMA and sync "
        'around each access, as in README "Preventing it"'
    )
    assert rec.advice[1].startswith("flush stayed clean too: the cause is the dirty lines")
    assert rec.advice[2].startswith("single-cpu stayed clean: a workaround, not a fix")
    assert len(rec.advice) == 3  # the detector was proven: no advice to load inject=1


def test_single_cpu_corrupting_too_is_named() -> None:
    rec = recommend(arms("corrupted clean corrupted clean fired injected-detected"))
    assert rec.facts[0] == "corrupted: cached, single-cpu"
    assert "while cached and single-cpu corrupted" in rec.advice[0]
    assert rec.advice[-1] == (
        "single-cpu corrupted too: taking the other CPUs offline does not prevent it"
    )


@pytest.mark.parametrize(
    ("findings", "why"),
    [
        ([QEMU], "emulated by QEMU, which models no caches"),
        ([SNOOP], "x86 self-snoop keeps the aliases coherent"),
        ([{**QEMU, "value": "yes"}], "a virtual machine (a hypervisor)"),  # an older header
    ],
)
def test_all_clean_where_the_positive_control_cannot_fire(
    findings: list[dict[str, str]], why: str
) -> None:
    note = "positive control did not fire: expected here (...)"
    rec = recommend(
        arms("clean clean clean clean did-not-fire skipped"),
        notes={"positive": note, "inject": NO_INJECT},
        findings=findings,
    )
    assert rec.facts == (
        "clean: cached, dma, single-cpu, flush",
        f"not tested: inject ({NO_INJECT})",
        "positive control: did not fire",
    )
    assert rec.advice[0] == (
        f"this machine could not have shown the bug ({why}): the clean arms prove nothing "
        "about a board; run this on the board"
    )
    assert rec.advice[1].startswith("load the module with inject=1 and run again")
    assert len(rec.advice) == 2


def test_all_clean_on_hardware_where_the_positive_control_fired() -> None:
    rec = recommend(arms("clean clean clean clean fired injected-detected"))
    assert rec.advice == (
        "the positive control fired, so aliases can diverge here, yet no arm corrupted: no "
        "dirty line was written back within the run; run longer with --pressure kernel "
        "--busy-cpus before trusting the clean arms",
    )


def test_positive_did_not_fire_on_bare_metal_claims_nothing() -> None:
    rec = recommend(arms("clean clean clean clean did-not-fire injected-detected"))
    assert "could not have shown" not in rec.text
    assert rec.advice == (
        "the positive control did not fire: this machine kept its aliases coherent in this "
        "run, so its clean arms say nothing about a board whose caches do not",
    )


def test_skipped_arms_are_listed_with_their_reasons() -> None:
    rec = recommend(
        arms("clean clean clean skipped skipped skipped"),
        notes={"flush": NO_FLUSH, "positive": NO_FLUSH, "inject": NO_INJECT},
    )
    assert rec.facts == (
        "clean: cached, dma, single-cpu",
        f"not tested: flush ({NO_FLUSH})",
        f"not tested: positive ({NO_FLUSH})",
        f"not tested: inject ({NO_INJECT})",
    )
    assert rec.advice[0].startswith("the positive control did not run, so nothing shows")
    assert "cache_ops is pmem or dma" in rec.advice[0]
    assert rec.advice[1].startswith("load the module with inject=1 where cache_ops is not none")


def test_dma_corrupting_too_says_the_dma_path_is_not_enough() -> None:
    rec = recommend(arms("corrupted corrupted corrupted clean fired injected-detected"))
    assert rec.facts[:2] == ("corrupted: cached, dma, single-cpu", "clean: flush")
    first = rec.advice[0]
    assert first.startswith("the dma arm corrupted too: the DMA path is not enough here")
    assert "dma_sync_single_for_device" in first and "dma_sync_single_for_cpu" in first
    assert "map the pages for DMA" not in rec.text
    assert rec.advice[1].startswith("flush stayed clean: ")  # not "too": dma did not


def test_a_broken_detector_overrides_everything() -> None:
    note = "injection not detected exactly: 2 missed, 0 extra, 0 misclassified"
    rec = recommend(arms("corrupted clean clean clean fired broken"), notes={"inject": note})
    assert f"broken: inject ({note})" in rec.facts
    assert len(rec.advice) == 1 and "no verdict of this run can be trusted" in rec.advice[0]


def test_a_cut_off_run_lists_what_it_never_reached() -> None:
    rec = recommend({"cached": "corrupted", "dma": "clean"})
    assert rec.facts == (
        "corrupted: cached",
        "clean: dma",
        "not tested: single-cpu (the run stopped before it started)",
        "not tested: flush (the run stopped before it started)",
        "not tested: positive (the run stopped before it started)",
        "not tested: inject (the run stopped before it started)",
    )
    assert rec.advice[-1] == "the run stopped early: run compare again to the end"


def test_only_compare_runs_get_one() -> None:
    run = compare_records({"cached": "corrupted"}, arms=["cached", *CONTROLS])
    assert advice.for_records(run) is None
    assert advice.for_records([]) is None


def test_the_writer_puts_it_into_the_final_summary(tmp_path: Path) -> None:
    path = tmp_path / "cmp.jsonl"
    recs = compare_records(arms("corrupted clean clean clean fired injected-detected"))
    recs[0]["params"]["arms"] = tuple(ALL_ARMS)  # as the engine writes it: asdict() of a tuple
    with advice.RecommendingWriter(path) as out:
        for r in recs:
            out.write(r)
        out.write({"type": "check", "arm": "cached", "t": 0.0})
        out.write({"type": "summary", "exit_code": 1, "verdicts": {}})
    written = list(read_records(path))
    assert [r["type"] for r in written][-2:] == ["check", "summary"]
    want = advice.for_records(recs)
    assert want is not None and written[-1]["recommendation"] == want.text
    assert "map the pages for DMA" in written[-1]["recommendation"]
    assert json.loads(path.read_text().splitlines()[0])["type"] == "header"


def test_the_readme_example_is_what_compare_prints() -> None:
    """README "On an arm64 board" shows an ending; it must not drift from the code."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## On an arm64 board") :]
    start = section.index("A run in which only `cached` corrupted")
    block = section[start:].split("```\n", 2)[1]
    rec = recommend(arms("corrupted clean clean clean fired injected-detected"))
    assert block == rec.text + "\n"


def test_dma_refused_under_bouncing_is_not_called_a_cut_off_run() -> None:
    """A bounced machine skips the dma arm with its reason (experiment.py): the ending
    names that reason and does not ask to run compare to the end."""
    from pagebuf.errors import DMA_BOUNCED

    rec = recommend(
        arms("corrupted skipped clean clean fired injected-detected"),
        notes={"dma": DMA_BOUNCED},
    )
    assert f"not tested: dma ({DMA_BOUNCED})" in rec.facts
    assert rec.advice[0].startswith(
        "cached corrupted, and the dma arm could not run here (its reason is above): "
    )
    assert "run compare to the end" not in rec.text and "stopped early" not in rec.text
