"""The ctypes mirror agrees with the C header: sizes, offsets, constants, ioctl numbers."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pagebuf import uapi

ROOT = Path(__file__).resolve().parents[2]
# `make test` sets PAGEBUF_REQUIRE_KERNELS=1 (tests/host/test_build.py): there what
# `make setup` installs is required, and its absence a failure, not a skip.
REQUIRE = os.environ.get("PAGEBUF_REQUIRE_KERNELS") == "1"
STRUCTS = {
    "pagebuf_info": uapi.PagebufInfo,
    "pagebuf_buffer": uapi.PagebufBuffer,
    "pagebuf_free": uapi.PagebufFree,
    "pagebuf_list": uapi.PagebufList,
    "pagebuf_caching": uapi.PagebufCaching,
    "pagebuf_kaccess": uapi.PagebufKaccess,
    "pagebuf_sync": uapi.PagebufSync,
}
CONSTANTS = {
    "PAGEBUF_API_VERSION": uapi.API_VERSION,
    "PAGEBUF_BUF_DMA": uapi.BUF_DMA,
    "PAGEBUF_BUF_FILE_OWNED": uapi.BUF_FILE_OWNED,
    "PAGEBUF_BUF_FLAGS": uapi.BUF_FLAGS,
    "PAGEBUF_BUF_BOUNCED": uapi.BUF_BOUNCED,
    "PAGEBUF_BUF_DEVICE_GONE": uapi.BUF_DEVICE_GONE,
    "PAGEBUF_DMA_BIDIRECTIONAL": uapi.DMA_BIDIRECTIONAL,
    "PAGEBUF_DMA_TO_DEVICE": uapi.DMA_TO_DEVICE,
    "PAGEBUF_DMA_FROM_DEVICE": uapi.DMA_FROM_DEVICE,
    "PAGEBUF_DEV_COHERENT": uapi.DEV_COHERENT,
    "PAGEBUF_DEV_NONCOHERENT": uapi.DEV_NONCOHERENT,
    "PAGEBUF_DEV_SYNC": uapi.DEV_SYNC,
    "PAGEBUF_DEV_IOMMU": uapi.DEV_IOMMU,
    "PAGEBUF_DEV_TRANSLATED": uapi.DEV_TRANSLATED,
    "PAGEBUF_DEV_NAME_LEN": uapi.DEV_NAME_LEN,
    "PAGEBUF_FREE_ALL": uapi.FREE_ALL,
    "PAGEBUF_FREE_FLAGS": uapi.FREE_FLAGS,
    "PAGEBUF_FEAT_DMA_COHERENT": uapi.FEAT_DMA_COHERENT,
    "PAGEBUF_FEAT_FLUSH": uapi.FEAT_FLUSH,
    "PAGEBUF_FEAT_INJECT": uapi.FEAT_INJECT,
    "PAGEBUF_FEAT_CLEAN": uapi.FEAT_CLEAN,
    "PAGEBUF_FEAT_DMA_BOUNCE": uapi.FEAT_DMA_BOUNCE,
    "PAGEBUF_FEAT_X86_PAT": uapi.FEAT_X86_PAT,
    "PAGEBUF_FEAT_PAT_ALIAS": uapi.FEAT_PAT_ALIAS,
    "PAGEBUF_FEAT_WC_IS_UC": uapi.FEAT_WC_IS_UC,
    "PAGEBUF_FEAT_DMA_DEVICE": uapi.FEAT_DMA_DEVICE,
    "PAGEBUF_KFLUSH_CLEAN": uapi.KFLUSH_CLEAN,
    "PAGEBUF_KFLUSH_FLAGS": uapi.KFLUSH_FLAGS,
    "PAGEBUF_CACHING_DEFAULT": uapi.CACHING_DEFAULT,
    "PAGEBUF_CACHING_WB": uapi.CACHING_WB,
    "PAGEBUF_CACHING_UC": uapi.CACHING_UC,
    "PAGEBUF_CACHING_WC": uapi.CACHING_WC,
    "PAGEBUF_CACHING_DEVICE": uapi.CACHING_DEVICE,
    "PAGEBUF_SYNC_FOR_CPU": uapi.SYNC_FOR_CPU,
    "PAGEBUF_SYNC_FOR_DEVICE": uapi.SYNC_FOR_DEVICE,
    "PAGEBUF_IOC_MAGIC": uapi.IOC_MAGIC,
    "PAGEBUF_IOC_GET_INFO": uapi.IOC_GET_INFO,
    "PAGEBUF_IOC_ALLOC": uapi.IOC_ALLOC,
    "PAGEBUF_IOC_FREE": uapi.IOC_FREE,
    "PAGEBUF_IOC_BUF_INFO": uapi.IOC_BUF_INFO,
    "PAGEBUF_IOC_LIST": uapi.IOC_LIST,
    "PAGEBUF_IOC_SET_CACHING": uapi.IOC_SET_CACHING,
    "PAGEBUF_IOC_KREAD": uapi.IOC_KREAD,
    "PAGEBUF_IOC_KWRITE": uapi.IOC_KWRITE,
    "PAGEBUF_IOC_KCHECKSUM": uapi.IOC_KCHECKSUM,
    "PAGEBUF_IOC_SYNC": uapi.IOC_SYNC,
    "PAGEBUF_IOC_KFLUSH": uapi.IOC_KFLUSH,
    "PAGEBUF_IOC_INJECT": uapi.IOC_INJECT,
}


def python_view() -> dict[str, int]:
    out = dict(CONSTANTS)
    for name, cls in STRUCTS.items():
        out[f"sizeof {name}"] = ctypes.sizeof(cls)
        out[f"alignof {name}"] = ctypes.alignment(cls)
        for field, _ in cls._fields_:
            out[f"offsetof {name}.{field}"] = getattr(cls, field).offset
            out[f"sizeof {name}.{field}"] = getattr(cls, field).size
    return out


def c_program() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "uapi/pagebuf.h"',
        "int main(void) {",
    ]

    def emit(key: str, expr: str) -> None:
        lines.append(f'  printf("%s=%llu\\n", "{key}", (unsigned long long)({expr}));')

    for name in CONSTANTS:
        emit(name, name)
    for name, cls in STRUCTS.items():
        emit(f"sizeof {name}", f"sizeof(struct {name})")
        emit(f"alignof {name}", f"_Alignof(struct {name})")
        for field, _ in cls._fields_:
            emit(f"offsetof {name}.{field}", f"offsetof(struct {name}, {field})")
            emit(f"sizeof {name}.{field}", f"sizeof(((struct {name} *)0)->{field})")
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_view(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if REQUIRE:  # make test: `make setup` installs one
            pytest.fail("no C compiler (cc or gcc) to check the header against: run `make setup`")
        pytest.skip("no C compiler to check the header against")
    tmp = tmp_path_factory.mktemp("uapi")
    (tmp / "probe.c").write_text(c_program())
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Werror", "-I", str(ROOT / "kmod" / "include"),
         "-o", str(tmp / "probe"), str(tmp / "probe.c")],
        check=True,
    )  # fmt: skip
    out = subprocess.run([str(tmp / "probe")], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.rsplit("=", 1) for line in out.splitlines())}


def test_every_size_offset_and_number_agrees(c_view: dict[str, int]) -> None:
    py = python_view()
    assert set(py) == set(c_view)
    mismatched = {k: (py[k], c_view[k]) for k in py if py[k] != c_view[k]}
    assert not mismatched, mismatched


def test_structs_have_no_implicit_padding() -> None:
    for cls in STRUCTS.values():
        assert sum(getattr(cls, f).size for f, _ in cls._fields_) == ctypes.sizeof(cls)
        assert ctypes.sizeof(cls) % 8 == 0


def test_header_declares_nothing_unmirrored() -> None:
    """A #define added to the header must be added to the mirror (and this test)."""
    text = (ROOT / "kmod" / "include" / "uapi" / "pagebuf.h").read_text()
    defined = {line.split()[1] for line in text.splitlines() if line.startswith("#define PAGEBUF_")}
    assert defined == set(CONSTANTS)
    structs = {line.split()[1] for line in text.splitlines() if line.startswith("struct ")}
    assert structs == set(STRUCTS)
