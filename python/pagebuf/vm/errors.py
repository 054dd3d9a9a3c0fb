"""The one exception the VM harness raises: the host cannot boot the guest."""

from __future__ import annotations


class VmError(Exception):
    """The harness could not prepare or boot the guest (not a guest command failure)."""
