"""This package's version and interface version beside the loaded module's, and, in
words, what it means when the two speak different interface versions (`pagebuf status`).

The module's MODULE_VERSION is this package's __version__ (kmod/Kbuild reads it from
__init__.py), so a module built from the same sources shows the same release; its
interface version (GET_INFO's api_version) is what decides what works.
"""

from __future__ import annotations

from pathlib import Path

from . import __version__, uapi

SYS_MODULE = Path("/sys/module/pagebuf")


def describe_package() -> str:
    """`pagebuf --version`."""
    return f"pagebuf {__version__} (module interface version {uapi.API_VERSION})"


def module_version(sys_module: Path | None = None) -> str | None:
    """The loaded module's MODULE_VERSION (its sysfs `version`); None when it has none
    (a module built before it had one) or is not loaded."""
    try:
        return ((sys_module or SYS_MODULE) / "version").read_text().strip() or None
    except OSError:
        return None


def api_mismatch(module_api: int, package_api: int = uapi.API_VERSION) -> str | None:
    """One line saying that, and how, the loaded module's interface version differs
    from this package's; None when they are the same."""
    if module_api == package_api:
        return None
    head = (
        f"interface mismatch: the loaded module speaks interface version {module_api}, "
        f"this pagebuf {__version__} speaks {package_api}"
    )
    if module_api < package_api:
        return (
            f"{head}: what came after version {module_api} is missing; build and load the "
            "module from this release's sources (make && sudo make install, or DKMS)"
        )
    return (
        f"{head}: what the module added after version {package_api} is unused; upgrade "
        "this package to the module's release"
    )
