"""`python -m pagebuf` is the `pagebuf` command."""

from __future__ import annotations

import sys

from .entry import main

sys.exit(main())
