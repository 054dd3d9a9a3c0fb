// SPDX-License-Identifier: GPL-2.0
/*
 * pagebuf: allocate physical pages with alloc_pages(), optionally map them
 * for DMA, and hand their physical and DMA addresses to userspace through
 * /dev/pagebuf, so that the cache behaviour of touching them through other
 * aliases (/dev/mem above all) can be studied.
 *
 * Opening /dev/pagebuf needs CAP_SYS_RAWIO, as /dev/mem does: physical
 * addresses are what the caller uses to reach these pages through /dev/mem.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/crc32.h>
#include <linux/dma-map-ops.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/log2.h>
#include <linux/gfp.h>
#include <linux/kref.h>
#include <linux/libnvdimm.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/string.h>
#include <linux/xarray.h>

#include "uapi/pagebuf.h"

/*
 * The largest order alloc_pages() accepts, spelt so that it holds across the
 * MAX_ORDER (exclusive before 6.4, inclusive after) and MAX_PAGE_ORDER (6.8)
 * renames.
 */
#define PAGEBUF_MAX_PAGE_ORDER	ilog2(MAX_ORDER_NR_PAGES)

static unsigned int pagebuf_max_order = 10;
module_param_named(max_order, pagebuf_max_order, uint, 0444);
MODULE_PARM_DESC(max_order, "Largest order a buffer may have (default 10)");

static unsigned long pagebuf_max_pages = 32768;
module_param_named(max_pages, pagebuf_max_pages, ulong, 0444);
MODULE_PARM_DESC(max_pages, "Most pages all buffers may hold together (default 32768)");

static bool pagebuf_inject;
module_param_named(inject, pagebuf_inject, bool, 0444);
MODULE_PARM_DESC(inject, "Debug only: enable the INJECT ioctl, which corrupts buffers on purpose");

/*
 * Cache maintenance of the kernel's linear alias of a buffer: a clean writes
 * its dirty lines back to memory, a flush cleans and then invalidates them.
 *
 * Where the architecture has the persistent-memory cache API (x86_64, and
 * arm64 with ARM64_PMEM) arch_wb_cache_pmem() cleans and
 * arch_invalidate_pmem() invalidates any range of the linear map. Elsewhere
 * the streaming DMA API on pagebuf's own device does it, if that device is
 * not DMA-coherent (arm64 makes a device no firmware describes
 * non-coherent): mapping a range DMA_TO_DEVICE cleans it, mapping and
 * unmapping it DMA_BIDIRECTIONAL cleans and then invalidates it. That holds
 * only while mappings are direct, not bounced through swiotlb, which
 * pagebuf_cmo_init() checks at load time.
 */
enum pagebuf_cmo_via {
	PAGEBUF_CMO_NONE,
	PAGEBUF_CMO_PMEM,
	PAGEBUF_CMO_DMA,
};

static const char * const pagebuf_cmo_names[] = {
	[PAGEBUF_CMO_NONE] = "none",
	[PAGEBUF_CMO_PMEM] = "pmem",
	[PAGEBUF_CMO_DMA] = "dma",
};

static char *pagebuf_cache_ops = "auto";
module_param_named(cache_ops, pagebuf_cache_ops, charp, 0444);
MODULE_PARM_DESC(cache_ops, "How to clean/invalidate the kernel's alias: auto (default), pmem, dma or none");

static enum pagebuf_cmo_via pagebuf_cmo_via;

/**
 * struct pagebuf_buf - one buffer of 2^order physically contiguous pages
 * @id:       registry index, never 0
 * @order:    log2 of the number of pages
 * @flags:    PAGEBUF_BUF_* bits
 * @pages:    first page, from alloc_pages()
 * @dma_addr: DMA address when PAGEBUF_BUF_DMA is set
 * @owner:    the file whose release frees this buffer, or NULL when the
 *            buffer belongs to the module and lives until freed or rmmod
 * @ref:      one reference for the registry, one per mapping and per
 *            ioctl in flight: the pages outlive a FREE while still mapped
 */
struct pagebuf_buf {
	struct kref ref;
	u32 id;
	unsigned int order;
	u32 flags;
	struct page *pages;
	dma_addr_t dma_addr;
	struct file *owner;
};

/* pagebuf_lock serialises every change to the registry and the counters. */
static DEFINE_MUTEX(pagebuf_lock);
static DEFINE_XARRAY_ALLOC1(pagebuf_bufs);
static u32 pagebuf_next_id;
/* Pages stay in use until the last mapping of a freed buffer goes. */
static atomic_long_t pagebuf_pages_in_use = ATOMIC_LONG_INIT(0);
static unsigned int pagebuf_nr_buffers;

/**
 * struct pagebuf_file - per-open-file state
 * @caching: PAGEBUF_CACHING_* for this file's later mmap()s
 */
struct pagebuf_file {
	u32 caching;
};

