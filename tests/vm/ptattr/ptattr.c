// SPDX-License-Identifier: GPL-2.0
/*
 * ptattr: a test-only module that reads the calling process's own page-table
 * entry of a user address, for kernels without a user page-table dump (arm64
 * has no counterpart of x86's /sys/kernel/debug/page_tables/current_user).
 *
 * Write a user virtual address in hex to /sys/kernel/debug/pagebuf_ptattr,
 * then read the file from offset 0: "0x%016llx\n", the raw PTE of the page
 * holding that address in current->mm. The address is kept per open file.
 * Errors: EINVAL for bad input, a read before any write, or an entry above
 * the PTE level that is huge or bad; ENOENT where no VMA or no PTE is.
 */
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/hugetlb_inline.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pgtable.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

struct ptattr_file {
	struct mutex lock;	/* protects addr and have_addr */
	unsigned long addr;
	bool have_addr;
};

static struct dentry *ptattr_dentry;

static int ptattr_open(struct inode *inode, struct file *file)
{
	struct ptattr_file *pf;

	pf = kzalloc(sizeof(*pf), GFP_KERNEL);
	if (!pf)
		return -ENOMEM;
	mutex_init(&pf->lock);
	file->private_data = pf;
	return 0;
}

static int ptattr_release(struct inode *inode, struct file *file)
{
	struct ptattr_file *pf = file->private_data;

	mutex_destroy(&pf->lock);
	kfree(pf);
	return 0;
}

static ssize_t ptattr_write(struct file *file, const char __user *ubuf,
			    size_t count, loff_t *ppos)
{
	struct ptattr_file *pf = file->private_data;
	char buf[32];
	unsigned long addr;
	int ret;

	if (!count || count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	/* Hex, with or without 0x, and at most one trailing newline. */
	ret = kstrtoul(buf, 16, &addr);
	if (ret)
		return -EINVAL;
	addr = untagged_addr(addr);
	if (addr >= TASK_SIZE)
		return -EINVAL;

	mutex_lock(&pf->lock);
	pf->addr = addr;
	pf->have_addr = true;
	mutex_unlock(&pf->lock);
	return count;
}

/*
 * apply_to_existing_page_range() WARNs on a huge (leaf) or bad entry above
 * the PTE level. Refuse those first, under the same mmap lock: with the VMA
 * in place, no table above the PTE level can be freed under us. (Only a PMD
 * table that khugepaged retracts and a fault refills huge in between would
 * still reach that WARN.)
 */
static int ptattr_check_tables(struct mm_struct *mm, unsigned long addr)
{
	pgd_t *pgdp = pgd_offset(mm, addr);
	pgd_t pgd = READ_ONCE(*pgdp);
	p4d_t *p4dp, p4d;
	pud_t *pudp, pud;
	pmd_t *pmdp, pmd;

	if (pgd_none(pgd))
		return -ENOENT;
	if (pgd_leaf(pgd) || pgd_bad(pgd))
		return -EINVAL;
	p4dp = p4d_offset(pgdp, addr);
	p4d = READ_ONCE(*p4dp);
	if (p4d_none(p4d))
		return -ENOENT;
	if (p4d_leaf(p4d) || p4d_bad(p4d))
		return -EINVAL;
	pudp = pud_offset(p4dp, addr);
	pud = READ_ONCE(*pudp);
	if (pud_none(pud))
		return -ENOENT;
	if (pud_leaf(pud) || pud_bad(pud))
		return -EINVAL;
	pmdp = pmd_offset(pudp, addr);
	pmd = READ_ONCE(*pmdp);
	if (pmd_none(pmd))
		return -ENOENT;
	if (pmd_leaf(pmd) || pmd_bad(pmd))
		return -EINVAL;
	return 0;
}

struct ptattr_result {
	u64 pte;
	bool found;
};

/* Called with the PTE lock held: it must not sleep. */
static int ptattr_pte(pte_t *ptep, unsigned long addr, void *data)
{
	struct ptattr_result *res = data;

	res->pte = (u64)pte_val(ptep_get(ptep));
	res->found = true;
	return 0;
}

/* The raw PTE of the page holding addr in mm. */
static int ptattr_lookup(struct mm_struct *mm, unsigned long addr, u64 *pte)
{
	struct ptattr_result res = { };
	struct vm_area_struct *vma;
	int ret;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	vma = vma_lookup(mm, addr);
	if (!vma)
		ret = -ENOENT;
	else if (is_vm_hugetlb_page(vma))
		ret = -EINVAL;
	else
		ret = ptattr_check_tables(mm, addr);
	/* The callback runs only for a PTE that is not none. */
	if (!ret)
		ret = apply_to_existing_page_range(mm, addr & PAGE_MASK,
						   PAGE_SIZE, ptattr_pte, &res);
	mmap_read_unlock(mm);
	if (ret)
		return ret;
	if (!res.found)
		return -ENOENT;
	*pte = res.pte;
	return 0;
}

static ssize_t ptattr_read(struct file *file, char __user *ubuf, size_t count,
			   loff_t *ppos)
{
	struct ptattr_file *pf = file->private_data;
	unsigned long addr;
	bool have_addr;
	char buf[32];
	u64 pte;
	int len, ret;

	mutex_lock(&pf->lock);
	addr = pf->addr;
	have_addr = pf->have_addr;
	mutex_unlock(&pf->lock);
	if (!have_addr || !current->mm)
		return -EINVAL;
	ret = ptattr_lookup(current->mm, addr, &pte);
	if (ret)
		return ret;
	len = scnprintf(buf, sizeof(buf), "0x%016llx\n", pte);
	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static const struct file_operations ptattr_fops = {
	.owner = THIS_MODULE,
	.open = ptattr_open,
	.release = ptattr_release,
	.read = ptattr_read,
	.write = ptattr_write,
	.llseek = default_llseek,
};

static int __init ptattr_init(void)
{
	ptattr_dentry = debugfs_create_file("pagebuf_ptattr", 0600, NULL, NULL,
					    &ptattr_fops);
	if (IS_ERR(ptattr_dentry))
		return PTR_ERR(ptattr_dentry);
	return 0;
}

static void __exit ptattr_exit(void)
{
	debugfs_remove(ptattr_dentry);
}

module_init(ptattr_init);
module_exit(ptattr_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pagebuf tests: the calling process's PTE of a user address");
