"""KTAP and JUnit XML from run, compare and report (python/pagebuf/labout.py), read back by
the kernel's own KTAP parser (tools/testing/kunit/kunit_parser.py, from Debian's
linux-source-6.12) and by an XML parser, for runs the host fakes of test_verdicts.py
make clean, corrupted, injected or broken, and for a run cut off in the middle."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import test_verdicts as tv

from pagebuf import cli, experiment, records
from pagebuf.results import read_records
from pagebuf.vm.paths import cache_root

REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"  # make test: nothing may be missing
TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")  # linux-source-6.12, from make setup
KUNIT = "linux-source-6.12/tools/testing/kunit"
machine = tv.machine  # the fixture: a Machine behind /dev/pagebuf and /dev/mem


@pytest.fixture(scope="session")
def kunit() -> ModuleType:
    """kunit_parser, extracted once into the cache, keyed by the tarball."""
    if not TARBALL.is_file():
        if REQUIRE:
            pytest.fail(f"{TARBALL} missing: make setup installs linux-source-6.12")
        pytest.skip(f"the KTAP parser comes from {TARBALL} (linux-source-6.12)")
    st = TARBALL.stat()
    key = hashlib.sha256(f"{TARBALL.name}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    root = cache_root() / f"kunit-{key[:12]}"
    if not (root / KUNIT / "kunit_parser.py").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".kunit-", dir=root.parent))
        try:
            subprocess.run(["tar", "-C", str(tmp), "-xJf", str(TARBALL), f"{KUNIT}/"],
                           check=True)  # fmt: skip
            tmp.rename(root)
        except OSError:  # another run extracted it meanwhile
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    sys.path.insert(0, str(root / KUNIT))
    try:
        import kunit_parser  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return kunit_parser


def parse(kunit: ModuleType, text: str) -> Any:
    """The kernel parser's Test tree of a KTAP text, its printout kept off the terminal."""
    import kunit_printer  # type: ignore[import-not-found]

    kunit.stdout = kunit_printer.Printer(io.StringIO())
    return kunit.parse_run_tests(text.splitlines())


def ktap_cases(kunit: ModuleType, text: str) -> tuple[Any, dict[str, tuple[str, list[str]]]]:
    """The run's suite, and per arm its status name and log, from a well-formed KTAP."""
    main = parse(kunit, text)
    assert main.counts.errors == 0, text
    (suite,) = main.subtests
    cases = {t.name: (t.status.name, t.log) for t in suite.subtests}
    assert suite.expected_count == len(suite.subtests) == len(cases)
    return suite, cases


def junit_cases(text: str) -> tuple[dict[str, str], dict[str, tuple[str | None, ET.Element]]]:
    """The testsuite's properties and, per testcase, its result element's tag (None when
    it passed) and the element, after checking the structure JUnit consumers expect."""
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    (ts,) = root
    assert ts.tag == "testsuite" and ts.get("name", "").startswith("pagebuf-")
    props_el, *cases_el = ts
    assert props_el.tag == "properties" and all(c.tag == "testcase" for c in cases_el)
    props = {p.get("name", ""): p.get("value", "") for p in props_el}
    assert len(props) == len(props_el) and all(p.tag == "property" for p in props_el)
    cases: dict[str, tuple[str | None, ET.Element]] = {}
    for c in cases_el:
        assert c.get("classname") and float(c.get("time", "x")) >= 0
        results = [e for e in c if e.tag in ("skipped", "failure", "error")]
        assert len(results) <= 1 and [e.tag for e in c][-1] == "system-out"
        for e in results:
            assert e.get("message"), ET.tostring(c)
            assert e.tag == "skipped" or e.get("type")
        cases[c.get("name", "")] = (results[0].tag if results else None, c)
    assert len(cases) == len(cases_el)
    tags = [tag for tag, _ in cases.values()]
    want = {"tests": len(tags), "failures": tags.count("failure"), "errors": tags.count("error"),
            "skipped": tags.count("skipped")}  # fmt: skip
    for el in (root, ts):
        assert {k: int(el.get(k, "-1")) for k in want} == want
    return props, cases