static struct miscdevice pagebuf_misc;

static struct device *pagebuf_dev(void)
{
	return pagebuf_misc.this_device;
}

/*
 * Clean (inval false) or flush (inval true) [offset, offset + len) of the
 * linear alias of the pages from @pages on, the way @via says: 0,
 * -EOPNOTSUPP without a way to, or -EIO if a DMA mapping failed or was
 * bounced (then nothing was cleaned).
 */
static int pagebuf_cmo_by(enum pagebuf_cmo_via via, struct page *pages,
			  u64 offset, size_t len, bool inval)
{
	enum dma_data_direction dir = inval ? DMA_BIDIRECTIONAL : DMA_TO_DEVICE;
	struct device *dev = pagebuf_dev();
	dma_addr_t addr;

	switch (via) {
	case PAGEBUF_CMO_PMEM:
		arch_wb_cache_pmem(page_address(pages) + offset, len);
		if (inval)
			arch_invalidate_pmem(page_address(pages) + offset, len);
		return 0;
	case PAGEBUF_CMO_DMA:
		addr = dma_map_page_attrs(dev, pages, offset, len, dir,
					  DMA_ATTR_NO_WARN);
		if (dma_mapping_error(dev, addr))
			return -EIO;
		dma_unmap_page(dev, addr, len, dir);
		return addr == page_to_phys(pages) + offset ? 0 : -EIO;
	default:
		return -EOPNOTSUPP;
	}
}

static int pagebuf_cmo(struct page *pages, u64 offset, size_t len, bool inval)
{
	return pagebuf_cmo_by(pagebuf_cmo_via, pages, offset, len, inval);
}

static bool pagebuf_cmo_dma_works(void)
{
	struct page *page;
	int ret;

	if (dev_is_dma_coherent(pagebuf_dev()))
		return false;
	page = alloc_page(GFP_KERNEL);
	if (!page)
		return false;
	ret = pagebuf_cmo_by(PAGEBUF_CMO_DMA, page, 0, PAGE_SIZE, true);
	__free_page(page);
	return !ret;
}

/* Choose how to do cache maintenance, as the cache_ops parameter asks. */
static int pagebuf_cmo_init(void)
{
	bool pmem = IS_ENABLED(CONFIG_ARCH_HAS_PMEM_API);
	int want = sysfs_match_string(pagebuf_cmo_names, pagebuf_cache_ops);

	if (!strcmp(pagebuf_cache_ops, "auto"))
		want = pmem ? PAGEBUF_CMO_PMEM : PAGEBUF_CMO_DMA;
	if (want < 0) {
		pr_err("cache_ops=%s: use auto, pmem, dma or none\n",
		       pagebuf_cache_ops);
		return -EINVAL;
	}
	if (want == PAGEBUF_CMO_PMEM && !pmem) {
		pr_err("cache_ops=pmem: this kernel has no ARCH_HAS_PMEM_API\n");
		return -EINVAL;
	}
	if (want == PAGEBUF_CMO_DMA && !pagebuf_cmo_dma_works()) {
		/* Only an explicit request is an error; auto does without. */
		if (strcmp(pagebuf_cache_ops, "auto")) {
			pr_err("cache_ops=dma: DMA here is coherent or bounced\n");
			return -EINVAL;
		}
		want = PAGEBUF_CMO_NONE;
	}
	pagebuf_cmo_via = want;
	return 0;
}

static void pagebuf_buf_describe(const struct pagebuf_buf *buf,
				 struct pagebuf_buffer *out)
{
	memset(out, 0, sizeof(*out));
	out->id = buf->id;
	out->order = buf->order;
	out->flags = buf->flags;
	out->phys_addr = page_to_phys(buf->pages);
	if (buf->flags & PAGEBUF_BUF_DMA)
		out->dma_addr = buf->dma_addr;
	out->size = PAGE_SIZE << buf->order;
}

/*
 * Buffers are split into order-0 pages, each with its own reference count,
 * so that mmap() can insert them as ordinary pages: /proc/self/pagemap then
 * shows their PFNs, which it does not for a VM_PFNMAP mapping.
 */
static struct page *pagebuf_alloc_pages(unsigned int order)
{
	/* Zeroed: the pages may have held another user's data. */
	struct page *pages = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN,
					 order);

	if (pages)
		split_page(pages, order);
	return pages;
}

static void pagebuf_free_pages(struct page *pages, unsigned int order)
{
	unsigned long i;

	for (i = 0; i < 1UL << order; i++)
		__free_page(pages + i);
}

static void pagebuf_buf_release(struct kref *ref)
{
	struct pagebuf_buf *buf = container_of(ref, struct pagebuf_buf, ref);

	if (buf->flags & PAGEBUF_BUF_DMA)
		dma_unmap_page(pagebuf_dev(), buf->dma_addr,
			       PAGE_SIZE << buf->order, DMA_BIDIRECTIONAL);
	pagebuf_free_pages(buf->pages, buf->order);
	atomic_long_sub(1UL << buf->order, &pagebuf_pages_in_use);
	kfree(buf);
}

