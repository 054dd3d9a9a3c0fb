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
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/log2.h>
#include <linux/gfp.h>
#include <linux/iommu.h>
#include <linux/kref.h>
#include <linux/libnvdimm.h>
#include <linux/list.h>
#include <linux/maple_tree.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmzone.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/notifier.h>
#include <linux/pci.h>
#include <linux/pfn_t.h>
#include <linux/platform_device.h>
#include <linux/property.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/sizes.h>
#include <linux/uaccess.h>
#include <linux/string.h>
#include <linux/xarray.h>
#ifdef CONFIG_ARM_AMBA
#include <linux/amba/bus.h>
#endif
#ifdef CONFIG_X86
#include <asm/memtype.h>
#endif

#include "uapi/pagebuf.h"

#ifdef PAGEBUF_NO_VM_FLAGS_SET
/* Before 6.3 (Kbuild checks), vm_flags is written directly. */
static inline void vm_flags_set(struct vm_area_struct *vma, unsigned long flags)
{
	vma->vm_flags |= flags;
}
#endif

/*
 * The largest order alloc_pages() accepts, spelt so that it holds across the
 * MAX_ORDER (exclusive before 6.4, inclusive after) and MAX_PAGE_ORDER (6.8)
 * renames.
 */
#define PAGEBUF_MAX_PAGE_ORDER	ilog2(MAX_ORDER_NR_PAGES)

static unsigned int pagebuf_max_order = 10;
module_param_named(max_order, pagebuf_max_order, uint, 0444);
MODULE_PARM_DESC(max_order, "Largest order a buffer may have (default 10)");

static unsigned long pagebuf_max_bytes = SZ_128M;
module_param_named(max_bytes, pagebuf_max_bytes, ulong, 0444);
MODULE_PARM_DESC(max_bytes, "Most bytes all buffers may hold together, at most the RAM (default 128 MiB)");

static bool pagebuf_inject;
module_param_named(inject, pagebuf_inject, bool, 0444);
MODULE_PARM_DESC(inject, "Debug only: enable the INJECT ioctl, which corrupts buffers on purpose");

/*
 * x86 with PAT gives each page of RAM one memory type, write-back for the
 * kernel's linear map, and refuses /dev/mem any other: an uncached or
 * write-combining alias of RAM is outside what the kernel tracks and what
 * the architecture defines. pagebuf makes one only when asked to by name.
 */
static bool pagebuf_x86_pat_alias;
module_param_named(x86_pat_alias, pagebuf_x86_pat_alias, bool, 0444);
MODULE_PARM_DESC(x86_pat_alias, "x86 with PAT: allow UC, WC and device maps of RAM, which PAT does not track (taints the kernel)");

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
 * @dma_dev:  the device it is mapped for: pagebuf's own, or the named one,
 *            held with a reference until the mapping is undone (then NULL,
 *            under pagebuf_dev_lock)
 * @dma_dir:  the mapping's direction
 * @dma_info: PAGEBUF_DEV_* facts about @dma_dev, found when it was mapped
 * @dma_mask: @dma_dev's DMA mask then
 * @dma_name: "bus:name" of a named device, or "" for pagebuf's own
 * @foreign:  on pagebuf_foreign while mapped for a named device
 * @owner:    the file whose release frees this buffer, and the only one
 *            that may reach it; NULL when the buffer belongs to the module
 *            and lives until freed or rmmod
 * @ref:      one reference for the registry, one per mapping and per
 *            ioctl in flight: the pages outlive a FREE while still mapped
 * @dead:     on a list of buffers taken out of the registry, to be put
 *            once pagebuf_lock is dropped
 * @sysfs:    its directory under buffers/ while it is in the registry
 */
struct pagebuf_buf {
	struct kref ref;
	u32 id;
	unsigned int order;
	u32 flags;
	struct page *pages;
	dma_addr_t dma_addr;
	struct device *dma_dev;
	enum dma_data_direction dma_dir;
	u32 dma_info;
	u64 dma_mask;
	char dma_name[PAGEBUF_DEV_NAME_LEN];
	struct list_head foreign;
	struct file *owner;
	struct list_head dead;
	struct kobject *sysfs;
};

/*
 * pagebuf_lock serialises every change to the registry: the buffers by id
 * and the same buffers by page frame number, for mmap(), read() and write(),
 * which name a buffer by its physical address. Allocation, zeroing, cache
 * maintenance and DMA mapping happen outside it; it is also taken under
 * mmap_lock, so nothing that may fault runs under it.
 */
static DEFINE_MUTEX(pagebuf_lock);
static DEFINE_XARRAY_ALLOC1(pagebuf_bufs);
static DEFINE_MTREE(pagebuf_by_pfn);
static u32 pagebuf_next_id;
static unsigned int pagebuf_nr_buffers;
/*
 * Bytes are charged before the pages are allocated and stay in use until
 * the last mapping of a freed buffer goes.
 */
static atomic_long_t pagebuf_bytes_in_use = ATOMIC_LONG_INIT(0);

/* What the load-time DMA probe found; set once, before the device opens. */
static bool pagebuf_dma_bounce;
static bool pagebuf_dma_coherent;
static bool pagebuf_ready;

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

/*
 * Map one page for the device and look at what came back, with the driver
 * API: a DMA address other than the physical one can only be a bounce
 * buffer (pagebuf's device has no IOMMU and no DMA offset), and where the
 * mapping is direct, dma_need_sync() says whether syncs maintain the cache.
 */
static int pagebuf_dma_probe(void)
{
	struct device *dev = pagebuf_dev();
	struct page *page;
	dma_addr_t addr;
	int ret = 0;

	page = alloc_page(GFP_KERNEL);
	if (!page)
		return -ENOMEM;
	addr = dma_map_page_attrs(dev, page, 0, PAGE_SIZE, DMA_BIDIRECTIONAL,
				  DMA_ATTR_NO_WARN);
	if (dma_mapping_error(dev, addr)) {
		dev_err(dev, "cannot map a page for DMA\n");
		ret = -EIO;
		goto out_free;
	}
	pagebuf_dma_bounce = addr != page_to_phys(page);
	pagebuf_dma_coherent = !pagebuf_dma_bounce && !dma_need_sync(dev, addr);
	dma_unmap_page(dev, addr, PAGE_SIZE, DMA_BIDIRECTIONAL);
out_free:
	__free_page(page);
	return ret;
}

