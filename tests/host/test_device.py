"""What `Device` makes of the module's answers: version 3's fields and feature bits,
and the one-line reasons for EPERM, EBADF and E2BIG. The ioctls are faked here (an
errno or a filled struct per request); the module itself is tested in tests/vm."""

from __future__ import annotations

import ctypes
import errno as E
from collections.abc import Callable

import pytest

from pagebuf import cli, device, uapi
from pagebuf.device import Device, ModuleInfo
from pagebuf.errors import LimitError, PagebufError, PermissionDeniedError

BOUNCED_X86 = uapi.FEAT_DMA_BOUNCE | uapi.FEAT_X86_PAT


def info_struct(api: int = 3, features: int = BOUNCED_X86) -> uapi.PagebufInfo:
    return uapi.PagebufInfo(api_version=api, features=features, page_size=4096, max_order=10,
                            max_pages=32768, pages_in_use=3, nr_buffers=1,
                            dma_mask=2**64 - 1, dma_max_size=(256 << 10) if api >= 3 else 0,
                            max_bytes=(128 << 20) if api >= 3 else 0,
                            bytes_in_use=12288 if api >= 3 else 0)  # fmt: skip


Answer = Callable[[ctypes.Structure], int]  # fills the struct; returns 0 or an errno


def fake_device(monkeypatch: pytest.MonkeyPatch, answers: dict[int, Answer]) -> Device:
    def ioctl(fd: int, request: int, arg: ctypes.Structure, mutate: bool = True) -> int:
        code = answers[request](arg)
        if code:
            raise OSError(code, "fake")
        return 0

    def get_info(arg: ctypes.Structure) -> int:
        src = info_struct()
        ctypes.memmove(ctypes.addressof(arg), ctypes.addressof(src), ctypes.sizeof(src))
        return 0

    monkeypatch.setattr(device.fcntl, "ioctl", ioctl)
    answers.setdefault(uapi.IOC_GET_INFO, get_info)
    dev = Device.__new__(Device)
    dev._fd = 1000
    return dev


def test_version_3_fields_and_feature_bits() -> None:
    info = ModuleInfo.from_struct(info_struct())
    assert (info.dma_max_size, info.max_bytes, info.bytes_in_use) == (262144, 128 << 20, 12288)
    assert info.dma_bounce and info.x86_pat and info.uncached_refused
    assert not (info.pat_alias or info.wc_is_uc)
    assert info.dma_refusal(6) is None and "order 7 is 524288 bytes" in str(info.dma_refusal(7))
    d = info.to_dict()
    assert d["dma_max_size"] == 262144 and d["max_bytes"] == 128 << 20
    assert (d["dma_bounce"], d["x86_pat"], d["pat_alias"], d["wc_is_uc"]) == (
        True, True, False, False)  # fmt: skip
    notes = " ".join(info.notes())
    assert "load it with x86_pat_alias=1" in notes and "bounced through swiotlb" in notes


def test_an_older_module_reports_bytes_from_pages_and_no_dma_limit() -> None:
    info = ModuleInfo.from_struct(info_struct(api=2, features=uapi.FEAT_WC_IS_UC))
    assert (info.max_bytes, info.bytes_in_use) == (32768 * 4096, 3 * 4096)
    assert info.dma_limit is None and info.dma_refusal(10) is None
    assert info.notes() == ["booted nopat: write-combining maps (--via mmap-wc) are UC- here, "
                            "the same as mmap-uc"]  # fmt: skip
    unlimited = ModuleInfo(3, 0, 4096, 10, 1, 0, 0, 0, 2**64 - 1)
    assert unlimited.dma_limit is None and unlimited.to_dict()["dma_max_size"] is None


def test_bounced_buffers_say_so() -> None:
    s = uapi.PagebufBuffer(id=4, order=0, flags=uapi.BUF_DMA | uapi.BUF_BOUNCED,
                           phys_addr=0x5000, dma_addr=0x7F000000, size=4096)  # fmt: skip
    buf = device.Buffer.from_struct(s)
    assert buf.bounced and buf.to_dict()["bounced"] is True
    assert buf.to_dict()["dma_addr_hex"] == "0x7f000000"