static void pagebuf_buf_put(struct pagebuf_buf *buf)
{
	kref_put(&buf->ref, pagebuf_buf_release);
}

/* Take a buffer out of the registry; called with pagebuf_lock held. */
static void pagebuf_buf_destroy(struct pagebuf_buf *buf)
{
	xa_erase(&pagebuf_bufs, buf->id);
	pagebuf_nr_buffers--;
	pagebuf_buf_put(buf);
}

/* Look a buffer up and take a reference: the caller puts it. */
static struct pagebuf_buf *pagebuf_buf_get(u32 id)
{
	struct pagebuf_buf *buf;

	mutex_lock(&pagebuf_lock);
	buf = xa_load(&pagebuf_bufs, id);
	if (buf)
		kref_get(&buf->ref);
	mutex_unlock(&pagebuf_lock);
	return buf;
}

/* Called with pagebuf_lock held. */
static struct pagebuf_buf *pagebuf_buf_create(unsigned int order, u32 flags,
					      struct file *owner)
{
	unsigned long nr_pages = 1UL << order;
	struct pagebuf_buf *buf;
	int ret;

	if (nr_pages > pagebuf_max_pages - atomic_long_read(&pagebuf_pages_in_use))
		return ERR_PTR(-ENOMEM);

	buf = kzalloc(sizeof(*buf), GFP_KERNEL);
	if (!buf)
		return ERR_PTR(-ENOMEM);
	kref_init(&buf->ref);
	buf->order = order;
	buf->flags = flags;
	buf->owner = (flags & PAGEBUF_BUF_FILE_OWNED) ? owner : NULL;

	buf->pages = pagebuf_alloc_pages(order);
	if (!buf->pages) {
		ret = -ENOMEM;
		goto err_free_buf;
	}
	/*
	 * __GFP_ZERO zeroed the pages through the cached linear alias: push
	 * the zeroes to memory and drop the lines, or an uncached alias could
	 * read the previous owner's data, and their write-back could land later.
	 */
	ret = pagebuf_cmo(buf->pages, 0, PAGE_SIZE << order, true);
	if (ret && ret != -EOPNOTSUPP)
		goto err_free_pages;

	if (flags & PAGEBUF_BUF_DMA) {
		buf->dma_addr = dma_map_page(pagebuf_dev(), buf->pages, 0,
					     PAGE_SIZE << order,
					     DMA_BIDIRECTIONAL);
		if (dma_mapping_error(pagebuf_dev(), buf->dma_addr)) {
			ret = -EIO;
			goto err_free_pages;
		}
	}

	/* Cyclic ids: a stale id does not silently name a new buffer. */
	ret = xa_alloc_cyclic(&pagebuf_bufs, &buf->id, buf,
			      XA_LIMIT(1, U32_MAX), &pagebuf_next_id,
			      GFP_KERNEL);
	if (ret < 0)
		goto err_unmap;

	atomic_long_add(nr_pages, &pagebuf_pages_in_use);
	pagebuf_nr_buffers++;
	return buf;

err_unmap:
	if (flags & PAGEBUF_BUF_DMA)
		dma_unmap_page(pagebuf_dev(), buf->dma_addr, PAGE_SIZE << order,
			       DMA_BIDIRECTIONAL);
err_free_pages:
	pagebuf_free_pages(buf->pages, order);
err_free_buf:
	kfree(buf);
	return ERR_PTR(ret);
}

/* Called with pagebuf_lock held. */
static int pagebuf_buf_free(struct file *file, u32 id)
{
	struct pagebuf_buf *buf = xa_load(&pagebuf_bufs, id);

	if (!buf)
		return -ENOENT;
	if (buf->owner && buf->owner != file)
		return -EPERM;
	pagebuf_buf_destroy(buf);
	return 0;
}

static int pagebuf_ioctl_get_info(struct pagebuf_info *info)
{
	struct device *dev = pagebuf_dev();

	memset(info, 0, sizeof(*info));
	info->api_version = PAGEBUF_API_VERSION;
	if (dev_is_dma_coherent(dev))
		info->features |= PAGEBUF_FEAT_DMA_COHERENT;
	if (pagebuf_cmo_via != PAGEBUF_CMO_NONE) {
		info->features |= PAGEBUF_FEAT_FLUSH | PAGEBUF_FEAT_CLEAN;
		if (pagebuf_inject)
			info->features |= PAGEBUF_FEAT_INJECT;
	}
	info->page_size = PAGE_SIZE;
	info->max_order = pagebuf_max_order;
	info->max_pages = pagebuf_max_pages;
	info->dma_mask = dma_get_mask(dev);

	mutex_lock(&pagebuf_lock);
	info->pages_in_use = atomic_long_read(&pagebuf_pages_in_use);
	info->nr_buffers = pagebuf_nr_buffers;
	mutex_unlock(&pagebuf_lock);
	return 0;
}