static bool pagebuf_cmo_dma_works(void)
{
	return !pagebuf_dma_coherent && !pagebuf_dma_bounce;
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

/* Flags change once, when a named device goes (PAGEBUF_BUF_DEVICE_GONE). */
static void pagebuf_buf_describe(const struct pagebuf_buf *buf,
				 struct pagebuf_buffer *out)
{
	memset(out, 0, sizeof(*out));
	out->id = buf->id;
	out->order = buf->order;
	out->flags = READ_ONCE(buf->flags);
	out->phys_addr = page_to_phys(buf->pages);
	out->size = PAGE_SIZE << buf->order;
	if (!(buf->flags & PAGEBUF_BUF_DMA))
		return;
	out->dma_addr = buf->dma_addr;
	out->dma_dir = buf->dma_dir;
	out->dma_info = buf->dma_info;
	out->dma_mask = buf->dma_mask;
	memcpy(out->dma_device, buf->dma_name, sizeof(out->dma_device));
}

/*
 * Each buffer in the registry has a directory buffers/<id> beside the
 * device's own attributes, as u-dma-buf's buffers have: a shell reads an
 * address with cat. Its attributes are a copy of what ALLOC told the caller;
 * they never change, so reading them takes no lock and races no FREE.
 */
struct pagebuf_sysfs {
	struct kobject kobj;
	struct pagebuf_buffer desc;
};

static struct kobject *pagebuf_buffers_dir;

static const struct pagebuf_buffer *pagebuf_sysfs_desc(struct kobject *kobj)
{
	return &container_of(kobj, struct pagebuf_sysfs, kobj)->desc;
}

static ssize_t phys_addr_show(struct kobject *kobj,
			      struct kobj_attribute *attr, char *page)
{
	return sysfs_emit(page, "%#llx\n", pagebuf_sysfs_desc(kobj)->phys_addr);
}

static ssize_t dma_addr_show(struct kobject *kobj,
			     struct kobj_attribute *attr, char *page)
{
	const struct pagebuf_buffer *desc = pagebuf_sysfs_desc(kobj);

	if (!(desc->flags & PAGEBUF_BUF_DMA))
		return sysfs_emit(page, "none\n");
	return sysfs_emit(page, "%#llx\n", desc->dma_addr);
}

static ssize_t size_show(struct kobject *kobj, struct kobj_attribute *attr,
			 char *page)
{
	return sysfs_emit(page, "%llu\n", pagebuf_sysfs_desc(kobj)->size);
}

static ssize_t order_show(struct kobject *kobj, struct kobj_attribute *attr,
			  char *page)
{
	return sysfs_emit(page, "%u\n", pagebuf_sysfs_desc(kobj)->order);
}

static ssize_t owner_show(struct kobject *kobj, struct kobj_attribute *attr,
			  char *page)
{
	bool file = pagebuf_sysfs_desc(kobj)->flags & PAGEBUF_BUF_FILE_OWNED;

	return sysfs_emit(page, "%s\n", file ? "file" : "module");
}

static ssize_t bounced_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *page)
{
	bool bounced = pagebuf_sysfs_desc(kobj)->flags & PAGEBUF_BUF_BOUNCED;

	return sysfs_emit(page, "%d\n", bounced);
}

static ssize_t dma_device_show(struct kobject *kobj,
			       struct kobj_attribute *attr, char *page)
{
	const struct pagebuf_buffer *desc = pagebuf_sysfs_desc(kobj);

	if (!(desc->flags & PAGEBUF_BUF_DMA))
		return sysfs_emit(page, "none\n");
	return sysfs_emit(page, "%s\n", desc->dma_device[0] ? desc->dma_device :
			  "pagebuf");
}

static ssize_t dma_dir_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *page)
{
	static const char * const names[] = {
		[PAGEBUF_DMA_BIDIRECTIONAL] = "bidirectional",
		[PAGEBUF_DMA_TO_DEVICE] = "to-device",
		[PAGEBUF_DMA_FROM_DEVICE] = "from-device",
	};
	const struct pagebuf_buffer *desc = pagebuf_sysfs_desc(kobj);

	if (!(desc->flags & PAGEBUF_BUF_DMA))
		return sysfs_emit(page, "none\n");
	return sysfs_emit(page, "%s\n", names[desc->dma_dir]);
}

static struct kobj_attribute pagebuf_attr_phys_addr = __ATTR_RO(phys_addr);
static struct kobj_attribute pagebuf_attr_dma_addr = __ATTR_RO(dma_addr);
static struct kobj_attribute pagebuf_attr_size = __ATTR_RO(size);
static struct kobj_attribute pagebuf_attr_order = __ATTR_RO(order);
static struct kobj_attribute pagebuf_attr_owner = __ATTR_RO(owner);
static struct kobj_attribute pagebuf_attr_bounced = __ATTR_RO(bounced);
static struct kobj_attribute pagebuf_attr_dma_device = __ATTR_RO(dma_device);
static struct kobj_attribute pagebuf_attr_dma_dir = __ATTR_RO(dma_dir);

static struct attribute *pagebuf_buf_attrs[] = {
	&pagebuf_attr_phys_addr.attr,
	&pagebuf_attr_dma_addr.attr,
	&pagebuf_attr_size.attr,
	&pagebuf_attr_order.attr,
	&pagebuf_attr_owner.attr,
	&pagebuf_attr_bounced.attr,
	&pagebuf_attr_dma_device.attr,
	&pagebuf_attr_dma_dir.attr,
	NULL,
};
ATTRIBUTE_GROUPS(pagebuf_buf);

static void pagebuf_sysfs_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct pagebuf_sysfs, kobj));
}

static const struct kobj_type pagebuf_sysfs_type = {
	.release = pagebuf_sysfs_release,
	.sysfs_ops = &kobj_sysfs_ops,
	.default_groups = pagebuf_buf_groups,
};

/* buffers/<id> for @buf, whose id is reserved: called without pagebuf_lock. */
static int pagebuf_sysfs_add(struct pagebuf_buf *buf)
{
	struct pagebuf_sysfs *entry;
	int ret;

	entry = kzalloc(sizeof(*entry), GFP_KERNEL_ACCOUNT);
	if (!entry)
		return -ENOMEM;
	pagebuf_buf_describe(buf, &entry->desc);
	ret = kobject_init_and_add(&entry->kobj, &pagebuf_sysfs_type,
				   pagebuf_buffers_dir, "%u", buf->id);
	if (ret) {
		kobject_put(&entry->kobj);
		return ret;
	}
	buf->sysfs = &entry->kobj;
	return 0;
}

/* Remove buffers/<id>; its reader, if any, finishes first. No lock held. */
static void pagebuf_sysfs_del(struct pagebuf_buf *buf)
{
	if (!buf->sysfs)
		return;
	kobject_del(buf->sysfs);
	kobject_put(buf->sysfs);
	buf->sysfs = NULL;
}

/* Only the owner may reach a file-owned buffer; anyone a module-owned one. */
static bool pagebuf_may_use(const struct pagebuf_buf *buf,
			    const struct file *file)
{
	return !buf->owner || buf->owner == file;
}

/* Charge @bytes against max_bytes: false, and nothing charged, if over. */
static bool pagebuf_charge(unsigned long bytes)
{
	if (atomic_long_add_return(bytes, &pagebuf_bytes_in_use) >
	    pagebuf_max_bytes) {
		atomic_long_sub(bytes, &pagebuf_bytes_in_use);
		return false;
	}
	return true;
}

/*
 * Buffers are split into order-0 pages, each with its own reference count,
 * so that mmap() can insert them as ordinary pages: /proc/self/pagemap then
 * shows their PFNs, which it does not for a VM_PFNMAP mapping. A large
 * order may fail rather than wake the OOM killer; the pages are charged to
 * the caller's memory cgroup.
 */
