/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * pagebuf: physical page buffers handed to userspace.
 *
 * This header is the whole ABI of /dev/pagebuf. Every struct is naturally
 * aligned with explicit padding; fields marked (in) are read by the kernel,
 * (out) are written by it. Any field that is not (in) for a given ioctl must
 * be zero on entry, as must every reserved field and unknown flag bit, or the
 * ioctl fails with EINVAL.
 *
 * The ABI grows by appending fields to a struct. The kernel takes the size
 * encoded in the caller's command: any size from the struct's first version
 * on is accepted (the kernel keeps a table of those sizes), fields a shorter
 * struct lacks read as zero, a longer struct's unknown tail must be zero
 * (EINVAL), and no more than the caller's size is written back. A size below
 * the first version's is ENOTTY. PAGEBUF_IOC_GET_INFO reports the interface
 * version and feature bits.
 *
 * Who may do what: opening /dev/pagebuf needs CAP_SYS_RAWIO. GET_INFO,
 * BUF_INFO, LIST, KREAD, KCHECKSUM and SET_CACHING work on any open file;
 * every ioctl that changes a buffer or the registry (ALLOC, FREE, KWRITE,
 * KFLUSH, INJECT, SYNC) needs the file opened for writing (EBADF otherwise),
 * as write() and a shared PROT_WRITE mmap() do. A buffer allocated with
 * PAGEBUF_BUF_FILE_OWNED is reachable only through the file that allocated
 * it, or a descriptor of that same open file (dup(), fork(), SCM_RIGHTS):
 * from any other file, mmap(), read(), write() and every ioctl naming it but
 * BUF_INFO fail with EPERM.
 */
#ifndef _UAPI_PAGEBUF_H
#define _UAPI_PAGEBUF_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define PAGEBUF_API_VERSION	4

/* struct pagebuf_buffer.flags */
#define PAGEBUF_BUF_DMA		0x1	/* dma_map_page(DMA_BIDIRECTIONAL) */
#define PAGEBUF_BUF_FILE_OWNED	0x2	/* freed when its file is closed */
#define PAGEBUF_BUF_FLAGS	(PAGEBUF_BUF_DMA | PAGEBUF_BUF_FILE_OWNED)
/*
 * (out) the DMA mapping goes through a bounce buffer (swiotlb) at dma_addr:
 * no IOMMU translates for the device and dma_addr is not phys_addr. For a
 * named dma_device with a bus offset (dma-ranges) pagebuf cannot tell the
 * two apart, and says bounced.
 */
#define PAGEBUF_BUF_BOUNCED	0x4
/*
 * (out) the dma_device went away, or its driver was unbound or bound: the
 * mapping was undone then, SYNC fails with ENODEV, the pages stay until FREE.
 */
#define PAGEBUF_BUF_DEVICE_GONE	0x8

/* struct pagebuf_buffer.dma_dir: the mapping's enum dma_data_direction */
#define PAGEBUF_DMA_BIDIRECTIONAL	0
#define PAGEBUF_DMA_TO_DEVICE		1
#define PAGEBUF_DMA_FROM_DEVICE		2

/* struct pagebuf_buffer.dma_info: what the device mapped for is (out) */
#define PAGEBUF_DEV_COHERENT	0x1  /* firmware: DMA is cache-coherent */
#define PAGEBUF_DEV_NONCOHERENT	0x2  /* firmware: it is not; neither: unknown */
#define PAGEBUF_DEV_SYNC	0x4  /* dma_need_sync(): it needs syncs */
#define PAGEBUF_DEV_IOMMU	0x8  /* the device is in an IOMMU group */
#define PAGEBUF_DEV_TRANSLATED	0x10 /* its IOMMU domain translates addresses */

/* struct pagebuf_buffer.dma_device: "bus:name", NUL-terminated, zero-padded */
#define PAGEBUF_DEV_NAME_LEN	64

/* struct pagebuf_free.flags */
#define PAGEBUF_FREE_ALL	0x1	/* every buffer this file may free */
#define PAGEBUF_FREE_FLAGS	PAGEBUF_FREE_ALL