static int pagebuf_ioctl_alloc(struct file *file, struct pagebuf_buffer *req)
{
	struct pagebuf_buf *buf;

	if (req->id || req->reserved || req->phys_addr || req->dma_addr ||
	    req->size || (req->flags & ~PAGEBUF_BUF_FLAGS) ||
	    req->order > pagebuf_max_order)
		return -EINVAL;

	mutex_lock(&pagebuf_lock);
	buf = pagebuf_buf_create(req->order, req->flags, file);
	if (!IS_ERR(buf))
		pagebuf_buf_describe(buf, req);
	mutex_unlock(&pagebuf_lock);

	return PTR_ERR_OR_ZERO(buf);
}

static int pagebuf_ioctl_free(struct file *file, struct pagebuf_free *req)
{
	struct pagebuf_buf *buf;
	unsigned long index;
	int ret = 0;

	if (req->reserved || req->count || (req->flags & ~PAGEBUF_FREE_FLAGS))
		return -EINVAL;
	if (!!(req->flags & PAGEBUF_FREE_ALL) == !!req->id)
		return -EINVAL;

	mutex_lock(&pagebuf_lock);
	if (req->flags & PAGEBUF_FREE_ALL) {
		xa_for_each(&pagebuf_bufs, index, buf) {
			if (buf->owner && buf->owner != file)
				continue;
			pagebuf_buf_destroy(buf);
			req->count++;
		}
	} else {
		ret = pagebuf_buf_free(file, req->id);
		if (!ret)
			req->count = 1;
	}
	mutex_unlock(&pagebuf_lock);
	return ret;
}

static int pagebuf_ioctl_buf_info(struct pagebuf_buffer *req)
{
	struct pagebuf_buf *buf;
	int ret = 0;

	if (!req->id || req->order || req->flags || req->reserved ||
	    req->phys_addr || req->dma_addr || req->size)
		return -EINVAL;

	mutex_lock(&pagebuf_lock);
	buf = xa_load(&pagebuf_bufs, req->id);
	if (buf)
		pagebuf_buf_describe(buf, req);
	else
		ret = -ENOENT;
	mutex_unlock(&pagebuf_lock);
	return ret;
}

/*
 * The registry is copied to a kernel array under the lock and to userspace
 * after it: a fault in copy_to_user() must not happen with pagebuf_lock held.
 */
static int pagebuf_ioctl_list(struct pagebuf_list *req)
{
	void __user *ubuf = u64_to_user_ptr(req->buffers);
	size_t entry = sizeof(struct pagebuf_buffer);
	struct pagebuf_buffer *snap = NULL;
	struct pagebuf_buf *buf;
	unsigned long index;
	u32 i, want, n = 0;
	int ret = 0;

	if (req->count || req->total || req->entry_size < entry ||
	    req->entry_size > PAGE_SIZE || (req->capacity && !req->buffers))
		return -EINVAL;

	mutex_lock(&pagebuf_lock);
	req->total = pagebuf_nr_buffers;
	/* Never more than exist: the caller's capacity may be anything. */
	want = min(req->capacity, req->total);
	if (want) {
		snap = kvcalloc(want, entry, GFP_KERNEL | __GFP_NOWARN);
		if (!snap) {
			ret = -ENOMEM;
			goto out_unlock;
		}
	}
	xa_for_each(&pagebuf_bufs, index, buf) {
		if (n == want)
			break;
		pagebuf_buf_describe(buf, &snap[n++]);
	}
out_unlock:
	mutex_unlock(&pagebuf_lock);
	if (ret)
		return ret;

	for (i = 0; i < n; i++) {
		void __user *dst = ubuf + (size_t)i * req->entry_size;

		if (copy_to_user(dst, &snap[i], entry) ||
		    clear_user(dst + entry, req->entry_size - entry)) {
			ret = -EFAULT;
			break;
		}
	}
	req->count = n;
	kvfree(snap);
	return ret;
}

static int pagebuf_ioctl_set_caching(struct file *file,
				     struct pagebuf_caching *req)
{
	struct pagebuf_file *pf = file->private_data;

	if (req->reserved || req->mode > PAGEBUF_CACHING_DEVICE)
		return -EINVAL;
	WRITE_ONCE(pf->caching, req->mode);
	return 0;
}

/* Is [offset, offset + length) inside the buffer? Overflow-safe. */
static bool pagebuf_range_ok(const struct pagebuf_buf *buf, u64 offset,
			     u64 length)
{
	u64 size = PAGE_SIZE << buf->order;

	return offset <= size && length <= size - offset;
}

