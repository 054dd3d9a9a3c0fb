"""The loaded module is the release of this package (its MODULE_VERSION comes from
python/pagebuf/__init__.py through kmod/Kbuild) and speaks its interface version, so
`pagebuf status` shows both releases and no mismatch line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from conftest import KO

import pagebuf
from pagebuf import uapi


def test_the_loaded_module_is_this_release() -> None:
    assert Path("/sys/module/pagebuf/version").read_text().strip() == pagebuf.__version__
    info = subprocess.run(["modinfo", "-F", "version", KO], capture_output=True, text=True)
    assert info.stdout.strip() == pagebuf.__version__


def test_status_shows_both_releases_and_no_mismatch() -> None:
    proc = subprocess.run(["pagebuf", "status", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["module_version"] == status["package"] == pagebuf.__version__
    assert status["api_version"] == uapi.API_VERSION and status["api_mismatch"] is None