static struct page *pagebuf_alloc_pages(unsigned int order)
{
	/* Zeroed: the pages may have held another user's data. */
	struct page *pages = alloc_pages(GFP_KERNEL | __GFP_ZERO | __GFP_NOWARN |
					 __GFP_RETRY_MAYFAIL | __GFP_ACCOUNT,
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

/*
 * A buffer may be mapped for a device other than pagebuf's, named by bus
 * and name, as that device's driver would map it. The buffers so mapped are
 * on pagebuf_foreign; pagebuf_dev_lock guards that list and their @dma_dev.
 * A bus notifier undoes a mapping when its device's driver is bound or
 * unbound or the device is removed: the DMA API's state for a device belongs
 * to its driver, and an IOMMU forgets a removed device. The lock is taken
 * under the device lock (ALLOC, and the notifier on bind and unbind) and
 * under mmap_lock (a buffer's last put).
 */
static DEFINE_MUTEX(pagebuf_dev_lock);
static LIST_HEAD(pagebuf_foreign);

struct pagebuf_bus {
	const char *name;
	typeof(platform_bus_type) *type;
	struct notifier_block nb;
};

static struct pagebuf_bus pagebuf_buses[] = {
	{ .name = "platform", .type = &platform_bus_type },
#ifdef CONFIG_PCI
	{ .name = "pci", .type = &pci_bus_type },
#endif
#ifdef CONFIG_ARM_AMBA
	{ .name = "amba", .type = &amba_bustype },
#endif
};

/* "bus:name" with a reference: -EINVAL for another bus, -ENODEV if none. */
static struct device *pagebuf_find_dev(const char *spec)
{
	const char *colon = strchr(spec, ':');
	struct device *dev;
	size_t i;

	if (!colon || !colon[1])
		return ERR_PTR(-EINVAL);
	for (i = 0; i < ARRAY_SIZE(pagebuf_buses); i++) {
		if (strlen(pagebuf_buses[i].name) != colon - spec ||
		    strncmp(spec, pagebuf_buses[i].name, colon - spec))
			continue;
		dev = bus_find_device_by_name(pagebuf_buses[i].type, NULL,
					      colon + 1);
		return dev ?: ERR_PTR(-ENODEV);
	}
	return ERR_PTR(-EINVAL);
}

/* What a mapping at @addr for @dev says about the device (PAGEBUF_DEV_*). */
static u32 pagebuf_dev_info(struct device *dev, dma_addr_t addr)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(dev);
	u32 info = 0;

	switch (device_get_dma_attr(dev)) {
	case DEV_DMA_COHERENT:
		info |= PAGEBUF_DEV_COHERENT;
		break;
	case DEV_DMA_NON_COHERENT:
		info |= PAGEBUF_DEV_NONCOHERENT;
		break;
	default:
		break;
	}
	if (dma_need_sync(dev, addr))
		info |= PAGEBUF_DEV_SYNC;
	if (device_iommu_mapped(dev))
		info |= PAGEBUF_DEV_IOMMU;
	if (domain && domain->type != IOMMU_DOMAIN_IDENTITY)
		info |= PAGEBUF_DEV_TRANSLATED;
	return info;
}

/* dma_map_page() @buf for @dev, and what it found: 0 or -errno. */
static int pagebuf_dma_map(struct pagebuf_buf *buf, struct device *dev)
{
	size_t size = PAGE_SIZE << buf->order;
	dma_addr_t addr;

	addr = dma_map_page_attrs(dev, buf->pages, 0, size, buf->dma_dir,
				  DMA_ATTR_NO_WARN);
	if (dma_mapping_error(dev, addr))
		return -EIO;
	buf->dma_addr = addr;
	buf->dma_dev = dev;
	buf->dma_mask = dma_get_mask(dev);
	buf->dma_info = pagebuf_dev_info(dev, addr);
	if (!(buf->dma_info & PAGEBUF_DEV_TRANSLATED) &&
	    addr != page_to_phys(buf->pages))
		buf->flags |= PAGEBUF_BUF_BOUNCED;
	return 0;
}

/*
 * Map @buf for the device buf->dma_name names, with that device's lock held,
 * so that no bind or unbind comes between the mapping and its place on
 * pagebuf_foreign, where the notifier finds it; only while a driver is bound,
 * so its unbind (which comes first) is what undoes the mapping. Under pagebuf_dev_lock the
 * device is looked up again: one still on its bus has not yet been through
 * BUS_NOTIFY_REMOVED_DEVICE, which then waits for the lock and undoes the
 * mapping before the IOMMU core (a later notifier) forgets the device.
 */
static int pagebuf_map_named(struct pagebuf_buf *buf)
{
	struct iommu_domain *domain;
	struct device *dev, *again;
	int ret;

	dev = pagebuf_find_dev(buf->dma_name);
	if (IS_ERR(dev))
		return PTR_ERR(dev);
	ret = device_lock_interruptible(dev);
	if (ret)
		goto err_put;
	mutex_lock(&pagebuf_dev_lock);
	again = pagebuf_find_dev(buf->dma_name);
	if (IS_ERR(again)) {
		ret = -ENODEV;
		goto err_unlock;
	}
	put_device(again);
	domain = iommu_get_domain_for_dev(dev);
	if (again != dev) {
		ret = -ENODEV;
	} else if (!dev->driver) {
		/*
		 * A device's DMA (ops, IOMMU, offsets, coherence) is set up when a
		 * driver binds, before BUS_NOTIFY_BIND_DRIVER: a mapping made
		 * without one could not be undone with the setup it was made with.
		 */
		ret = -ENXIO;
	} else if (!dev->dma_mask) {
		/* It does no DMA: dma_map_page() would warn. */
		ret = -EOPNOTSUPP;
	} else if (PAGE_SIZE << buf->order > dma_max_mapping_size(dev)) {
		ret = -E2BIG;
	} else if (domain && domain->type != IOMMU_DOMAIN_IDENTITY &&
		   !(domain->type & __IOMMU_DOMAIN_DMA_API)) {
		/* Its IOMMU domain is its owner's (VFIO), not the DMA API's. */
		ret = -EBUSY;
	} else {
		ret = pagebuf_dma_map(buf, dev);
	}
	if (ret)
		goto err_unlock;
	list_add_tail(&buf->foreign, &pagebuf_foreign);
	mutex_unlock(&pagebuf_dev_lock);
	device_unlock(dev);
	return 0;

err_unlock:
	mutex_unlock(&pagebuf_dev_lock);
	device_unlock(dev);
err_put:
	put_device(dev);
	return ret;
}

/* Undo a named device's mapping, with pagebuf_dev_lock held. */
static void pagebuf_unmap_named(struct pagebuf_buf *buf)
{
	if (!buf->dma_dev)
		return;
	dma_unmap_page(buf->dma_dev, buf->dma_addr, PAGE_SIZE << buf->order,
		       buf->dma_dir);
	put_device(buf->dma_dev);
	buf->dma_dev = NULL;
}

static int pagebuf_bus_notify(struct notifier_block *nb, unsigned long action,
			      void *data)
{
	struct device *dev = data;
	struct pagebuf_buf *buf;

	if (action != BUS_NOTIFY_BIND_DRIVER &&
	    action != BUS_NOTIFY_UNBIND_DRIVER &&
	    action != BUS_NOTIFY_DEL_DEVICE &&
	    action != BUS_NOTIFY_REMOVED_DEVICE)
		return NOTIFY_DONE;

	mutex_lock(&pagebuf_dev_lock);
	list_for_each_entry(buf, &pagebuf_foreign, foreign) {
		phys_addr_t phys = page_to_phys(buf->pages);

		if (buf->dma_dev != dev)
			continue;
		pagebuf_unmap_named(buf);
		WRITE_ONCE(buf->flags, buf->flags | PAGEBUF_BUF_DEVICE_GONE);
		dev_notice(dev, "pagebuf: DMA mapping of the buffer at %pa undone: the device's driver or the device is going\n",
			   &phys);
	}
	mutex_unlock(&pagebuf_dev_lock);
	return NOTIFY_OK;
}

static void pagebuf_bus_unwatch(size_t n)
{
	while (n--)
		bus_unregister_notifier(pagebuf_buses[n].type,
					&pagebuf_buses[n].nb);
}

/*
 * Ahead of the IOMMU core's notifier (priority 0), which forgets a device
 * on BUS_NOTIFY_REMOVED_DEVICE: its mappings must be undone first.
 */
static int pagebuf_bus_watch(void)
{
	size_t i;
	int ret;

	for (i = 0; i < ARRAY_SIZE(pagebuf_buses); i++) {
		pagebuf_buses[i].nb.notifier_call = pagebuf_bus_notify;
		pagebuf_buses[i].nb.priority = INT_MAX;
		ret = bus_register_notifier(pagebuf_buses[i].type,
					    &pagebuf_buses[i].nb);
		if (ret) {
			pagebuf_bus_unwatch(i);
			return ret;
		}
	}
	return 0;
}

static void pagebuf_buf_release(struct kref *ref)
{
	struct pagebuf_buf *buf = container_of(ref, struct pagebuf_buf, ref);

	if (buf->dma_name[0]) {
		mutex_lock(&pagebuf_dev_lock);
		list_del(&buf->foreign);
		pagebuf_unmap_named(buf);
		mutex_unlock(&pagebuf_dev_lock);
	} else if (buf->flags & PAGEBUF_BUF_DMA) {
		dma_unmap_page(pagebuf_dev(), buf->dma_addr,
			       PAGE_SIZE << buf->order, buf->dma_dir);
	}
	pagebuf_free_pages(buf->pages, buf->order);
	atomic_long_sub(PAGE_SIZE << buf->order, &pagebuf_bytes_in_use);
	kfree(buf);
}

static void pagebuf_buf_put(struct pagebuf_buf *buf)
{
	kref_put(&buf->ref, pagebuf_buf_release);
}

/*
 * Take a buffer out of the registry, with pagebuf_lock held, onto @dead:
 * the caller drops the registry's references with pagebuf_put_dead() once
 * the lock is released, so that no unmapping or freeing runs under it.
 */
static void pagebuf_buf_unlink(struct pagebuf_buf *buf, struct list_head *dead)
{
	unsigned long pfn = page_to_pfn(buf->pages);

	xa_erase(&pagebuf_bufs, buf->id);
	mtree_erase(&pagebuf_by_pfn, pfn);
	pagebuf_nr_buffers--;
	list_add_tail(&buf->dead, dead);
}

static void pagebuf_put_dead(struct list_head *dead)
{
	struct pagebuf_buf *buf, *next;

	list_for_each_entry_safe(buf, next, dead, dead) {
		list_del(&buf->dead);
		pagebuf_sysfs_del(buf);
		pagebuf_buf_put(buf);
	}
}

/*
 * Look a buffer up by id for @file and take a reference (the caller puts
 * it): ENOENT if there is none, EPERM if it belongs to another file.
 */
static struct pagebuf_buf *pagebuf_buf_get(struct file *file, u32 id)
{
	struct pagebuf_buf *buf;

