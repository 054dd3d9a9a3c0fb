"""`pagebuf doctor --bundle`: what goes into a bug report's archive, and nothing more.
doctor's probes, the device, the kernel config and dmesg are stood in for (the probes
themselves are tested in tests/vm/test_doctor.py)."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest
from test_cli import FakeDevice

from pagebuf import cli, doctor
from pagebuf.errors import ModuleNotLoadedError

CONFIG = "CONFIG_DEVMEM=y\n# CONFIG_STRICT_DEVMEM is not set\n"
KERNEL_LOG = [
    "[    0.000000] Linux version 6.12.9 (debian-kernel@lists.debian.org)",
    "[    2.171432] pagebuf: loaded: api 3, cache_ops pmem",
    "[    3.004211] virtio_net virtio0 eth0: link up",
    "[   41.250001] WARNING: CPU: 1 PID: 411 at kmod/pagebuf.c:812 pagebuf_ioctl+0x3c/0x90",
]
PAGEBUF_LINES = [KERNEL_LOG[1], KERNEL_LOG[3]]
REFUSED = "dmesg: read kernel buffer failed: Operation not permitted"
PROBED: list[int] = []  # a call of doctor's probes per entry


def report() -> doctor.Report:
    r = doctor.Report()
    r.add("kernel", "info", "Linux 6.12.9")
    r.add("virtual machine", "warn", "QEMU", "emulators do not model CPU caches")
    return r


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine whose doctor findings, config, module and kernel log are known; the
    current directory is an empty one it returns."""
    PROBED.clear()
    monkeypatch.setattr(doctor, "diagnose", lambda open_device: PROBED.append(1) or report())
    config = tmp_path / "config.gz"
    config.write_bytes(gzip.compress(CONFIG.encode()))
    monkeypatch.setattr(doctor, "kconfig_paths", lambda release=None: [tmp_path / "no", config])
    monkeypatch.setattr(cli, "Device", FakeDevice)
    FakeDevice.sys_path = None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    dmesg(bindir, "printf '%s\\n' " + " ".join(f"'{line}'" for line in KERNEL_LOG))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def dmesg(bindir: Path, body: str) -> None:
    script = bindir / "dmesg"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def run_file(path: Path, mtime: int, header: bool = True) -> Path:
    first = {"type": "header", "params": {"arms": ["cached"]}} if header else {"test": "x"}
    path.write_text(json.dumps(first) + "\n")
    os.utime(path, (mtime, mtime))
    return path


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            assert m.isfile() and m.mode == 0o644, m.name
            f = tar.extractfile(m)
            assert f is not None
            out[m.name] = f.read()
    return out


def test_the_bundle_holds_what_a_report_needs(
    host: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    run_file(host / "pagebuf-run-20250101-100000.jsonl", 1_700_000_000)
    newest = run_file(host / "pagebuf-compare-20250102-100000.jsonl", 1_700_100_000)
    run_file(host / "pagebuf-stress.jsonl", 1_700_200_000, header=False)  # newer, not a run
    (host / "notes.txt").write_text("private")
    assert cli.main(["doctor", "--bundle", "report.tar.gz"]) == 0
    out = capsys.readouterr()
    assert out.out == doctor.render(report()) + "\n"  # doctor still prints its findings
    got = members(host / "report.tar.gz")
    assert sorted(got) == [f"report/{n}" for n in (
        "MANIFEST", "dmesg-pagebuf.txt", "doctor.json", "doctor.txt", "kernel-config",
        f"runs/{newest.name}", "status.json")]  # fmt: skip
    assert got["report/doctor.txt"].decode() == out.out
    assert json.loads(got["report/doctor.json"]) == json.loads(json.dumps(report().to_dict()))
    assert got["report/kernel-config"].decode() == CONFIG
    status = json.loads(got["report/status.json"])
    assert status["api_version"] == 1 and status["cache_ops"] == "unknown"
    assert got[f"report/runs/{newest.name}"] == newest.read_bytes()
    assert got["report/dmesg-pagebuf.txt"].decode().splitlines() == PAGEBUF_LINES
    manifest = got["report/MANIFEST"].decode()
    assert f"the kernel config, from {tmp_path / 'config.gz'}" in manifest
    assert "not included" not in manifest and "not included" not in out.err
    assert out.err.startswith("bundle: report.tar.gz (7 files)")


@pytest.mark.parametrize("log", ["refused", "no dmesg"])
def test_what_is_missing_is_said_and_the_rest_is_bundled(
    host: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path, log: str,
) -> None:  # fmt: skip
    """No module, no config, no run here, and dmesg refused (kernel.dmesg_restrict) or
    absent: doctor's findings are bundled all the same, and the MANIFEST says why the
    rest is not."""

    def no_device(path: object = None) -> None:
        raise ModuleNotLoadedError("pagebuf module not loaded: run `sudo insmod ...`")

    monkeypatch.setattr(cli, "Device", no_device)
    monkeypatch.setattr(doctor, "kconfig_paths", lambda release=None: [tmp_path / "no"])
    if log == "refused":
        dmesg(tmp_path / "bin", f"echo '{REFUSED}' >&2; exit 1")
    else:
        monkeypatch.setenv("PATH", str(tmp_path / "work"))
    assert cli.main(["doctor", "--json", "--bundle", "b.tgz"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == json.loads(json.dumps(report().to_dict()))
    got = members(host / "b.tgz")
    assert sorted(got) == ["b/MANIFEST", "b/doctor.json", "b/doctor.txt"]
    missing = [line for line in got["b/MANIFEST"].decode().splitlines()
               if line.startswith("not included: ")]  # fmt: skip
    assert [m.split(":")[1].strip() for m in missing] == [
        "kernel-config", "status.json", "runs/", "dmesg-pagebuf.txt"]  # fmt: skip
    assert "pagebuf module not loaded" in missing[1] and str(host) in missing[2]
    assert (REFUSED if log == "refused" else "dmesg did not run") in missing[3]
    assert [f"bundle: {m}" for m in missing] == out.err.splitlines()[1:]


def test_named_runs_are_bundled_and_only_runs(
    host: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = run_file(tmp_path / "a.jsonl", 1_700_000_000)
    b = run_file(tmp_path / "b.jsonl", 1_600_000_000)
    run_file(host / "pagebuf-run-newer.jsonl", 1_800_000_000)  # not asked for
    assert cli.main(["doctor", "--bundle", "x.tar.gz", "--run", str(a), "--run", str(b)]) == 0
    names = sorted(members(host / "x.tar.gz"))
    assert [n for n in names if n.startswith("x/runs/")] == ["x/runs/a.jsonl", "x/runs/b.jsonl"]
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    capsys.readouterr()
    assert cli.main(["doctor", "--bundle", "y.tar.gz", "--run", str(secret)]) == 8
    assert "not a pagebuf run's JSON Lines" in capsys.readouterr().err
    assert not (host / "y.tar.gz").exists()


def test_an_existing_bundle_is_never_overwritten_nor_run_without_one(
    host: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (host / "old.tar.gz").write_bytes(b"precious")
    assert cli.main(["doctor", "--bundle", "old.tar.gz"]) == 9
    assert (host / "old.tar.gz").read_bytes() == b"precious"
    assert cli.main(["doctor", "--run", "x.jsonl"]) == 8
    err = capsys.readouterr().err.splitlines()
    assert "already exists" in err[0] and "--run names the runs of a --bundle" in err[1]
    assert PROBED == []  # refused before any probe
