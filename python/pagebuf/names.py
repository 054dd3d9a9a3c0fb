"""Names shared by the CLI and the engine, kept apart from numpy so that commands which
do not need it start fast (an import of numpy costs seconds in an emulated guest)."""

from __future__ import annotations

PATTERNS = ("tagged", "random", "walking-ones", "constant")
MODES = ("cached", "dma", "single-cpu", "flush")
CONTROLS = ("positive", "inject")
PRESSURES = ("none", "user", "kernel")
