"""What a command imports before it works: numpy (seconds in an emulated guest) only
for the code that checks, and for a run or compare in a thread that starts first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PYTHON_DIR = str(Path(__file__).parents[2] / "python")


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": PYTHON_DIR})  # fmt: skip
    return set(out.stdout.split())


def test_the_cli_and_the_experiment_import_without_numpy() -> None:
    mods = imported_after("import pagebuf.cli, pagebuf.experiment, pagebuf.doctor")
    assert "pagebuf.experiment" in mods
    assert not {"numpy", "pagebuf.patterns", "pagebuf.verify", "pyudev", "pagebuf.advice"} & mods


def test_the_package_imports_its_names_on_first_use() -> None:
    assert "pagebuf.device" not in imported_after("import pagebuf")
    mods = imported_after("from pagebuf import Device, PagebufError")
    assert {"pagebuf.device", "pagebuf.errors"} <= mods


def test_a_run_starts_importing_numpy_before_the_cli() -> None:
    """`pagebuf run` (here with a bad option, so it stops at the parser) has the preload
    thread running, or done, by the time the CLI is imported; `pagebuf list` has not."""
    code = (
        "import sys, threading\n"
        "sys.argv = ['pagebuf', '{cmd}', '--no-such-option']\n"
        "from pagebuf import entry, preload\n"
        "try:\n    entry.main()\nexcept SystemExit as e:\n    assert e.code == 2\n"
        "if preload._thread is not None:\n    preload._thread.join()\n"
    )
    assert {"numpy", "pagebuf.verify"} <= imported_after(code.format(cmd="run"))
    assert {"numpy", "pagebuf.verify"} <= imported_after(code.format(cmd="compare"))
    assert "numpy" not in imported_after(code.format(cmd="list"))