/*
 * struct pagebuf_caching.mode: attribute of this file's later mmap()s.
 * UC is the uncached alias /dev/mem gives RAM opened O_SYNC: on arm64 that
 * is Normal non-cacheable (as phys_mem_access_prot() maps it), which takes
 * unaligned accesses and DC ZVA; elsewhere pgprot_noncached(). DEVICE is
 * pgprot_noncached() everywhere: on arm64 Device-nGnRnE, where unaligned
 * accesses and DC ZVA (memset of zero) fault; on x86 the same as UC.
 *
 * x86 with PAT on (PAGEBUF_FEAT_X86_PAT) keeps one memory type per page of
 * RAM and refuses /dev/mem any other: pagebuf maps RAM UC, WC or DEVICE
 * there (the O_SYNC default included) only when loaded with x86_pat_alias=1
 * (PAGEBUF_FEAT_PAT_ALIAS), which taints the kernel; EPERM otherwise.
 * Booted nopat (PAGEBUF_FEAT_WC_IS_UC), WC maps are UC-.
 */
#define PAGEBUF_CACHING_DEFAULT	0	/* write-back; UC if opened O_SYNC */
#define PAGEBUF_CACHING_WB	1	/* write-back, as the kernel's own alias */
#define PAGEBUF_CACHING_UC	2	/* uncached, as /dev/mem O_SYNC maps RAM */
#define PAGEBUF_CACHING_WC	3	/* write-combining (pgprot_writecombine) */
#define PAGEBUF_CACHING_DEVICE	4	/* device memory (pgprot_noncached) */

/* struct pagebuf_sync.direction */
#define PAGEBUF_SYNC_FOR_CPU	1	/* dma_sync_single_for_cpu() */
#define PAGEBUF_SYNC_FOR_DEVICE	2	/* dma_sync_single_for_device() */

/* struct pagebuf_info.features */
#define PAGEBUF_FEAT_DMA_COHERENT	0x1 /* DMA syncs do no cache maintenance */
#define PAGEBUF_FEAT_FLUSH		0x2 /* KFLUSH cleans and invalidates */
#define PAGEBUF_FEAT_INJECT		0x4 /* inject=1 and FLUSH: INJECT works */
#define PAGEBUF_FEAT_CLEAN		0x8 /* KFLUSH with PAGEBUF_KFLUSH_CLEAN */
#define PAGEBUF_FEAT_DMA_BOUNCE		0x10 /* DMA mappings are bounced (swiotlb) */
#define PAGEBUF_FEAT_X86_PAT		0x20 /* x86 with PAT: see x86_pat_alias */
#define PAGEBUF_FEAT_PAT_ALIAS		0x40 /* x86_pat_alias=1: UC/WC maps of RAM */
#define PAGEBUF_FEAT_WC_IS_UC		0x80 /* x86 without PAT: WC maps are UC- */
#define PAGEBUF_FEAT_DMA_DEVICE		0x100 /* ALLOC takes dma_device, dma_dir */

/* struct pagebuf_kaccess.flags, for KFLUSH only */
#define PAGEBUF_KFLUSH_CLEAN	0x1	/* clean only: lines stay cached */
#define PAGEBUF_KFLUSH_FLAGS	PAGEBUF_KFLUSH_CLEAN

/**
 * struct pagebuf_info - module limits and state (PAGEBUF_IOC_GET_INFO)
 * @api_version:  (out) PAGEBUF_API_VERSION of the running module
 * @features:     (out) PAGEBUF_FEAT_* bits
 * @page_size:    (out) PAGE_SIZE in bytes
 * @max_order:    (out) largest order ALLOC accepts
 * @max_pages:    (out) most pages all buffers may hold together
 * @pages_in_use: (out) pages held by buffers now
 * @nr_buffers:   (out) buffers that exist now
 * @reserved:     must be zero
 * @dma_mask:     (out) DMA mask of the device buffers are mapped for
 * @dma_max_size: (out) largest DMA mapping the device takes, in bytes
 *                (dma_max_mapping_size(); ~0 when unlimited): a larger
 *                DMA ALLOC fails with E2BIG
 * @max_bytes:    (out) most bytes all buffers may hold together
 * @bytes_in_use: (out) bytes held by buffers now
 *
 * Every field is (out): the struct must be zero on entry.
 */
struct pagebuf_info {
	__u32 api_version;
	__u32 features;
	__u32 page_size;
	__u32 max_order;
	__u64 max_pages;
	__u64 pages_in_use;
	__u32 nr_buffers;
	__u32 reserved;
	__u64 dma_mask;
	/* version 3 */
	__u64 dma_max_size;
	__u64 max_bytes;
	__u64 bytes_in_use;
};