/* Largest piece copied or summed between two chances to reschedule. */
#define PAGEBUF_CHUNK	SZ_1M

/*
 * KREAD, KWRITE, KCHECKSUM, KFLUSH and INJECT touch the buffer through the
 * kernel's cached linear mapping: the other side of the alias that /dev/mem
 * and uncached mmap()s of /dev/pagebuf give userspace.
 */
static int pagebuf_ioctl_kaccess(unsigned int cmd, struct pagebuf_kaccess *req)
{
	void __user *udata = u64_to_user_ptr(req->data);
	bool nodata = cmd == PAGEBUF_IOC_KCHECKSUM || cmd == PAGEBUF_IOC_KFLUSH;
	bool write = cmd == PAGEBUF_IOC_KWRITE || cmd == PAGEBUF_IOC_INJECT;
	bool cmo = cmd == PAGEBUF_IOC_KFLUSH || cmd == PAGEBUF_IOC_INJECT;
	u32 flags = cmd == PAGEBUF_IOC_KFLUSH ? PAGEBUF_KFLUSH_FLAGS : 0;
	bool inval = !(req->flags & PAGEBUF_KFLUSH_CLEAN);
	struct pagebuf_buf *buf;
	u64 done, n;
	u32 crc = ~0U;
	void *kaddr;
	int ret = 0;

	if ((req->flags & ~flags) || req->reserved || req->checksum ||
	    nodata != !req->data)
		return -EINVAL;
	if (cmd == PAGEBUF_IOC_INJECT && !pagebuf_inject)
		return -EPERM;
	/* All or nothing: INJECT writes nothing where it could not flush. */
	if (cmo && pagebuf_cmo_via == PAGEBUF_CMO_NONE)
		return -EOPNOTSUPP;

	buf = pagebuf_buf_get(req->id);
	if (!buf)
		return -ENOENT;
	if (!pagebuf_range_ok(buf, req->offset, req->length)) {
		ret = -EINVAL;
		goto out_put;
	}

	kaddr = page_address(buf->pages) + req->offset;
	for (done = 0; done < req->length; done += n) {
		n = min_t(u64, req->length - done, PAGEBUF_CHUNK);
		if (cmd == PAGEBUF_IOC_KREAD)
			ret = copy_to_user(udata + done, kaddr + done, n) ?
				-EFAULT : 0;
		else if (write)
			ret = copy_from_user(kaddr + done, udata + done, n) ?
				-EFAULT : 0;
		else if (cmd == PAGEBUF_IOC_KCHECKSUM)
			crc = crc32_le(crc, kaddr + done, n);
		if (!ret && cmo)
			ret = pagebuf_cmo(buf->pages, req->offset + done, n,
					  inval);
		if (ret)
			goto out_put;
		cond_resched();
	}
	if (cmd == PAGEBUF_IOC_KCHECKSUM)
		req->checksum = ~crc;
out_put:
	pagebuf_buf_put(buf);
	return ret;
}

/* The streaming-DMA ownership hand-over, on request, for a mapped buffer. */
static int pagebuf_ioctl_sync(struct pagebuf_sync *req)
{
	struct pagebuf_buf *buf;
	u64 length;
	int ret = 0;

	if (req->direction != PAGEBUF_SYNC_FOR_CPU &&
	    req->direction != PAGEBUF_SYNC_FOR_DEVICE)
		return -EINVAL;

	buf = pagebuf_buf_get(req->id);
	if (!buf)
		return -ENOENT;
	length = req->length ?: (PAGE_SIZE << buf->order) - req->offset;
	if (!(buf->flags & PAGEBUF_BUF_DMA) ||
	    !pagebuf_range_ok(buf, req->offset, length) || !length) {
		ret = -EINVAL;
		goto out_put;
	}

	if (req->direction == PAGEBUF_SYNC_FOR_CPU)
		dma_sync_single_range_for_cpu(pagebuf_dev(), buf->dma_addr,
					      req->offset, length,
					      DMA_BIDIRECTIONAL);
	else
		dma_sync_single_range_for_device(pagebuf_dev(), buf->dma_addr,
						 req->offset, length,
						 DMA_BIDIRECTIONAL);
out_put:
	pagebuf_buf_put(buf);
	return ret;
}

/*
 * Map a caller's command to the kernel's: same type, number and direction,
 * any size from the first version of the struct on (dma-heap's scheme).
 * Today every struct is at version 1, so that size is the kernel's own;
 * a struct that grows keeps its version 1 size as the floor here.
 */