	mutex_lock(&pagebuf_lock);
	buf = xa_load(&pagebuf_bufs, id);
	if (!buf)
		buf = ERR_PTR(-ENOENT);
	else if (!pagebuf_may_use(buf, file))
		buf = ERR_PTR(-EPERM);
	else
		kref_get(&buf->ref);
	mutex_unlock(&pagebuf_lock);
	return buf;
}

/*
 * The buffer holding [phys, phys + len), len > 0, with a reference: EINVAL
 * if no buffer holds it all, EPERM if it belongs to another file.
 */
static struct pagebuf_buf *pagebuf_buf_find(struct file *file,
					    phys_addr_t phys, size_t len)
{
	struct pagebuf_buf *buf;
	phys_addr_t start;

	mutex_lock(&pagebuf_lock);
	buf = mtree_load(&pagebuf_by_pfn, PHYS_PFN(phys));
	if (buf) {
		start = page_to_phys(buf->pages);
		if (len > PAGE_SIZE << buf->order ||
		    phys - start > (PAGE_SIZE << buf->order) - len)
			buf = ERR_PTR(-EINVAL);
		else if (!pagebuf_may_use(buf, file))
			buf = ERR_PTR(-EPERM);
		else
			kref_get(&buf->ref);
	} else {
		buf = ERR_PTR(-EINVAL);
	}
	mutex_unlock(&pagebuf_lock);
	return buf;
}

/*
 * A new buffer, not yet in the registry: charged, allocated, zeroed to
 * memory and mapped for DMA if asked. Called without pagebuf_lock.
 */
static struct pagebuf_buf *pagebuf_buf_create(const struct pagebuf_buffer *req,
					      struct file *owner)
{
	bool own_dma = (req->flags & PAGEBUF_BUF_DMA) && !req->dma_device[0];
	unsigned int order = req->order;
	size_t size = PAGE_SIZE << order;
	u32 flags = req->flags;
	struct pagebuf_buf *buf;
	int ret;

	/* A bounce buffer (swiotlb) maps no more than this in one piece. */
	if (own_dma && size > dma_max_mapping_size(pagebuf_dev()))
		return ERR_PTR(-E2BIG);
	if (!pagebuf_charge(size))
		return ERR_PTR(-ENOMEM);

	buf = kzalloc(sizeof(*buf), GFP_KERNEL_ACCOUNT);
	if (!buf) {
		ret = -ENOMEM;
		goto err_uncharge;
	}
	kref_init(&buf->ref);
	INIT_LIST_HEAD(&buf->dead);
	INIT_LIST_HEAD(&buf->foreign);
	buf->order = order;
	buf->flags = flags;
	buf->dma_dir = (enum dma_data_direction)req->dma_dir;
	memcpy(buf->dma_name, req->dma_device, sizeof(buf->dma_name));
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
	ret = pagebuf_cmo(buf->pages, 0, size, true);
	if (ret && ret != -EOPNOTSUPP)
		goto err_free_pages;

