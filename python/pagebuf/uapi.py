"""Mirror of kmod/include/uapi/pagebuf.h: structs, flags and ioctl numbers.

The C header is the single source of truth; tests/host/test_uapi.py compiles a program
against it and checks every size, offset and number here.
"""

from __future__ import annotations

import ctypes

from ioctl_opt import IOR, IOW, IOWR

API_VERSION = 4

BUF_DMA = 0x1
BUF_FILE_OWNED = 0x2
BUF_FLAGS = BUF_DMA | BUF_FILE_OWNED
BUF_BOUNCED = 0x4
BUF_DEVICE_GONE = 0x8

DMA_BIDIRECTIONAL = 0
DMA_TO_DEVICE = 1
DMA_FROM_DEVICE = 2

DEV_COHERENT = 0x1
DEV_NONCOHERENT = 0x2
DEV_SYNC = 0x4
DEV_IOMMU = 0x8
DEV_TRANSLATED = 0x10

DEV_NAME_LEN = 64

FREE_ALL = 0x1
FREE_FLAGS = FREE_ALL

CACHING_DEFAULT = 0
CACHING_WB = 1
CACHING_UC = 2
CACHING_WC = 3
CACHING_DEVICE = 4

SYNC_FOR_CPU = 1
SYNC_FOR_DEVICE = 2

FEAT_DMA_COHERENT = 0x1
FEAT_FLUSH = 0x2
FEAT_INJECT = 0x4
FEAT_CLEAN = 0x8
FEAT_DMA_BOUNCE = 0x10
FEAT_X86_PAT = 0x20
FEAT_PAT_ALIAS = 0x40
FEAT_WC_IS_UC = 0x80
FEAT_DMA_DEVICE = 0x100

KFLUSH_CLEAN = 0x1
KFLUSH_FLAGS = KFLUSH_CLEAN

IOC_MAGIC = 0xB8


class PagebufInfo(ctypes.Structure):
    _fields_ = [
        ("api_version", ctypes.c_uint32),
        ("features", ctypes.c_uint32),
        ("page_size", ctypes.c_uint32),
        ("max_order", ctypes.c_uint32),
        ("max_pages", ctypes.c_uint64),
        ("pages_in_use", ctypes.c_uint64),
        ("nr_buffers", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("dma_mask", ctypes.c_uint64),
        ("dma_max_size", ctypes.c_uint64),
        ("max_bytes", ctypes.c_uint64),
        ("bytes_in_use", ctypes.c_uint64),
    ]


class PagebufBuffer(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("order", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("phys_addr", ctypes.c_uint64),
        ("dma_addr", ctypes.c_uint64),
        ("size", ctypes.c_uint64),
        ("dma_dir", ctypes.c_uint32),
        ("dma_info", ctypes.c_uint32),
        ("dma_mask", ctypes.c_uint64),
        ("dma_device", ctypes.c_char * DEV_NAME_LEN),
    ]


class PagebufFree(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class PagebufList(ctypes.Structure):
    _fields_ = [
        ("buffers", ctypes.c_uint64),
        ("capacity", ctypes.c_uint32),
        ("entry_size", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("total", ctypes.c_uint32),
    ]


class PagebufCaching(ctypes.Structure):
    _fields_ = [("mode", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class PagebufKaccess(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("data", ctypes.c_uint64),
        ("checksum", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class PagebufSync(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint32),
        ("direction", ctypes.c_uint32),
        ("offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
    ]


IOC_GET_INFO = IOR(IOC_MAGIC, 0x00, PagebufInfo)
IOC_ALLOC = IOWR(IOC_MAGIC, 0x01, PagebufBuffer)
IOC_FREE = IOWR(IOC_MAGIC, 0x02, PagebufFree)
IOC_BUF_INFO = IOWR(IOC_MAGIC, 0x03, PagebufBuffer)
IOC_LIST = IOWR(IOC_MAGIC, 0x04, PagebufList)
IOC_SET_CACHING = IOW(IOC_MAGIC, 0x05, PagebufCaching)
IOC_KREAD = IOWR(IOC_MAGIC, 0x06, PagebufKaccess)
IOC_KWRITE = IOWR(IOC_MAGIC, 0x07, PagebufKaccess)
IOC_KCHECKSUM = IOWR(IOC_MAGIC, 0x08, PagebufKaccess)
IOC_SYNC = IOW(IOC_MAGIC, 0x09, PagebufSync)
IOC_KFLUSH = IOWR(IOC_MAGIC, 0x0A, PagebufKaccess)
IOC_INJECT = IOWR(IOC_MAGIC, 0x0B, PagebufKaccess)