def test_dma_alloc_above_dma_max_size_says_by_how_much(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = fake_device(monkeypatch, {uapi.IOC_ALLOC: lambda arg: E.E2BIG})
    with pytest.raises(LimitError) as err:
        dev.alloc(8, dma=True)
    assert err.value.errno == E.E2BIG and cli.exit_code_of(err.value) == 7
    assert err.value.message == (
        "alloc order 8: order 8 is 1048576 bytes, above the largest DMA mapping here "
        "(262144 bytes: swiotlb bounce buffering)"
    )


@pytest.mark.parametrize(
    ("call", "cmd", "message"),
    [
        (lambda d: d.free(5), uapi.IOC_FREE,
         "free buffer 5: buffer 5 belongs to another open file"),
        (lambda d: d.kread(5, 0, 64), uapi.IOC_KREAD,
         "kread buffer 5 [0x0+0x40]: buffer 5 belongs to another open file"),
        (lambda d: d.sync(5, uapi.SYNC_FOR_CPU), uapi.IOC_SYNC,
         "sync buffer 5: buffer 5 belongs to another open file"),
        (lambda d: d.inject(5, 0, b"x" * 64), uapi.IOC_INJECT,
         "inject buffer 5: the module was not loaded with inject=1"),
    ],
)  # fmt: skip
def test_eperm_on_an_open_file_names_the_buffer_or_inject(
    monkeypatch: pytest.MonkeyPatch, call: Callable[[Device], object], cmd: int, message: str
) -> None:
    dev = fake_device(monkeypatch, {cmd: lambda arg: E.EPERM})
    with pytest.raises(PermissionDeniedError) as err:
        call(dev)
    assert err.value.errno == E.EPERM and err.value.message.startswith(message)
    assert "CAP_SYS_RAWIO" not in err.value.message


def test_inject_eperm_with_inject_on_is_another_files_buffer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def get_info(arg: ctypes.Structure) -> int:
        arg.api_version, arg.features = 3, uapi.FEAT_INJECT | uapi.FEAT_FLUSH  # type: ignore[attr-defined]
        return 0

    dev = fake_device(monkeypatch, {uapi.IOC_INJECT: lambda arg: E.EPERM,
                                    uapi.IOC_GET_INFO: get_info})  # fmt: skip
    with pytest.raises(PagebufError, match="buffer 5 belongs to another open file"):
        dev.inject(5, 0, b"x")


def test_a_read_only_file_is_told_to_open_for_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = fake_device(monkeypatch, {uapi.IOC_ALLOC: lambda arg: E.EBADF})
    with pytest.raises(PermissionDeniedError, match="needs /dev/pagebuf opened for writing"):
        dev.alloc(0)


@pytest.mark.parametrize(
    ("call", "cmd", "message"),
    [
        (lambda d: d.alloc(12), uapi.IOC_ALLOC, "alloc order 12: order above the module's"),
        (lambda d: d.sync(5, uapi.SYNC_FOR_CPU), uapi.IOC_SYNC,
         "sync buffer 5: not a DMA-mapped buffer (alloc --dma)"),
        (lambda d: d.kwrite(5, 0, b"x"), uapi.IOC_KWRITE,
         "kwrite buffer 5 [0x0+0x1]: range outside the buffer"),
        (lambda d: d.set_caching(9), uapi.IOC_SET_CACHING,
         "set caching mode 9: no such caching mode"),
    ],
)  # fmt: skip
def test_einval_names_what_this_call_got_wrong(
    monkeypatch: pytest.MonkeyPatch, call: Callable[[Device], object], cmd: int, message: str
) -> None:
    """Not max_order for a SYNC of a buffer that was never DMA-mapped."""
    dev = fake_device(monkeypatch, {cmd: lambda arg: E.EINVAL})
    with pytest.raises(PagebufError) as err:
        call(dev)
    assert err.value.errno == E.EINVAL and err.value.message.startswith(message)
    assert cmd == uapi.IOC_ALLOC or "max_order" not in err.value.message


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda arg: E.ENOTTY, r"is not a pagebuf device \(it does not answer GET_INFO\)"),
        (lambda arg: 0, "interface version 0; pagebuf"),  # a struct left zero
    ],
)
def test_the_interface_version_is_checked_when_the_device_opens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, answer: Answer, message: str
) -> None:
    """Something else at the path, or a module that speaks no version this library does:
    one clear error at open, and the file is closed again."""
    from pagebuf.errors import ModuleNotLoadedError

    closed: list[int] = []
    monkeypatch.setattr(device.os, "open", lambda path, flags: 1234)
    monkeypatch.setattr(device.os, "close", closed.append)
    fake_device(monkeypatch, {uapi.IOC_GET_INFO: answer})
    with pytest.raises(ModuleNotLoadedError, match=message):
        Device("/dev/not-pagebuf")
    assert closed == [1234]