	ret = 0;
	if (own_dma)
		ret = pagebuf_dma_map(buf, pagebuf_dev());
	else if (flags & PAGEBUF_BUF_DMA)
		ret = pagebuf_map_named(buf);
	if (ret)
		goto err_free_pages;
	return buf;

err_free_pages:
	pagebuf_free_pages(buf->pages, order);
err_free_buf:
	kfree(buf);
err_uncharge:
	atomic_long_sub(size, &pagebuf_bytes_in_use);
	return ERR_PTR(ret);
}

/* The caller's struct gets the kernel's, cut or zero-extended to its size. */
static int pagebuf_copy_out(void __user *uarg, size_t usize, const void *data,
			    size_t ksize)
{
	if (copy_to_user(uarg, data, min(usize, ksize)))
		return -EFAULT;
	if (usize > ksize && clear_user(uarg + ksize, usize - ksize))
		return -EFAULT;
	return 0;
}

/*
 * ALLOC reserves an id, tells the caller, and only then publishes the
 * buffer: a caller that cannot be told gets EFAULT and the buffer is freed
 * before anyone else could have seen it.
 */
static int pagebuf_ioctl_alloc(struct file *file, struct pagebuf_buffer *req,
			       void __user *uarg, size_t usize)
{
	size_t name_len = strnlen(req->dma_device, sizeof(req->dma_device));
	struct pagebuf_buf *buf;
	unsigned long pfn;
	int ret;

	if (req->id || req->reserved || req->phys_addr || req->dma_addr ||
	    req->size || req->dma_info || req->dma_mask ||
	    (req->flags & ~PAGEBUF_BUF_FLAGS) ||
	    req->order > pagebuf_max_order ||
	    req->dma_dir > PAGEBUF_DMA_FROM_DEVICE)
		return -EINVAL;
	/* A name, NUL-terminated and zero-padded, for a DMA buffer only. */
	if (name_len == sizeof(req->dma_device) ||
	    memchr_inv(req->dma_device + name_len, 0,
		       sizeof(req->dma_device) - name_len))
		return -EINVAL;
	if (!(req->flags & PAGEBUF_BUF_DMA) && (name_len || req->dma_dir))
		return -EINVAL;
	/* A named device's DMA reaches these pages: an administrator's call. */
	if (name_len && !capable(CAP_SYS_ADMIN))
		return -EPERM;

	buf = pagebuf_buf_create(req, file);
	if (IS_ERR(buf))
		return PTR_ERR(buf);

	/* Cyclic ids: a stale id does not silently name a new buffer. */
	mutex_lock(&pagebuf_lock);
	ret = xa_alloc_cyclic(&pagebuf_bufs, &buf->id, NULL,
			      XA_LIMIT(1, U32_MAX), &pagebuf_next_id,
			      GFP_KERNEL);
	mutex_unlock(&pagebuf_lock);
	if (ret < 0)
		goto err_put;

	pagebuf_buf_describe(buf, req);
	ret = pagebuf_copy_out(uarg, usize, req, sizeof(*req));
	if (ret)
		goto err_release_id;
	ret = pagebuf_sysfs_add(buf);
	if (ret)
		goto err_release_id;

	pfn = page_to_pfn(buf->pages);
	mutex_lock(&pagebuf_lock);
	ret = mtree_insert_range(&pagebuf_by_pfn, pfn,
				 pfn + (1UL << buf->order) - 1, buf, GFP_KERNEL);
	if (!ret) {
		xa_store(&pagebuf_bufs, buf->id, buf, GFP_KERNEL);
		pagebuf_nr_buffers++;
	}
	mutex_unlock(&pagebuf_lock);
	if (ret)
		goto err_release_id;
	return 0;

err_release_id:
	pagebuf_sysfs_del(buf);
	mutex_lock(&pagebuf_lock);
	xa_erase(&pagebuf_bufs, buf->id);
	mutex_unlock(&pagebuf_lock);
err_put:
	pagebuf_buf_put(buf);
	return ret;
}

/*
 * FREE first checks it can write its answer back, then frees: once a
 * buffer is gone, the call succeeds even if the answer cannot be written.
 */
static int pagebuf_ioctl_free(struct file *file, struct pagebuf_free *req,
			      void __user *uarg, size_t usize)
{
	struct pagebuf_buf *buf;
	unsigned long index;
	LIST_HEAD(dead);
	int ret = 0;

	if (req->reserved || req->count || (req->flags & ~PAGEBUF_FREE_FLAGS))
		return -EINVAL;
	if (!!(req->flags & PAGEBUF_FREE_ALL) == !!req->id)
		return -EINVAL;
	if (pagebuf_copy_out(uarg, usize, req, sizeof(*req)))
		return -EFAULT;

	mutex_lock(&pagebuf_lock);
	if (req->flags & PAGEBUF_FREE_ALL) {
		xa_for_each(&pagebuf_bufs, index, buf) {
			if (!pagebuf_may_use(buf, file))
				continue;
			pagebuf_buf_unlink(buf, &dead);
			req->count++;
		}
	} else {
		buf = xa_load(&pagebuf_bufs, req->id);
		if (!buf) {
			ret = -ENOENT;
		} else if (!pagebuf_may_use(buf, file)) {
			ret = -EPERM;
		} else {
			pagebuf_buf_unlink(buf, &dead);
			req->count = 1;
		}
	}
	mutex_unlock(&pagebuf_lock);
	pagebuf_put_dead(&dead);
	if (!ret)
		pagebuf_copy_out(uarg, usize, req, sizeof(*req));
	return ret;
}

/* Is this x86 with PAT on? */
static bool pagebuf_pat_on(void)
{
#ifdef CONFIG_X86
	return pat_enabled();
#else
	return false;
#endif
}

static int pagebuf_ioctl_get_info(struct pagebuf_info *info)
{
	struct device *dev = pagebuf_dev();
	long bytes = atomic_long_read(&pagebuf_bytes_in_use);

	if (memchr_inv(info, 0, sizeof(*info)))
		return -EINVAL;
	info->api_version = PAGEBUF_API_VERSION;
	info->features |= PAGEBUF_FEAT_DMA_DEVICE;
	if (pagebuf_dma_coherent)
		info->features |= PAGEBUF_FEAT_DMA_COHERENT;
	if (pagebuf_dma_bounce)
		info->features |= PAGEBUF_FEAT_DMA_BOUNCE;
	if (pagebuf_cmo_via != PAGEBUF_CMO_NONE) {
		info->features |= PAGEBUF_FEAT_FLUSH | PAGEBUF_FEAT_CLEAN;
		if (pagebuf_inject)
			info->features |= PAGEBUF_FEAT_INJECT;
	}
	if (pagebuf_pat_on()) {
		info->features |= PAGEBUF_FEAT_X86_PAT;
		if (pagebuf_x86_pat_alias)
			info->features |= PAGEBUF_FEAT_PAT_ALIAS;
	} else if (IS_ENABLED(CONFIG_X86)) {
		info->features |= PAGEBUF_FEAT_WC_IS_UC;
	}
	info->page_size = PAGE_SIZE;
	info->max_order = pagebuf_max_order;
	info->max_pages = pagebuf_max_bytes >> PAGE_SHIFT;
	info->pages_in_use = bytes >> PAGE_SHIFT;
	info->nr_buffers = READ_ONCE(pagebuf_nr_buffers);
	info->dma_mask = dma_get_mask(dev);
	info->dma_max_size = dma_max_mapping_size(dev);
	info->max_bytes = pagebuf_max_bytes;
	info->bytes_in_use = bytes;
	return 0;
}

static int pagebuf_ioctl_buf_info(struct pagebuf_buffer *req)
{
	struct pagebuf_buf *buf;
	int ret = 0;

	if (!req->id || memchr_inv((u8 *)req + sizeof(req->id), 0,
				   sizeof(*req) - sizeof(req->id)))
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
	size_t entry = sizeof(struct pagebuf_buffer), copy;
	struct pagebuf_buffer *snap = NULL;
	struct pagebuf_buf *buf;
	unsigned long index;
	u32 i, want, n = 0;
	int ret = 0;

	if (req->count || req->total ||
	    req->entry_size < offsetofend(struct pagebuf_buffer, size) ||
	    req->entry_size > PAGE_SIZE || (req->capacity && !req->buffers))
		return -EINVAL;
	copy = min_t(size_t, entry, req->entry_size);

	/* Never more than could exist: the caller's capacity may be anything. */
	want = min(req->capacity, READ_ONCE(pagebuf_nr_buffers));
	if (want) {
		snap = kvcalloc(want, entry, GFP_KERNEL | __GFP_NOWARN);
		if (!snap)
			return -ENOMEM;
	}
	mutex_lock(&pagebuf_lock);
	req->total = pagebuf_nr_buffers;
	xa_for_each(&pagebuf_bufs, index, buf) {
		if (n == want)
			break;
		pagebuf_buf_describe(buf, &snap[n++]);
	}
	mutex_unlock(&pagebuf_lock);

	for (i = 0; i < n; i++) {
		void __user *dst = ubuf + (size_t)i * req->entry_size;

		if (copy_to_user(dst, &snap[i], copy) ||
		    clear_user(dst + copy, req->entry_size - copy)) {
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
static int pagebuf_ioctl_kaccess(struct file *file, unsigned int cmd,
				 struct pagebuf_kaccess *req)
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

	buf = pagebuf_buf_get(file, req->id);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
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
		if (!ret && fatal_signal_pending(current))
			ret = -EINTR;
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

/* Sync @buf for its device; a named one with pagebuf_dev_lock held. */
static void pagebuf_sync(struct pagebuf_buf *buf, u32 direction, u64 offset,
			 u64 length)
{
	if (direction == PAGEBUF_SYNC_FOR_CPU)
		dma_sync_single_range_for_cpu(buf->dma_dev, buf->dma_addr,
					      offset, length, buf->dma_dir);
	else
		dma_sync_single_range_for_device(buf->dma_dev, buf->dma_addr,
						 offset, length, buf->dma_dir);
}

/* The streaming-DMA ownership hand-over, on request, for a mapped buffer. */
static int pagebuf_ioctl_sync(struct file *file, struct pagebuf_sync *req)
{
	struct pagebuf_buf *buf;
	u64 length;
	int ret = 0;

	if (req->direction != PAGEBUF_SYNC_FOR_CPU &&
	    req->direction != PAGEBUF_SYNC_FOR_DEVICE)
		return -EINVAL;

	buf = pagebuf_buf_get(file, req->id);
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	if (req->offset > PAGE_SIZE << buf->order) {
		ret = -EINVAL;
		goto out_put;
	}
	length = req->length ?: (PAGE_SIZE << buf->order) - req->offset;
	if (!(buf->flags & PAGEBUF_BUF_DMA) ||
	    !pagebuf_range_ok(buf, req->offset, length) || !length) {
		ret = -EINVAL;
		goto out_put;
	}

	if (buf->dma_name[0]) {
		mutex_lock(&pagebuf_dev_lock);
		if (buf->dma_dev)
			pagebuf_sync(buf, req->direction, req->offset, length);
		else
			ret = -ENODEV;
		mutex_unlock(&pagebuf_dev_lock);
	} else {
		pagebuf_sync(buf, req->direction, req->offset, length);
	}
out_put:
	pagebuf_buf_put(buf);
	return ret;
}

/*
 * Each command's struct size in its first version: a caller's command may
 * carry any size from that on (dma-heap's scheme). The sizes are the ABI and
 * never change; BUILD_BUG_ON() holds each struct's first-version fields to
 * them, and a struct grows only by appending.
 */
struct pagebuf_cmd {
	unsigned int cmd;
	unsigned int min_size;
	bool modifies;	/* needs the file opened for writing */
};

static const struct pagebuf_cmd pagebuf_cmds[] = {
	[_IOC_NR(PAGEBUF_IOC_GET_INFO)] = { PAGEBUF_IOC_GET_INFO, 48, false },
	[_IOC_NR(PAGEBUF_IOC_ALLOC)] = { PAGEBUF_IOC_ALLOC, 40, true },
	[_IOC_NR(PAGEBUF_IOC_FREE)] = { PAGEBUF_IOC_FREE, 16, true },
	[_IOC_NR(PAGEBUF_IOC_BUF_INFO)] = { PAGEBUF_IOC_BUF_INFO, 40, false },
	[_IOC_NR(PAGEBUF_IOC_LIST)] = { PAGEBUF_IOC_LIST, 24, false },
	[_IOC_NR(PAGEBUF_IOC_SET_CACHING)] = { PAGEBUF_IOC_SET_CACHING, 8, false },
	[_IOC_NR(PAGEBUF_IOC_KREAD)] = { PAGEBUF_IOC_KREAD, 40, false },
	[_IOC_NR(PAGEBUF_IOC_KWRITE)] = { PAGEBUF_IOC_KWRITE, 40, true },
	[_IOC_NR(PAGEBUF_IOC_KCHECKSUM)] = { PAGEBUF_IOC_KCHECKSUM, 40, false },
	[_IOC_NR(PAGEBUF_IOC_SYNC)] = { PAGEBUF_IOC_SYNC, 24, true },
	[_IOC_NR(PAGEBUF_IOC_KFLUSH)] = { PAGEBUF_IOC_KFLUSH, 40, true },
	[_IOC_NR(PAGEBUF_IOC_INJECT)] = { PAGEBUF_IOC_INJECT, 40, true },
};

/* Today's structs hold their first versions' fields at those sizes. */
static inline void pagebuf_check_abi(void)
{
	BUILD_BUG_ON(offsetofend(struct pagebuf_info, dma_mask) != 48);
	BUILD_BUG_ON(sizeof(struct pagebuf_info) != 72);
	BUILD_BUG_ON(offsetofend(struct pagebuf_buffer, size) != 40);
	BUILD_BUG_ON(sizeof(struct pagebuf_buffer) != 120);
	BUILD_BUG_ON(PAGEBUF_DMA_BIDIRECTIONAL != DMA_BIDIRECTIONAL);
	BUILD_BUG_ON(PAGEBUF_DMA_TO_DEVICE != DMA_TO_DEVICE);
	BUILD_BUG_ON(PAGEBUF_DMA_FROM_DEVICE != DMA_FROM_DEVICE);
	BUILD_BUG_ON(sizeof(struct pagebuf_free) != 16);
	BUILD_BUG_ON(sizeof(struct pagebuf_list) != 24);
	BUILD_BUG_ON(sizeof(struct pagebuf_caching) != 8);
	BUILD_BUG_ON(sizeof(struct pagebuf_kaccess) != 40);
	BUILD_BUG_ON(sizeof(struct pagebuf_sync) != 24);
}

/* The command table's entry for a caller's command, or NULL (ENOTTY). */
static const struct pagebuf_cmd *pagebuf_find_cmd(unsigned int ucmd)
{
	const struct pagebuf_cmd *c;
	unsigned int nr = _IOC_NR(ucmd);

	if (_IOC_TYPE(ucmd) != PAGEBUF_IOC_MAGIC || nr >= ARRAY_SIZE(pagebuf_cmds))
		return NULL;
	c = &pagebuf_cmds[nr];
	if (!c->cmd || _IOC_DIR(ucmd) != _IOC_DIR(c->cmd) || _IOC_SIZE(ucmd) < c->min_size)
		return NULL;
	return c;
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
	const struct pagebuf_cmd *c = pagebuf_find_cmd(ucmd);
	size_t usize = _IOC_SIZE(ucmd);
	unsigned int kcmd;
	size_t ksize;
	int ret;

	if (!c)
		return -ENOTTY;
	kcmd = c->cmd;
	ksize = _IOC_SIZE(kcmd);
	if (c->modifies && !(file->f_mode & FMODE_WRITE))
		return -EBADF;

	/*
	 * Every struct is read, GET_INFO's too (its input must be zero): a short
	 * one is zero-filled, a longer one's unknown tail must be zero.
	 */
	memset(&data, 0, sizeof(data));
	ret = copy_struct_from_user(&data, ksize, uarg, usize);
	if (ret)
		return ret == -E2BIG ? -EINVAL : ret;

	switch (kcmd) {
	case PAGEBUF_IOC_GET_INFO:
		ret = pagebuf_ioctl_get_info(&data.info);
		break;
	case PAGEBUF_IOC_ALLOC:
		return pagebuf_ioctl_alloc(file, &data.buffer, uarg, usize);
	case PAGEBUF_IOC_FREE:
		return pagebuf_ioctl_free(file, &data.free, uarg, usize);
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
		ret = pagebuf_ioctl_kaccess(file, kcmd, &data.kaccess);
		break;
	case PAGEBUF_IOC_SYNC:
		ret = pagebuf_ioctl_sync(file, &data.sync);
		break;
	default:
		return -ENOTTY;
	}
	if (ret || !(_IOC_DIR(kcmd) & _IOC_READ))
		return ret;
	return pagebuf_copy_out(uarg, usize, &data, ksize);
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

/* The attribute a mapping of @file gets, and whether it is write-back. */
static pgprot_t pagebuf_pgprot(struct file *file, pgprot_t prot, bool *wb)
{
	struct pagebuf_file *pf = file->private_data;

	*wb = false;
	switch (READ_ONCE(pf->caching)) {
	case PAGEBUF_CACHING_UC:
		return pagebuf_pgprot_uncached(prot);
	case PAGEBUF_CACHING_DEVICE:
		return pgprot_noncached(prot);
	case PAGEBUF_CACHING_WC:
		return pgprot_writecombine(prot);
	case PAGEBUF_CACHING_WB:
		break;
	default:
		if (file->f_flags & O_DSYNC)
			return pagebuf_pgprot_uncached(prot);
		break;
	}
	*wb = true;
	return prot;
}

/* x86 with PAT: a mapping of RAM other than write-back needs the opt-in. */
static bool pagebuf_pat_refuses(void)
{
	return pagebuf_pat_on() && !pagebuf_x86_pat_alias;
}

/*
 * mmap() takes the physical address as its offset, as /dev/mem does, but
 * maps only pages inside one pagebuf buffer. The mapping holds a reference,
 * so the pages stay allocated until it goes even if the buffer is freed.
 *
 * Nothing may pin the pages past FREE and munmap (vmsplice, O_DIRECT,
 * io_uring, RDMA): they are inserted as special PTEs of a VM_MIXEDMAP
 * mapping, which GUP-fast leaves to the slow path, where VM_IO refuses them.
 * VM_DONTEXPAND keeps mremap() from growing the mapping past the buffer,
 * VM_DONTDUMP keeps core dumps from reading it through the cached alias, as
 * udmabuf does. Unlike VM_PFNMAP, which its page walk skips,
 * /proc/pid/pagemap still shows the PFNs.
 *
 * x86 PAT gives an inserted PFN of RAM the memory type it tracks for it,
 * write-back: the UC or WC alias x86_pat_alias=1 allows is made of inserted
 * pages instead, which GUP-fast can reach. One more reason it taints.
 */
static int pagebuf_insert(struct vm_area_struct *vma, struct page *page,
			  bool as_pages)
{
	unsigned long addr;
	vm_fault_t fault;
	int ret;

	for (addr = vma->vm_start; addr < vma->vm_end; addr += PAGE_SIZE) {
		if (as_pages) {
			ret = vm_insert_page(vma, addr, page++);
			if (ret)
				return ret;
			continue;
		}
		fault = vmf_insert_mixed(vma, addr, page_to_pfn_t(page++));
		if (fault != VM_FAULT_NOPAGE)
			return fault == VM_FAULT_OOM ? -ENOMEM : -EFAULT;
	}
	return 0;
}

static int pagebuf_mmap(struct file *file, struct vm_area_struct *vma)
{
	size_t len = vma->vm_end - vma->vm_start;
	phys_addr_t phys = (phys_addr_t)vma->vm_pgoff << PAGE_SHIFT;
	struct pagebuf_buf *buf;
	struct page *page;
	pgprot_t prot;
	bool wb;
	int ret;

	/*
	 * A private mapping would copy on write: the buffer would never see it.
	 * VM_MAYSHARE, not VM_SHARED: a read-only MAP_SHARED of a file opened
	 * O_RDONLY has only the former.
	 */
	if (!(vma->vm_flags & VM_MAYSHARE) || (phys >> PAGE_SHIFT) != vma->vm_pgoff)
		return -EINVAL;
	prot = pagebuf_pgprot(file, vma->vm_page_prot, &wb);
	if (!wb && pagebuf_pat_refuses())
		return -EPERM;
	buf = pagebuf_buf_find(file, phys, len);
	if (IS_ERR(buf))
		return PTR_ERR(buf);

	vma->vm_page_prot = prot;
	vm_flags_set(vma, VM_IO | VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
	page = buf->pages + ((phys - page_to_phys(buf->pages)) >> PAGE_SHIFT);
	ret = pagebuf_insert(vma, page, !wb && pagebuf_pat_on());
	if (ret) {
		/* The caller unmaps what was inserted; no ->close. */
		pagebuf_buf_put(buf);
		return ret;
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
 * running past the end of its buffer stops there (a short count). As on
 * /dev/mem, bytes copied before a fault or a fatal signal are counted.
 */
static ssize_t pagebuf_rw(struct file *file, char __user *ubuf, size_t count,
			  loff_t *ppos, bool write)
{
	struct pagebuf_buf *buf;
	size_t off, len, done, n, left;
	void *kaddr;
	int ret = 0;

	/* Without 64-bit physical addresses a large position would wrap. */
	if (*ppos < 0 || (phys_addr_t)*ppos != *ppos)
		return -EINVAL;
	if (!count)
		return 0;
	buf = pagebuf_buf_find(file, *ppos, 1);
	if (IS_ERR(buf))
		return PTR_ERR(buf);

	off = *ppos - page_to_phys(buf->pages);
	len = min_t(size_t, count, (PAGE_SIZE << buf->order) - off);
	kaddr = page_address(buf->pages) + off;
	for (done = 0; done < len; done += n) {
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			break;
		}
		n = min_t(size_t, len - done, PAGEBUF_CHUNK);
		left = write ? copy_from_user(kaddr + done, ubuf + done, n) :
			       copy_to_user(ubuf + done, kaddr + done, n);
		if (left) {
			done += n - left;
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
	/*
	 * Nothing is usable before pagebuf_init() has set the device up; pairs
	 * with its smp_store_release().
	 */
	if (!smp_load_acquire(&pagebuf_ready))
		return -ENODEV;
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
	LIST_HEAD(dead);

	mutex_lock(&pagebuf_lock);
	xa_for_each(&pagebuf_bufs, index, buf) {
		if (buf->owner == file)
			pagebuf_buf_unlink(buf, &dead);
	}
	mutex_unlock(&pagebuf_lock);
	pagebuf_put_dead(&dead);
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
	return sysfs_emit(page, "%lu\n", pagebuf_max_bytes >> PAGE_SHIFT);
}
static DEVICE_ATTR_RO(max_pages);

static ssize_t max_bytes_show(struct device *dev,
			      struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%lu\n", pagebuf_max_bytes);
}
static DEVICE_ATTR_RO(max_bytes);

static ssize_t pages_in_use_show(struct device *dev,
				 struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%ld\n",
			  atomic_long_read(&pagebuf_bytes_in_use) >> PAGE_SHIFT);
}
static DEVICE_ATTR_RO(pages_in_use);

static ssize_t bytes_in_use_show(struct device *dev,
				 struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%ld\n", atomic_long_read(&pagebuf_bytes_in_use));
}
static DEVICE_ATTR_RO(bytes_in_use);

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

static ssize_t dma_max_size_show(struct device *dev,
				 struct device_attribute *attr, char *page)
{
	return sysfs_emit(page, "%zu\n", dma_max_mapping_size(dev));
}
static DEVICE_ATTR_RO(dma_max_size);

static struct attribute *pagebuf_attrs[] = {
	&dev_attr_version.attr,
	&dev_attr_max_order.attr,
	&dev_attr_max_pages.attr,
	&dev_attr_max_bytes.attr,
	&dev_attr_pages_in_use.attr,
	&dev_attr_bytes_in_use.attr,
	&dev_attr_nr_buffers.attr,
	&dev_attr_cache_ops.attr,
	&dev_attr_dma_max_size.attr,
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

static int pagebuf_check_params(void)
{
	unsigned long ram = totalram_pages() << PAGE_SHIFT;

	if (pagebuf_max_order > PAGEBUF_MAX_PAGE_ORDER) {
		pr_err("max_order=%u exceeds this kernel's largest order %u\n",
		       pagebuf_max_order, PAGEBUF_MAX_PAGE_ORDER);
		return -EINVAL;
	}
	if (pagebuf_max_bytes < PAGE_SIZE || pagebuf_max_bytes > ram) {
		pr_err("max_bytes=%lu must be from the page size (%lu) to the RAM (%lu)\n",
		       pagebuf_max_bytes, PAGE_SIZE, ram);
		return -EINVAL;
	}
	return 0;
}

/*
 * The misc device is also the device buffers are mapped for, so it exists
 * before its DMA mask is set; open() refuses until everything is ready,
 * which makes registering it the last visible step.
 */
static int __init pagebuf_init(void)
{
	int ret;

	pagebuf_check_abi();
	ret = pagebuf_check_params();
	if (ret)
		return ret;

	ret = misc_register(&pagebuf_misc);
	if (ret)
		return ret;
	pagebuf_buffers_dir = kobject_create_and_add("buffers",
						     &pagebuf_dev()->kobj);
	if (!pagebuf_buffers_dir) {
		ret = -ENOMEM;
		goto err_deregister;
	}

	/* A DMA-capable device for dma_map_page(), as udmabuf does. */
	ret = dma_coerce_mask_and_coherent(pagebuf_dev(), DMA_BIT_MASK(64));
	if (ret) {
		dev_err(pagebuf_dev(), "cannot set a 64-bit DMA mask: %d\n",
			ret);
		goto err_deregister;
	}
	ret = pagebuf_dma_probe();
	if (ret)
		goto err_deregister;
	ret = pagebuf_cmo_init();
	if (ret)
		goto err_deregister;
	ret = pagebuf_bus_watch();
	if (ret)
		goto err_deregister;

	if (pagebuf_x86_pat_alias && pagebuf_pat_on()) {
		pr_warn("x86_pat_alias=1: mapping RAM UC/WC behind PAT's back; tainting the kernel\n");
		add_taint(TAINT_USER, LOCKDEP_STILL_OK);
	}
	/* Pairs with pagebuf_open(): an opener sees the device set up. */
	smp_store_release(&pagebuf_ready, true);
	return 0;

err_deregister:
	kobject_put(pagebuf_buffers_dir);
	misc_deregister(&pagebuf_misc);
	return ret;
}

static void __exit pagebuf_exit(void)
{
	struct pagebuf_buf *buf;
	unsigned long index;
	LIST_HEAD(dead);

	/*
	 * No file is open and nothing is mapped (each holds a module
	 * reference). Free what is left while the device still exists: DMA
	 * unmapping needs it.
	 */
	mutex_lock(&pagebuf_lock);
	xa_for_each(&pagebuf_bufs, index, buf)
		pagebuf_buf_unlink(buf, &dead);
	mutex_unlock(&pagebuf_lock);
	pagebuf_put_dead(&dead);
	pagebuf_bus_unwatch(ARRAY_SIZE(pagebuf_buses));
	xa_destroy(&pagebuf_bufs);
	mtree_destroy(&pagebuf_by_pfn);
	kobject_put(pagebuf_buffers_dir);
	misc_deregister(&pagebuf_misc);
}

module_init(pagebuf_init);
module_exit(pagebuf_exit);

MODULE_DESCRIPTION("Physical page buffers for studying /dev/mem cache aliasing");
MODULE_AUTHOR("pagebuf developers");
MODULE_LICENSE("GPL");
MODULE_VERSION(PAGEBUF_VERSION);
