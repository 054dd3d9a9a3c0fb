"""Boot a real kernel under QEMU with the pagebuf module loaded and run a command in it.

The host root filesystem is shared with the guest (virtme-ng), so the guest runs the
same Python, the same package and the same tests as the host; only the kernel differs.
"""

from __future__ import annotations

from .errors import VmError
from .kernels import GuestKernel, resolve_kernel
from .modbuild import build_module
from .runner import VmConfig, run_in_vm, vng_command

__all__ = [
    "GuestKernel",
    "VmConfig",
    "VmError",
    "build_module",
    "resolve_kernel",
    "run_in_vm",
    "vng_command",
]
