# SPDX-License-Identifier: GPL-2.0
#
#   make                      build kmod/pagebuf.ko against KDIR
#   make vm CMD='...'         boot KERNEL under QEMU, pagebuf.ko loaded, run CMD
#   make test                 host tests, then the in-VM suite
#   make check                checkpatch --strict, sparse, ruff
#   make setup                install what the above need (apt, pip); idempotent

KDIR ?= /lib/modules/$(shell uname -r)/build
KERNEL ?= debian
CMD ?= pagebuf status
VMFLAGS ?=
PYTHON ?= python3
export KERNEL

# CMD reaches the shell exactly as typed: single-quoted, never expanded by make.
shell_quote = '$(subst ','\'',$(1))'

# The host packages the VM harness and the checks need.
APT_PACKAGES := build-essential bc bison flex libelf-dev libssl-dev kmod cpio \
	qemu-system-x86 busybox-static linux-image-amd64 linux-headers-amd64 \
	sparse udev linux-source-6.12
SETUP_STAMP := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pagebuf/setup-$(shell \
	cat pyproject.toml Makefile | md5sum | cut -c1-12)

.PHONY: all modules clean setup vm test test-host test-vm check

all: modules

modules:
	@test -d "$(KDIR)" || { echo "no kernel build tree at KDIR=$(KDIR):" \
		"install linux-headers-$$(uname -r), pass KDIR=..., or use 'make vm'" >&2; exit 2; }
	$(MAKE) -C "$(KDIR)" M="$(CURDIR)" modules

clean:
	rm -f kmod/*.o kmod/*.ko kmod/*.mod kmod/*.mod.c kmod/.*.cmd kmod/modules.order \
		.*.cmd modules.order Module.symvers
	rm -rf .tmp_versions

$(SETUP_STAMP):
	@if [ "$$(id -u)" = 0 ] && ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $(APT_PACKAGES); fi
	$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[test]'
	mkdir -p "$(dir $@)" && touch "$@"

setup: $(SETUP_STAMP)

vm: $(SETUP_STAMP)
	@$(PYTHON) -m pagebuf.vm --kernel "$$KERNEL" $(VMFLAGS) $(call shell_quote,$(value CMD))

test-host: $(SETUP_STAMP)
	$(PYTHON) -m pytest -q tests/host

test-vm: $(SETUP_STAMP)
	$(PYTHON) -m pagebuf.vm --kernel "$$KERNEL" $(VMFLAGS) \
		"$(PYTHON) -m pytest -q -p no:cacheprovider tests/vm"

test: test-host test-vm

check:
	perl $(CHECKPATCH) --no-tree --strict -f kmod/*.c kmod/*.h kmod/include/uapi/*.h
	ruff check python tests
