"""`python -m pagebuf.vm`: what `make vm` runs."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
