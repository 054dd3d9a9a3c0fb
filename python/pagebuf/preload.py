"""Import the pattern and verify code (numpy: seconds in an emulated guest) in a thread,
so that it overlaps what a run does first: the rest of the imports, the device, doctor,
the header, the buffers. The first pattern or check waits on the import lock for what
is left; a failed import is left for that first use to raise."""

from __future__ import annotations

import importlib
import sys
import threading

MODULE = "pagebuf.verify"
_thread: threading.Thread | None = None


def start() -> None:
    """Start the import once; nothing if it ran or is running."""
    global _thread
    if _thread is None and MODULE not in sys.modules:
        _thread = threading.Thread(target=_import, name="pagebuf-preload", daemon=True)
        _thread.start()


def _import() -> None:
    try:
        importlib.import_module(MODULE)
    except Exception:  # noqa: BLE001,S110 - the first real use imports again and raises
        pass