/**
 * struct pagebuf_buffer - one buffer (ALLOC, BUF_INFO, and LIST entries)
 * @id:        (out) buffer id, never 0; (in) for BUF_INFO
 * @order:     (in) for ALLOC: log2 of the number of pages; (out) otherwise
 * @flags:     (in) for ALLOC: PAGEBUF_BUF_FLAGS requested; (out) those,
 *             PAGEBUF_BUF_BOUNCED and PAGEBUF_BUF_DEVICE_GONE
 * @reserved:  must be zero
 * @phys_addr: (out) physical address of the first page (page_to_phys)
 * @dma_addr:  (out) DMA address, valid when PAGEBUF_BUF_DMA is set
 * @size:      (out) size in bytes, PAGE_SIZE << order
 * @dma_dir:   (in) for ALLOC with PAGEBUF_BUF_DMA: PAGEBUF_DMA_*, the
 *             direction of the mapping and of every SYNC; (out)
 * @dma_info:  (out) PAGEBUF_DEV_* facts about the device mapped for
 * @dma_mask:  (out) that device's DMA mask (dma_get_mask())
 * @dma_device: (in) for ALLOC with PAGEBUF_BUF_DMA: "" maps for pagebuf's
 *             own device; "bus:name" maps for that existing device instead,
 *             as its driver would (bus "platform", "pci" or "amba"; name as
 *             in /sys/bus/<bus>/devices/). Needs CAP_SYS_ADMIN (EPERM);
 *             ENODEV if there is no such device, ENXIO if no driver is bound
 *             to it (the kernel sets a device's DMA up when one binds),
 *             EINVAL for another bus or a name that is not NUL-terminated
 *             and zero-padded, EOPNOTSUPP for a device that does no DMA (no
 *             DMA mask), EBUSY for one whose IOMMU domain the DMA API does
 *             not own (VFIO). The device is held until the buffer goes; its
 *             unbind or removal undoes the mapping (PAGEBUF_BUF_DEVICE_GONE,
 *             and dma_addr is then the address the mapping had). (out) the
 *             same.
 */
struct pagebuf_buffer {
	__u32 id;
	__u32 order;
	__u32 flags;
	__u32 reserved;
	__u64 phys_addr;
	__u64 dma_addr;
	__u64 size;
	/* version 4 */
	__u32 dma_dir;
	__u32 dma_info;
	__u64 dma_mask;
	char dma_device[PAGEBUF_DEV_NAME_LEN];
};

/**
 * struct pagebuf_free - free one buffer or all of them (PAGEBUF_IOC_FREE)
 * @id:    (in) buffer to free; must be 0 with PAGEBUF_FREE_ALL
 * @flags: (in) PAGEBUF_FREE_*
 * @count: (out) number of buffers freed
 * @reserved: must be zero
 *
 * A buffer owned by another open file cannot be freed (EPERM); FREE_ALL
 * frees module-owned buffers and those owned by the calling file. FREE
 * writes the struct back before it frees anything: if it cannot, it fails
 * with EFAULT and frees nothing. Once a buffer is freed FREE returns 0, even
 * if @count then cannot be written (another thread unmapped it meanwhile).
 */
struct pagebuf_free {
	__u32 id;
	__u32 flags;
	__u32 count;
	__u32 reserved;
};

/**
 * struct pagebuf_list - copy out the buffer registry (PAGEBUF_IOC_LIST)
 * @buffers:    (in) user pointer to an array of entries, may be 0 when
 *              @capacity is 0
 * @capacity:   (in) number of entries the array holds
 * @entry_size: (in) sizeof(struct pagebuf_buffer) as the caller knows it,
 *              from its first version's 40 bytes to PAGE_SIZE: each entry
 *              is cut or zero-extended to it
 * @count:      (out) entries written, in increasing id order
 * @total:      (out) buffers that exist; retry with a larger array if
 *              @total > @count
 */
struct pagebuf_list {
	__u64 buffers;
	__u32 capacity;
	__u32 entry_size;
	__u32 count;
	__u32 total;
};

/**
 * struct pagebuf_caching - how this file maps buffers (PAGEBUF_IOC_SET_CACHING)
 * @mode:     (in) PAGEBUF_CACHING_*
 * @reserved: must be zero
 *
 * mmap() of /dev/pagebuf takes the physical address as its offset, as
 * /dev/mem does, and maps only ranges inside one pagebuf buffer.
 */