static unsigned int pagebuf_kernel_cmd(unsigned int ucmd)
{
	static const unsigned int cmds[] = {
		PAGEBUF_IOC_GET_INFO,
		PAGEBUF_IOC_ALLOC,
		PAGEBUF_IOC_FREE,
		PAGEBUF_IOC_BUF_INFO,
		PAGEBUF_IOC_LIST,
		PAGEBUF_IOC_SET_CACHING,
		PAGEBUF_IOC_KREAD,
		PAGEBUF_IOC_KWRITE,
		PAGEBUF_IOC_KCHECKSUM,
		PAGEBUF_IOC_SYNC,
		PAGEBUF_IOC_KFLUSH,
		PAGEBUF_IOC_INJECT,
	};
	unsigned int nr = _IOC_NR(ucmd);
	unsigned int kcmd;

	if (_IOC_TYPE(ucmd) != PAGEBUF_IOC_MAGIC || nr >= ARRAY_SIZE(cmds))
		return 0;
	kcmd = cmds[nr];
	if (_IOC_DIR(ucmd) != _IOC_DIR(kcmd) ||
	    _IOC_SIZE(ucmd) < _IOC_SIZE(kcmd))
		return 0;
	return kcmd;
}

static long pagebuf_ioctl(struct file *file, unsigned int ucmd,
			  unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	union {
		struct pagebuf_info info;
		struct pagebuf_buffer buffer;
		struct pagebuf_free free;
		struct pagebuf_list list;
		struct pagebuf_caching caching;
		struct pagebuf_kaccess kaccess;
		struct pagebuf_sync sync;
	} data;
	unsigned int kcmd = pagebuf_kernel_cmd(ucmd);
	size_t usize = _IOC_SIZE(ucmd);
	size_t ksize = _IOC_SIZE(kcmd);
	int ret;

	if (!kcmd)
		return -ENOTTY;

	memset(&data, 0, sizeof(data));
	if (_IOC_DIR(kcmd) & _IOC_WRITE) {
		/* Zero-fills a short struct, refuses a non-zero longer tail. */
		ret = copy_struct_from_user(&data, ksize, uarg, usize);
		if (ret)
			return ret == -E2BIG ? -EINVAL : ret;
	}

	switch (kcmd) {
	case PAGEBUF_IOC_GET_INFO:
		ret = pagebuf_ioctl_get_info(&data.info);
		break;
	case PAGEBUF_IOC_ALLOC:
		ret = pagebuf_ioctl_alloc(file, &data.buffer);
		break;
	case PAGEBUF_IOC_FREE:
		ret = pagebuf_ioctl_free(file, &data.free);
		break;
	case PAGEBUF_IOC_BUF_INFO:
		ret = pagebuf_ioctl_buf_info(&data.buffer);
		break;
	case PAGEBUF_IOC_LIST:
		ret = pagebuf_ioctl_list(&data.list);
		break;
	case PAGEBUF_IOC_SET_CACHING:
		ret = pagebuf_ioctl_set_caching(file, &data.caching);
		break;
	case PAGEBUF_IOC_KREAD:
	case PAGEBUF_IOC_KWRITE:
	case PAGEBUF_IOC_KCHECKSUM:
	case PAGEBUF_IOC_KFLUSH:
	case PAGEBUF_IOC_INJECT:
		ret = pagebuf_ioctl_kaccess(kcmd, &data.kaccess);
		break;
	case PAGEBUF_IOC_SYNC:
		ret = pagebuf_ioctl_sync(&data.sync);
		break;
	default:
		return -ENOTTY;
	}
	if (ret || !(_IOC_DIR(kcmd) & _IOC_READ))
		return ret;

	if (copy_to_user(uarg, &data, min(usize, ksize)) ||
	    (usize > ksize && clear_user(uarg + ksize, usize - ksize))) {
		/* The caller never learnt the new buffer's id: take it back. */
		if (kcmd == PAGEBUF_IOC_ALLOC) {
			mutex_lock(&pagebuf_lock);
			pagebuf_buf_free(file, data.buffer.id);
			mutex_unlock(&pagebuf_lock);
		}
		return -EFAULT;
	}
	return 0;
}

static void pagebuf_vm_open(struct vm_area_struct *vma)
{
	struct pagebuf_buf *buf = vma->vm_private_data;

	kref_get(&buf->ref);
}

static void pagebuf_vm_close(struct vm_area_struct *vma)
{
	pagebuf_buf_put(vma->vm_private_data);
}

static const struct vm_operations_struct pagebuf_vm_ops = {
	.open = pagebuf_vm_open,
	.close = pagebuf_vm_close,
};

/* The buffer holding [phys, phys + len), with a reference, or NULL. */
static struct pagebuf_buf *pagebuf_buf_find(phys_addr_t phys, size_t len)
{
	struct pagebuf_buf *buf, *found = NULL;
	unsigned long index;
	phys_addr_t start;

	mutex_lock(&pagebuf_lock);
	xa_for_each(&pagebuf_bufs, index, buf) {
		start = page_to_phys(buf->pages);
		if (phys >= start && len <= PAGE_SIZE << buf->order &&
		    phys - start <= (PAGE_SIZE << buf->order) - len) {
			kref_get(&buf->ref);
			found = buf;
			break;
		}
	}
	mutex_unlock(&pagebuf_lock);
	return found;
}

