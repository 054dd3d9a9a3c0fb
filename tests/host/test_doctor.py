"""doctor's reading of kernel config, CPU flags and architecture (the probes that need
the module run in tests/vm/test_doctor.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from pagebuf import doctor


def test_parse_kconfig() -> None:
    cfg = doctor.parse_kconfig(
        'CONFIG_DEVMEM=y\n# CONFIG_STRICT_DEVMEM is not set\nCONFIG_X="a=b"\n# comment\n'
    )
    assert cfg == {"CONFIG_DEVMEM": "y", "CONFIG_STRICT_DEVMEM": "n", "CONFIG_X": '"a=b"'}


def test_read_kconfig_first_readable_wins(tmp_path: Path) -> None:
    gz = tmp_path / "config.gz"
    gz.write_bytes(gzip.compress(b"CONFIG_STRICT_DEVMEM=y\n"))
    plain = tmp_path / "config"
    plain.write_text("# CONFIG_STRICT_DEVMEM is not set\n")
    missing = tmp_path / "missing"
    assert doctor.read_kconfig([missing, gz, plain]) == ({"CONFIG_STRICT_DEVMEM": "y"}, str(gz))
    assert doctor.read_kconfig([missing, plain]) == ({"CONFIG_STRICT_DEVMEM": "n"}, str(plain))
    assert doctor.read_kconfig([missing]) == ({}, None)


def test_kconfig_paths_end_with_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEBUF_KCONFIG", "/x/.config")
    paths = doctor.kconfig_paths("6.1.0-1-amd64")
    assert paths[1] == Path("/boot/config-6.1.0-1-amd64") and paths[-1] == Path("/x/.config")


def verdicts(report: doctor.Report) -> dict[str, str]:
    return {f.name: f.verdict for f in report.findings}


def test_strict_devmem_is_a_warning_that_names_the_way_out() -> None:
    r = doctor.Report()
    doctor.check_config(r, {"CONFIG_DEVMEM": "y", "CONFIG_STRICT_DEVMEM": "y"}, "/boot/x")
    f = r.get("CONFIG_STRICT_DEVMEM")
    assert f is not None and f.verdict == "warn" and "/dev/pagebuf" in f.detail
    r = doctor.Report()
    doctor.check_config(r, {}, None)
    assert verdicts(r) == {"kernel config": "warn"}


@pytest.mark.parametrize(
    ("arch", "flags", "cmdline", "expect"),
    [
        ("x86_64", {"pat", "ss"}, "ro quiet", {"x86 PAT": "info", "self-snoop": "ok"}),
        ("x86_64", {"pat"}, "nopat", {"x86 PAT": "info", "self-snoop": "risk"}),
        ("aarch64", set(), "", {"O_SYNC mapping of RAM": "risk"}),
        ("riscv64", set(), "", {"O_SYNC mapping of RAM": "warn"}),
    ],
)
def test_arch_verdicts(arch: str, flags: set[str], cmdline: str, expect: dict[str, str]) -> None:
    r = doctor.Report()
    doctor.check_arch(r, arch, flags, cmdline)
    got = verdicts(r)
    for name, verdict in expect.items():
        assert got[name] == verdict
    pat = r.get("x86 PAT")
    if pat is not None:
        assert pat.value == ("off" if "nopat" in cmdline else "on")


def test_summary_names_the_case() -> None:
    r = doctor.Report()
    r.add("O_SYNC mapping of RAM", "risk", "Normal non-cacheable")
    assert "can occur" in doctor.summary(r)
    r.add("virtual machine", "warn", "yes")
    assert "only injected faults" in doctor.summary(r)
    assert "coherent" in doctor.summary(doctor.Report())


def test_cpu_flags() -> None:
    assert doctor.cpu_flags("processor : 0\nflags\t\t: fpu pat ss\n") == {"fpu", "pat", "ss"}
    assert doctor.cpu_flags("Features\t: fp asimd\n") == {"fp", "asimd"}