struct pagebuf_caching {
	__u32 mode;
	__u32 reserved;
};

/**
 * struct pagebuf_kaccess - touch a buffer through the kernel's own cached
 * linear mapping (PAGEBUF_IOC_KREAD, _KWRITE, _KCHECKSUM, _KFLUSH, _INJECT)
 * @id:       (in) buffer
 * @flags:    (in) KFLUSH: PAGEBUF_KFLUSH_*; must be zero for the others
 * @offset:   (in) byte offset into the buffer
 * @length:   (in) bytes, offset + length within the buffer
 * @data:     (in) user pointer: destination for KREAD, source for KWRITE
 *            and INJECT; must be 0 for KCHECKSUM and KFLUSH
 * @checksum: (out) KCHECKSUM: CRC-32 (as zlib's crc32()) of the range
 * @reserved: must be zero
 *
 * KFLUSH cleans (writes dirty lines back to memory) and invalidates the
 * range's lines in the kernel's alias; with PAGEBUF_KFLUSH_CLEAN it only
 * cleans. EOPNOTSUPP where the module has no way to (no PAGEBUF_FEAT_FLUSH
 * or _CLEAN). INJECT is KWRITE followed by KFLUSH: it stands for a
 * write-back of stale lines, and exists only when the module is loaded with
 * inject=1 (EPERM otherwise) on a kernel where KFLUSH works (EOPNOTSUPP
 * otherwise, before anything is written).
 */
struct pagebuf_kaccess {
	__u32 id;
	__u32 flags;
	__u64 offset;
	__u64 length;
	__u64 data;
	__u32 checksum;
	__u32 reserved;
};

/**
 * struct pagebuf_sync - DMA sync calls on a DMA-mapped buffer (PAGEBUF_IOC_SYNC)
 * @id:        (in) buffer, which must have PAGEBUF_BUF_DMA (EINVAL), and
 *             a mapping still in place (ENODEV: PAGEBUF_BUF_DEVICE_GONE);
 *             the sync takes the buffer's dma_dir
 * @direction: (in) PAGEBUF_SYNC_*
 * @offset:    (in) byte offset into the buffer
 * @length:    (in) bytes; 0 means to the end of the buffer
 */
struct pagebuf_sync {
	__u32 id;
	__u32 direction;
	__u64 offset;
	__u64 length;
};

#define PAGEBUF_IOC_MAGIC	0xB8

#define PAGEBUF_IOC_GET_INFO	_IOR(PAGEBUF_IOC_MAGIC, 0x00, struct pagebuf_info)
#define PAGEBUF_IOC_ALLOC	_IOWR(PAGEBUF_IOC_MAGIC, 0x01, struct pagebuf_buffer)
#define PAGEBUF_IOC_FREE	_IOWR(PAGEBUF_IOC_MAGIC, 0x02, struct pagebuf_free)
#define PAGEBUF_IOC_BUF_INFO	_IOWR(PAGEBUF_IOC_MAGIC, 0x03, struct pagebuf_buffer)
#define PAGEBUF_IOC_LIST	_IOWR(PAGEBUF_IOC_MAGIC, 0x04, struct pagebuf_list)
#define PAGEBUF_IOC_SET_CACHING	_IOW(PAGEBUF_IOC_MAGIC, 0x05, struct pagebuf_caching)
#define PAGEBUF_IOC_KREAD	_IOWR(PAGEBUF_IOC_MAGIC, 0x06, struct pagebuf_kaccess)
#define PAGEBUF_IOC_KWRITE	_IOWR(PAGEBUF_IOC_MAGIC, 0x07, struct pagebuf_kaccess)
#define PAGEBUF_IOC_KCHECKSUM	_IOWR(PAGEBUF_IOC_MAGIC, 0x08, struct pagebuf_kaccess)
#define PAGEBUF_IOC_SYNC	_IOW(PAGEBUF_IOC_MAGIC, 0x09, struct pagebuf_sync)
#define PAGEBUF_IOC_KFLUSH	_IOWR(PAGEBUF_IOC_MAGIC, 0x0a, struct pagebuf_kaccess)
#define PAGEBUF_IOC_INJECT	_IOWR(PAGEBUF_IOC_MAGIC, 0x0b, struct pagebuf_kaccess)

#endif /* _UAPI_PAGEBUF_H */
