// SPDX-License-Identifier: GPL-2.0
/*
 * dmadev: a test-only module with two platform devices for pagebuf to map
 * buffers for (PAGEBUF_IOC_ALLOC with dma_device), under QEMU, where no
 * device can be unbound or removed without losing the guest's root or
 * console:
 *
 * - "pagebuf-dmadev", bound to the "pagebuf-dmadev" driver, whose probe
 *   sets a DMA mask of mask_bits bits (default 40). Unbind and bind it
 *   through /sys/bus/platform/drivers/pagebuf-dmadev/; rmmod removes it.
 * - "pagebuf-nodma", a device with no DMA mask (one that does no DMA), bound
 *   to the same driver, which leaves it so.
 */
#include <linux/dma-mapping.h>
#include <linux/err.h>
#include <linux/mod_devicetable.h>
#include <linux/module.h>
#include <linux/platform_device.h>

static unsigned int mask_bits = 40;
module_param(mask_bits, uint, 0444);
MODULE_PARM_DESC(mask_bits, "DMA mask of pagebuf-dmadev, in bits (default 40)");

static struct platform_device *dmadev_dev;
static struct platform_device *dmadev_nodma;

static int dmadev_probe(struct platform_device *pdev)
{
	if (!platform_get_device_id(pdev)->driver_data)
		return 0;
	return dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(mask_bits));
}

/* driver_data: whether the device does DMA */
static const struct platform_device_id dmadev_ids[] = {
	{ .name = "pagebuf-dmadev", .driver_data = 1 },
	{ .name = "pagebuf-nodma", .driver_data = 0 },
	{ }
};
MODULE_DEVICE_TABLE(platform, dmadev_ids);

static struct platform_driver dmadev_driver = {
	.probe = dmadev_probe,
	.id_table = dmadev_ids,
	.driver = {
		.name = "pagebuf-dmadev",
	},
};

static int __init dmadev_init(void)
{
	int ret;

	if (mask_bits < 24 || mask_bits > 64)
		return -EINVAL;
	ret = platform_driver_register(&dmadev_driver);
	if (ret)
		return ret;
	dmadev_dev = platform_device_register_simple("pagebuf-dmadev",
						     PLATFORM_DEVID_NONE,
						     NULL, 0);
	if (IS_ERR(dmadev_dev)) {
		ret = PTR_ERR(dmadev_dev);
		goto err_driver;
	}
	dmadev_nodma = platform_device_alloc("pagebuf-nodma",
					     PLATFORM_DEVID_NONE);
	if (!dmadev_nodma) {
		ret = -ENOMEM;
		goto err_dev;
	}
	dmadev_nodma->dev.dma_mask = NULL;
	ret = platform_device_add(dmadev_nodma);
	if (ret)
		goto err_put_nodma;
	return 0;

err_put_nodma:
	platform_device_put(dmadev_nodma);
err_dev:
	platform_device_unregister(dmadev_dev);
err_driver:
	platform_driver_unregister(&dmadev_driver);
	return ret;
}

static void __exit dmadev_exit(void)
{
	platform_device_unregister(dmadev_nodma);
	platform_device_unregister(dmadev_dev);
	platform_driver_unregister(&dmadev_driver);
}

module_init(dmadev_init);
module_exit(dmadev_exit);

MODULE_DESCRIPTION("pagebuf tests: platform devices to map buffers for");
MODULE_LICENSE("GPL");