ARMS = ["cached", "positive", "inject"]

SCENARIOS = {
    # name: faults, options, KTAP statuses of cached/positive/inject, the suite's, overall, exit
    "clean": ({}, [], ("SUCCESS", "SKIPPED", "SUCCESS"), "SKIPPED", "INCONCLUSIVE", 0),
    "clean, strict": ({}, ["--strict"], ("SUCCESS", "SKIPPED", "SUCCESS"), "FAILURE",
                      "INCONCLUSIVE", records.EXIT_INCONCLUSIVE),
    "pass": ({"positive": {tv.STALE_CLEAN}}, [], ("SUCCESS", "SUCCESS", "SUCCESS"), "SUCCESS",
             "PASS", 0),
    "corrupted": ({"cached": {tv.LOST_LINE}}, [], ("FAILURE", "SKIPPED", "SUCCESS"), "FAILURE",
                  "FAIL", 1),
    "injected": ({}, ["--inject-into", "cached"], ("SUCCESS", "SKIPPED", "SUCCESS"), "SKIPPED",
                 "INCONCLUSIVE", 0),
    "broken": ({"inject": {tv.INJECT_ASKEW}}, [], ("SUCCESS", "SKIPPED", "FAILURE"), "FAILURE",
               "BROKEN", 3),
}  # fmt: skip
JUNIT_TAG = {"SUCCESS": None, "SKIPPED": "skipped", "FAILURE": "failure"}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_run_writes_ktap_and_junit_with_each_arm_s_verdict_and_evidence(
    kunit: ModuleType, machine: tv.Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:  # fmt: skip
    faults, options, statuses, suite_status, verdict, code = SCENARIOS[name]
    machine.faults = faults
    out, kt, ju = tmp_path / "run.jsonl", tmp_path / "run.ktap", tmp_path / "run.xml"
    argv = ["run", "--mode", "cached", *tv.QUICK, *options, "--output", str(out)]
    assert cli.main([*argv, "--ktap", str(kt), "--junit", str(ju)]) == code
    capsys.readouterr()
    header, rows = records.summarize(read_records(out))
    assert records.overall(header, rows)[0] == verdict

    suite, cases = ktap_cases(kunit, kt.read_text())
    assert suite.name == "pagebuf-run" and suite.status.name == suite_status
    assert {a: s for a, (s, _) in cases.items()} == dict(zip(ARMS, statuses))
    logs = {a: "\n".join(log) for a, (_, log) in cases.items()}
    assert f"# overall: {verdict}: " in "\n".join(suite.log)
    row = {r.arm: r for r in rows}
    for arm in ARMS:  # the evidence: what the verdict rests on, from the records
        r = row[arm]
        assert f"# {arm}: verdict: {r.verdict} (" in logs[arm]
        assert f"# {arm}: checks: {r.checks}, {r.lines_checked} lines checked" in logs[arm]
        assert (f"# {arm}: corrupted lines: {r.corrupted_lines} (stale {r.stale}, foreign "
                f"{r.foreign}, random {r.random})") in logs[arm]  # fmt: skip
        assert f"# {arm}: access: via devmem, path /dev/mem, method mmap" in logs[arm]
    if name == "corrupted":
        assert "# cached: first corruption: 0.000 s" in logs["cached"]
    if name == "injected":
        assert "# cached: injected lines: 4" in logs["cached"]

    props, jcases = junit_cases(ju.read_text())
    assert list(jcases) == [*ARMS, "overall"]
    assert [tag for tag, _ in jcases.values()][:3] == [JUNIT_TAG[s] for s in statuses]
    assert jcases["overall"][0] == JUNIT_TAG[suite_status]
    assert props["overall"] == verdict and props["command"] == "run"
    assert props["params.arms"] == ",".join(ARMS) and props["results"] == str(out)
    assert props["strict"] == ("yes" if "--strict" in options else "no")
    if name == "corrupted":
        failure = jcases["cached"][1].find("failure")
        assert failure is not None and failure.get("type") == "corrupted"
        assert "corrupted lines: 1 (stale 1, foreign 0, random 0)" in (failure.text or "")
    if name == "broken":
        failure = jcases["inject"][1].find("failure")
        assert failure is not None and failure.get("type") == "broken"
        assert failure.get("message", "").startswith("injection not detected exactly")
    skipped = jcases["positive"][1].find("skipped")
    if skipped is not None:
        assert skipped.get("message", "").startswith("positive control did not fire: ")

    # report rebuilds the same files from the JSON Lines alone.
    again = tmp_path / "again.xml"
    strict = [o for o in options if o == "--strict"]
    assert cli.main(["report", str(out), *strict, "--junit", str(again),
                     "--ktap", str(tmp_path / "again.ktap")]) == code  # fmt: skip
    capsys.readouterr()
    assert again.read_text() == ju.read_text()
    assert (tmp_path / "again.ktap").read_text() == kt.read_text()


def test_compare_s_files_name_every_arm(
    kunit: ModuleType, machine: tv.Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    machine.faults = {"cached": {tv.LOST_LINE}, "positive": {tv.STALE_CLEAN}}
    out, kt, ju = tmp_path / "cmp.jsonl", tmp_path / "cmp.ktap", tmp_path / "cmp.xml"
    argv = ["compare", *tv.QUICK, "--output", str(out), "--ktap", str(kt), "--junit", str(ju)]
    assert cli.main(argv) == 1
    capsys.readouterr()
    suite, cases = ktap_cases(kunit, kt.read_text())
    assert suite.name == "pagebuf-compare" and suite.status.name == "FAILURE"
    assert {a: s for a, (s, _) in cases.items()} == {
        "cached": "FAILURE", "dma": "SUCCESS", "single-cpu": "SUCCESS", "flush": "SUCCESS",
        "positive": "SUCCESS", "inject": "SUCCESS"}  # fmt: skip
    props, jcases = junit_cases(ju.read_text())
    assert props["overall"] == "FAIL" and props["command"] == "compare"
    assert props["overall_reason"] == "corruption in cached"
    assert [n for n, (tag, _) in jcases.items() if tag == "failure"] == ["cached", "overall"]


def test_a_run_cut_off_leaves_valid_files_and_so_would_a_kill_9(
    kunit: ModuleType, machine: tv.Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """Ctrl-C during the positive control's checks. While it ran, the files on disk were
    already whole, with the arm then running incomplete (what a kill -9 or a panic there
    leaves); after the interrupt they hold its checks too; inject was never reached."""
    out, kt, ju = tmp_path / "run.jsonl", tmp_path / "run.ktap", tmp_path / "run.xml"
    check_loop = experiment.Experiment._check_loop
    on_disk: dict[str, str] = {}

    def interrupted(self: experiment.Experiment, arm: str, *args: Any) -> int:
        if arm == "positive":
            on_disk.update(ktap=kt.read_text(), junit=ju.read_text())
            check_loop(self, arm, *args)
            raise KeyboardInterrupt
        return check_loop(self, arm, *args)

    monkeypatch.setattr(experiment.Experiment, "_check_loop", interrupted)
    argv = ["run", "--mode", "cached", *tv.QUICK, "--output", str(out)]
    assert cli.main([*argv, "--ktap", str(kt), "--junit", str(ju)]) == 130
    capsys.readouterr()
    assert not list(tmp_path.glob(".*.tmp"))  # every file replaced whole
    want = {"cached": "SUCCESS", "positive": "FAILURE", "inject": "SKIPPED"}
    for text, checks in ((on_disk["ktap"], 0), (kt.read_text(), 2)):  # a check per buffer
        _, cases = ktap_cases(kunit, text)
        assert {a: s for a, (s, _) in cases.items()} == want
        positive = "\n".join(cases["positive"][1])
        assert "# positive: verdict: incomplete (" in positive
        assert f"# positive: checks: {checks}, " in positive
        assert "not reached: the run stopped" in "\n".join(cases["inject"][1])
    for text in (on_disk["junit"], ju.read_text()):
        _, jcases = junit_cases(text)
        assert [tag for tag, _ in jcases.values()] == [None, "error", "skipped", "skipped"]
        error = jcases["positive"][1].find("error")
        assert error is not None and error.get("type") == "incomplete"


def test_report_prints_ktap_alone_on_stdout(
    kunit: ModuleType, machine: tv.Machine, tmp_path: Path
) -> None:
    """`--ktap -`: stdout is the KTAP and nothing else (the table goes to stderr), so it
    pipes into a KTAP parser."""
    machine.faults = {"cached": {tv.LOST_LINE}}
    out = tmp_path / "run.jsonl"
    assert cli.main(["run", "--mode", "cached", *tv.QUICK, "--output", str(out)]) == 1
    proc = subprocess.run([sys.executable, "-m", "pagebuf", "report", str(out), "--ktap", "-"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("KTAP version 1\n")
    assert proc.stdout.rstrip("\n").splitlines()[-1].startswith("not ok 1 pagebuf-run # FAIL:")
    shapes = ("KTAP version 1", "#", "1..", "ok ", "not ok ")
    assert all(line.strip().startswith(shapes) for line in proc.stdout.splitlines())
    _, cases = ktap_cases(kunit, proc.stdout)
    assert cases["cached"][0] == "FAILURE"
    assert "ARM" in proc.stderr.splitlines()[0] and "overall: FAIL" in proc.stderr


def test_names_and_notes_from_a_file_cannot_forge_ktap_lines(
    kunit: ModuleType, tmp_path: Path
) -> None:
    """A hand-edited file: names and notes that hold `#`, newlines and result lines
    stay inside their own test case."""
    from pagebuf import labout

    arms = ["a # SKIP\nnot ok 9 forged", "b\n1..7"]
    recs: list[dict[str, Any]] = [{"type": "header", "params": {"arms": arms}}]
    recs += [{"type": "arm_summary", "arm": a, "verdict": v, "note": "x\nok 3 y # SKIP z"}
             for a, v in zip(arms, ("corrupted", "skipped"))]  # fmt: skip
    text = labout.ktap(labout.suite(recs))
    suite, cases = ktap_cases(kunit, text)
    assert list(cases.values())[0][0] == "FAILURE" and list(cases.values())[1][0] == "SKIPPED"
    assert suite.status.name == "FAILURE" and len(text.splitlines()) == len(
        [line for line in text.splitlines() if line.strip()])  # fmt: skip
    props, jcases = junit_cases(labout.junit(labout.suite(recs)))
    assert list(jcases) == [*arms, "overall"]  # XML keeps the names as they were


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--junit", "{tmp}/no/dir/x.xml"], "no such directory"),
        (["--ktap", "{out}"], "that is the run's results file"),
        (["--ktap", "{tmp}/a", "--junit", "{tmp}/a"], "two outputs name one file"),
        (["--ktap", "-", "--json"], "both print to stdout"),
    ],
)
def test_lab_outputs_are_checked_before_the_run(
    machine: tv.Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    options: list[str], message: str,
) -> None:  # fmt: skip
    out = tmp_path / "run.jsonl"
    opts = [o.format(tmp=tmp_path, out=out) for o in options]
    assert cli.main(["run", *tv.QUICK, "--output", str(out), *opts]) in (8, 9)
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and not machine.bufs  # nothing ran, nothing was written


def test_lab_output_modules_import_without_numpy() -> None:
    code = ("import sys, pagebuf.labout, pagebuf.htmlreport, pagebuf.bundle; "
            "print(' '.join(sys.modules))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "python")}
    mods = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=env).stdout.split()  # fmt: skip
    assert "pagebuf.labout" in mods and not {"numpy", "matplotlib"} & set(mods)


def test_junit_survives_text_xml_cannot_hold() -> None:
    from pagebuf import labout

    recs = [{"type": "arm_summary", "arm": "cached", "verdict": "corrupted",
             "note": "bell \x07 and <tag> & \"quotes\""}]  # fmt: skip
    props, cases = junit_cases(labout.junit(labout.suite(recs)))
    failure = cases["cached"][1].find("failure")
    assert failure is not None and failure.get("message") == 'bell \ufffd and <tag> & "quotes"'
    assert json.dumps(props)  # every property a plain string