/*
 * The uncached alias /dev/mem gives RAM opened O_SYNC: on arm64 that is
 * Normal non-cacheable (phys_mem_access_prot() in arch/arm64/mm/mmu.c), not
 * pgprot_noncached()'s Device-nGnRnE, where unaligned accesses and DC ZVA
 * fault. PAGEBUF_CACHING_DEVICE asks for the latter by name.
 */
static pgprot_t pagebuf_pgprot_uncached(pgprot_t prot)
{
	if (IS_ENABLED(CONFIG_ARM64))
		return pgprot_writecombine(prot);
	return pgprot_noncached(prot);
}

/*
 * mmap() takes the physical address as its offset, as /dev/mem does, but
 * maps only pages inside one pagebuf buffer. The mapping holds a reference,
 * so the pages stay allocated until it goes even if the buffer is freed.
 */
static int pagebuf_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct pagebuf_file *pf = file->private_data;
	size_t len = vma->vm_end - vma->vm_start;
	phys_addr_t phys = (phys_addr_t)vma->vm_pgoff << PAGE_SHIFT;
	struct pagebuf_buf *buf;
	struct page *page;
	unsigned long addr;
	pgprot_t prot;
	int ret;

	/*
	 * A private mapping would copy on write: the buffer would never see it.
	 * VM_MAYSHARE, not VM_SHARED: a read-only MAP_SHARED of a file opened
	 * O_RDONLY has only the former.
	 */
	if (!(vma->vm_flags & VM_MAYSHARE) || (phys >> PAGE_SHIFT) != vma->vm_pgoff)
		return -EINVAL;
	buf = pagebuf_buf_find(phys, len);
	if (!buf)
		return -EINVAL;

	switch (READ_ONCE(pf->caching)) {
	case PAGEBUF_CACHING_UC:
		prot = pagebuf_pgprot_uncached(vma->vm_page_prot);
		break;
	case PAGEBUF_CACHING_DEVICE:
		prot = pgprot_noncached(vma->vm_page_prot);
		break;
	case PAGEBUF_CACHING_WC:
		prot = pgprot_writecombine(vma->vm_page_prot);
		break;
	case PAGEBUF_CACHING_WB:
		prot = vma->vm_page_prot;
		break;
	default:
		prot = (file->f_flags & O_DSYNC) ?
			pagebuf_pgprot_uncached(vma->vm_page_prot) :
			vma->vm_page_prot;
		break;
	}
	vma->vm_page_prot = prot;

	page = buf->pages + ((phys - page_to_phys(buf->pages)) >> PAGE_SHIFT);
	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		ret = vm_insert_page(vma, addr, page++);
		if (ret) {
			/* The caller unmaps what was inserted; no ->close. */
			pagebuf_buf_put(buf);
			return ret;
		}
	}
	/* From here on the VMA holds the reference taken by the lookup. */
	vma->vm_private_data = buf;
	vma->vm_ops = &pagebuf_vm_ops;
	return 0;
}

/*
 * read() and write() take the physical address as the file position, as on
 * /dev/mem, and, as /dev/mem does for RAM, copy through the kernel's cached
 * linear mapping. A transfer starting outside every buffer is EINVAL; one
 * running past the end of its buffer stops there (a short count).
 */
static ssize_t pagebuf_rw(struct file *file, char __user *ubuf, size_t count,
			  loff_t *ppos, bool write)
{
	struct pagebuf_buf *buf;
	size_t off, len, done, n;
	void *kaddr;
	int ret = 0;

	/* Without 64-bit physical addresses a large position would wrap. */
	if (*ppos < 0 || (phys_addr_t)*ppos != *ppos)
		return -EINVAL;
	if (!count)
		return 0;
	buf = pagebuf_buf_find(*ppos, 1);
	if (!buf)
		return -EINVAL;

	off = *ppos - page_to_phys(buf->pages);
	len = min_t(size_t, count, (PAGE_SIZE << buf->order) - off);
	kaddr = page_address(buf->pages) + off;
	for (done = 0; done < len; done += n) {
		n = min_t(size_t, len - done, PAGEBUF_CHUNK);
		if (write ? copy_from_user(kaddr + done, ubuf + done, n) :
			    copy_to_user(ubuf + done, kaddr + done, n)) {
			ret = -EFAULT;
			break;
		}
		cond_resched();
	}
	pagebuf_buf_put(buf);

	*ppos += done;
	return done ? done : ret;
}

static ssize_t pagebuf_read(struct file *file, char __user *ubuf, size_t count,
			    loff_t *ppos)
{
	return pagebuf_rw(file, ubuf, count, ppos, false);
}

