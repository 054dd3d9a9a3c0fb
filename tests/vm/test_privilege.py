"""Physical addresses are for root only: mode 0600 and CAP_SYS_RAWIO at open."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

# The Python under test lives in /root, which nobody cannot enter: the uid test uses
# the shell, the capability test stays root and drops CAP_SYS_RAWIO only.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NO_RAWIO = ["setpriv", "--bounding-set=-sys_rawio", "--inh-caps=-sys_rawio"]
OPEN = "import os\ntry:\n os.open('/dev/pagebuf', os.O_RDWR)\nexcept OSError as e:\n print(e.errno)"


def test_node_mode_is_0600(module: None) -> None:
    st = os.stat("/dev/pagebuf")
    assert stat.S_ISCHR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == 0


def run(prefix: list[str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, *argv], capture_output=True, text=True)


def test_non_root_refused_by_permissions(module: None) -> None:
    proc = run(NOBODY, "/bin/sh", "-c", "exec 3<>/dev/pagebuf")
    assert proc.returncode != 0
    assert "Permission denied" in proc.stderr


def test_open_needs_cap_sys_rawio(module: None) -> None:
    assert run(NO_RAWIO, sys.executable, "-c", OPEN).stdout.strip() == "1"  # EPERM
    assert run([], sys.executable, "-c", OPEN).stdout.strip() == ""  # root with it: opens


def test_cli_explains_refusal(module: None) -> None:
    proc = run(NO_RAWIO, "pagebuf", "list")
    assert proc.returncode == 5
    assert proc.stderr.startswith("pagebuf: ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