static ssize_t pagebuf_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	return pagebuf_rw(file, (char __user *)ubuf, count, ppos, true);
}

static int pagebuf_open(struct inode *inode, struct file *file)
{
	struct pagebuf_file *pf;

	if (!capable(CAP_SYS_RAWIO))
		return -EPERM;
	pf = kzalloc(sizeof(*pf), GFP_KERNEL);
	if (!pf)
		return -ENOMEM;
	file->private_data = pf;
	return 0;
}

static int pagebuf_release(struct inode *inode, struct file *file)
{
	struct pagebuf_buf *buf;
	unsigned long index;

	mutex_lock(&pagebuf_lock);
	xa_for_each(&pagebuf_bufs, index, buf) {
		if (buf->owner == file)
			pagebuf_buf_destroy(buf);
	}
	mutex_unlock(&pagebuf_lock);
	kfree(file->private_data);
	return 0;
}

static ssize_t version_show(struct device *dev, struct device_attribute *attr,
			    char *page)
{
	return sysfs_emit(page, "%u\n", PAGEBUF_API_VERSION);
}
static DEVICE_ATTR_RO(version);

static ssize_t max_order_show(struct device *dev,
			      struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%u\n", pagebuf_max_order);
}
static DEVICE_ATTR_RO(max_order);

static ssize_t max_pages_show(struct device *dev,
			      struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%lu\n", pagebuf_max_pages);
}
static DEVICE_ATTR_RO(max_pages);

static ssize_t pages_in_use_show(struct device *dev,
				 struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%ld\n", atomic_long_read(&pagebuf_pages_in_use));
}
static DEVICE_ATTR_RO(pages_in_use);

static ssize_t nr_buffers_show(struct device *dev,
			       struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%u\n", READ_ONCE(pagebuf_nr_buffers));
}
static DEVICE_ATTR_RO(nr_buffers);

static ssize_t cache_ops_show(struct device *dev,
			      struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%s\n", pagebuf_cmo_names[pagebuf_cmo_via]);
}
static DEVICE_ATTR_RO(cache_ops);

static struct attribute *pagebuf_attrs[] = {
	&dev_attr_version.attr,
	&dev_attr_max_order.attr,
	&dev_attr_max_pages.attr,
	&dev_attr_pages_in_use.attr,
	&dev_attr_nr_buffers.attr,
	&dev_attr_cache_ops.attr,
	NULL,
};
ATTRIBUTE_GROUPS(pagebuf);

static const struct file_operations pagebuf_fops = {
	.owner = THIS_MODULE,
	.open = pagebuf_open,
	.release = pagebuf_release,
	.unlocked_ioctl = pagebuf_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = pagebuf_mmap,
	.read = pagebuf_read,
	.write = pagebuf_write,
	.llseek = default_llseek,
};

static struct miscdevice pagebuf_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pagebuf",
	.fops = &pagebuf_fops,
	.groups = pagebuf_groups,
	.mode = 0600,
};

static int __init pagebuf_init(void)
{
	int ret;

	if (pagebuf_max_order > PAGEBUF_MAX_PAGE_ORDER) {
		pr_err("max_order=%u exceeds this kernel's largest order %u\n",
		       pagebuf_max_order, PAGEBUF_MAX_PAGE_ORDER);
		return -EINVAL;
	}
	if (!pagebuf_max_pages) {
		pr_err("max_pages must be at least 1\n");
		return -EINVAL;
	}

	ret = misc_register(&pagebuf_misc);
	if (ret)
		return ret;

	/* A DMA-capable device for dma_map_page(), as udmabuf does. */
	ret = dma_coerce_mask_and_coherent(pagebuf_dev(), DMA_BIT_MASK(64));
	if (ret) {
		dev_err(pagebuf_dev(), "cannot set a 64-bit DMA mask: %d\n",
			ret);
		goto err_deregister;
	}

	ret = pagebuf_cmo_init();
	if (ret)
		goto err_deregister;
	return 0;

err_deregister:
	misc_deregister(&pagebuf_misc);
	return ret;
}

static void __exit pagebuf_exit(void)
{
	struct pagebuf_buf *buf;
	unsigned long index;

	/*
	 * No file is open (each holds a module reference). Free what is left
	 * while the device still exists: DMA unmapping needs it.
	 */
	mutex_lock(&pagebuf_lock);
	xa_for_each(&pagebuf_bufs, index, buf)
		pagebuf_buf_destroy(buf);
	mutex_unlock(&pagebuf_lock);
	xa_destroy(&pagebuf_bufs);
	misc_deregister(&pagebuf_misc);
}

module_init(pagebuf_init);
module_exit(pagebuf_exit);

MODULE_DESCRIPTION("Physical page buffers for studying /dev/mem cache aliasing");
MODULE_AUTHOR("pagebuf developers");
MODULE_LICENSE("GPL");
