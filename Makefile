# SPDX-License-Identifier: GPL-2.0
#
#   make                      build kmod/pagebuf.ko against KDIR
#   make install              install it for KDIR's kernel (modules_install, depmod);
#                             make uninstall removes it (README "Installing")
#   make man                  man/pagebuf.1 from the CLI's parser
#   make vm CMD='...'         boot KERNEL under QEMU, pagebuf.ko loaded, run CMD
#                             (ARCH=arm64: an emulated arm64 guest, its own root filesystem)
#   make rootfs ARCH=arm64    build the arm64 guest's root filesystem (once, cached)
#   make test                 host tests, then the in-VM suite
#   make test-debug           the module's own tests on the x86 debug kernel (KASAN, ...)
#   make stress               long ioctl fuzz and stress on the x86 debug test kernel
#   make check                checkpatch --strict, sparse, ruff
#   make bench                bulk-path throughput against C, and how soon a run checks in a guest
#   make setup                install what the above need (apt, pip); idempotent

KDIR ?= /lib/modules/$(shell uname -r)/build
KERNEL ?= debian
CMD ?= pagebuf status
VMFLAGS ?=
PYTHON ?= python3
export KERNEL
# This tree's package, whatever `pip install -e` last pointed at.
export PYTHONPATH := $(CURDIR)/python

# CMD reaches the shell exactly as typed: single-quoted, never expanded by make.
shell_quote = '$(subst ','\'',$(1))'

# The host packages the VM harness and the checks need.
APT_PACKAGES := build-essential bc bison flex libelf-dev libssl-dev kmod cpio \
	qemu-system-x86 busybox-static linux-image-amd64 linux-headers-amd64 \
	sparse udev linux-source-6.12 memtester \
	gcc-aarch64-linux-gnu qemu-system-arm qemu-user-static binfmt-support \
	mmdebstrap arch-test dkms zsh groff-base chromium
SETUP_STAMP := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pagebuf/setup-$(shell \
	cat pyproject.toml Makefile | md5sum | cut -c1-12)

KERNELS ?= debian custom
ARM64_KERNELS ?= debian custom
VMTESTS ?= tests/vm
# What runs on the x86 debug kernel (KASAN, kmemleak, lockdep), four times slower than the
# test kernel under emulation: the tests of the module itself (of the named-device ones,
# those that do not start the CLI), the fuzzer and the stress (short in `make test`, long
# in `make stress`). A stage of `make test`, and `make test-debug`.
DEBUG_VMTESTS ?= tests/vm/test_hardening.py tests/vm/test_fuzz.py tests/vm/test_stress.py \
	tests/vm/test_mmap.py tests/vm/test_kview.py tests/vm/test_limits.py tests/vm/test_errors.py \
	$(addprefix tests/vm/test_dmadevice.py::test_,a_buffer_is_mapped_for_the_named_device \
	the_direction_is_the_callers bad_requests_are_refused unbinding_the_driver_undoes_the_mapping \
	removing_the_device_undoes_the_mapping a_real_device)
CACHE := $(or $(PAGEBUF_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/pagebuf)
CHECKPATCH := $(CACHE)/checkpatch/linux-source-6.12/scripts/checkpatch.pl
DEBIAN_KDIR = $(lastword $(sort $(wildcard /lib/modules/*-amd64/build)))

# ARCH=arm64 (or aarch64) boots an emulated arm64 guest with a root filesystem of its own.
VMARCH = $(if $(ARCH),--arch $(ARCH))
# The guest's Python: the host's for x86, which shares the host's root filesystem.
GUEST_PYTHON = $(if $(filter arm64 aarch64,$(ARCH)),python3,$(PYTHON))

.PHONY: all modules clean setup kernel kernels rootfs vm test test-host test-vm check bench \
	install uninstall man \
	stress test-debug

all: modules

modules:
	@test -d "$(KDIR)" || { echo "no kernel build tree at KDIR=$(KDIR):" \
		"install linux-headers-$$(uname -r), pass KDIR=..., or use 'make vm'" >&2; exit 2; }
	$(MAKE) -C "$(KDIR)" M="$(CURDIR)" modules

# The kernel release KDIR builds for, as the module's vermagic says it (a Debian headers
# tree's `make kernelrelease` gives the upstream version instead).
KRELEASE = $(shell sed -n 's/^\#define UTS_RELEASE "\(.*\)"$$/\1/p' \
	"$(KDIR)/include/generated/utsrelease.h" 2>/dev/null)
INSTALL_MOD_DIR ?= extra
MODDIR = $(INSTALL_MOD_PATH)/lib/modules/$(KRELEASE)/$(INSTALL_MOD_DIR)/kmod
# modules_install signs with the tree's key where CONFIG_MODULE_SIG_ALL is set; a headers
# package holds no key (Debian's), so there the module is installed unsigned, quietly.
SIG_KEY = $(shell sed -n 's/^CONFIG_MODULE_SIG_KEY="\(.*\)"$$/\1/p' "$(KDIR)/.config" 2>/dev/null)
NO_SIGN = $(if $(SIG_KEY),$(if $(filter pkcs11:%,$(SIG_KEY))$(wildcard $(SIG_KEY) \
	$(KDIR)/$(SIG_KEY)),,CONFIG_MODULE_SIG_ALL=))
DEPMOD = depmod $(if $(INSTALL_MOD_PATH),-b "$(INSTALL_MOD_PATH)") "$(KRELEASE)"

# INSTALL_MOD_PATH=/some/root installs under that root instead of /.
install: modules
	@test -n "$(KRELEASE)" || { echo "no kernel release in $(KDIR)" >&2; exit 2; }
	$(MAKE) -C "$(KDIR)" M="$(CURDIR)" INSTALL_MOD_DIR="$(INSTALL_MOD_DIR)" $(NO_SIGN) \
		modules_install
	$(DEPMOD)

uninstall:
	@test -n "$(KRELEASE)" || { echo "no kernel release in $(KDIR)" >&2; exit 2; }
	rm -f "$(MODDIR)"/pagebuf.ko "$(MODDIR)"/pagebuf.ko.xz "$(MODDIR)"/pagebuf.ko.gz \
		"$(MODDIR)"/pagebuf.ko.zst
	rmdir "$(MODDIR)" 2>/dev/null || true
	$(DEPMOD)

# pagebuf(1), drawn from the CLI's argparse parser by argparse-manpage (`make setup`
# installs it), with man/pagebuf.1.include's FILES and SEE ALSO.
MANPAGE ?= man/pagebuf.1
man:
	@$(PYTHON) -c 'import argparse_manpage' 2>/dev/null || { echo "make man needs" \
		"argparse-manpage: make setup, or pip install argparse-manpage" >&2; exit 2; }
	$(PYTHON) -c 'from argparse_manpage.cli import main; main()' --module pagebuf.cli \
		--function make_parser --prog pagebuf --project-name pagebuf \
		--version "$$($(PYTHON) -c 'import pagebuf; print(pagebuf.__version__)')" \
		--description "physical page buffers and /dev/mem cache-aliasing experiments" \
		--manual-title "pagebuf manual" --include man/pagebuf.1.include --output "$(MANPAGE)"

clean:
	rm -f kmod/*.o kmod/*.ko kmod/*.mod kmod/*.mod.c kmod/.*.cmd kmod/modules.order \
		.*.cmd .module-common.o modules.order Module.symvers
	rm -rf .tmp_versions

$(SETUP_STAMP):
	@if [ "$$(id -u)" = 0 ] && ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends $(APT_PACKAGES); fi
	$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[test]'
	mkdir -p "$(dir $@)" && touch "$@"

setup: $(SETUP_STAMP)

# The test kernel without STRICT_DEVMEM, built once and cached (python/pagebuf/vm/kbuild.py);
# `make kernel ARCH=arm64` cross-builds the arm64 one.
kernel: $(SETUP_STAMP)
	$(PYTHON) -m pagebuf.vm.kbuild $(if $(ARCH),--arch $(ARCH)) $(if $(DEBUG),--debug)

# The arm64 guest's Debian 12 root filesystem, built once and cached (python/pagebuf/vm/rootfs.py).
rootfs: $(SETUP_STAMP)
	$(PYTHON) -m pagebuf.vm.rootfs $(VMARCH)

vm: $(SETUP_STAMP)
	@$(PYTHON) -m pagebuf.vm $(VMARCH) --kernel "$$KERNEL" $(VMFLAGS) $(call shell_quote,$(value CMD))

test-host: $(SETUP_STAMP)
	$(PYTHON) -m pytest -q tests/host

# A guest that hangs fails the suite after VMTIMEOUT seconds instead of stalling CI.
VMTIMEOUT ?= 1800
test-vm: $(SETUP_STAMP)
	timeout -k 30 $(VMTIMEOUT) $(PYTHON) -m pagebuf.vm $(VMARCH) --kernel "$$KERNEL" $(VMFLAGS) \
		"$(GUEST_PYTHON) -m pytest -q -p no:cacheprovider --durations=8 $(VMTESTS)"

# The long versions of tests/vm/test_fuzz.py and test_stress.py (`make test` runs short
# ones): STRESS_CALLS fuzzed ioctls (split between two module configurations),
# STRESS_CYCLES alloc/free cycles and STRESS_SECONDS of concurrent stress, on the x86 debug
# kernel (KASAN, kmemleak, lockdep, DMA-API debugging) unless KERNEL= says otherwise. The
# figures are in the output, and one JSON line per test in STRESS_REPORT; STRESS_SEED=0x...
# replays a fuzz run.
STRESS_CALLS ?= 100000
STRESS_CYCLES ?= 100000
STRESS_SECONDS ?= 300
STRESS_SEED ?= random
STRESS_REPORT ?= pagebuf-stress.jsonl
STRESS_TIMEOUT ?= 14400
STRESS_ENV = PAGEBUF_FUZZ_CALLS=$(STRESS_CALLS) PAGEBUF_FUZZ_SEED=$(STRESS_SEED) \
	PAGEBUF_STRESS_CYCLES=$(STRESS_CYCLES) PAGEBUF_STRESS_SECONDS=$(STRESS_SECONDS) \
	PAGEBUF_STRESS_REPORT=$(STRESS_REPORT)
test-debug: $(SETUP_STAMP)
	$(MAKE) --no-print-directory test-vm ARCH=x86_64 KERNEL=debug VMTESTS="$(DEBUG_VMTESTS)"

stress: $(SETUP_STAMP)
	$(MAKE) --no-print-directory test-vm VMTIMEOUT=$(STRESS_TIMEOUT) \
		KERNEL=$(if $(filter file,$(origin KERNEL)),debug,$(KERNEL)) \
		GUEST_PYTHON='env $(STRESS_ENV) $(GUEST_PYTHON)' \
		VMTESTS='-s tests/vm/test_fuzz.py tests/vm/test_stress.py'

# Every guest kernel the suite boots, built once and cached: the x86 test and debug
# kernels, the arm64 test kernel and the arm64 root filesystem (which holds Debian's arm64
# kernel).
kernels: $(SETUP_STAMP)
	$(PYTHON) -m pagebuf.vm.kbuild
	$(PYTHON) -m pagebuf.vm.kbuild --debug
	$(PYTHON) -m pagebuf.vm.kbuild --arch arm64
	$(PYTHON) -m pagebuf.vm.rootfs --arch arm64

# One stage of `make test`: its name, then how long it took.
stage = t=$$(date +%s); echo "== $(1)"; $(2) || exit 1; \
	echo "== $(1): done in $$(( $$(date +%s) - t )) s"

# The whole suite: static checks, the kernels (built once, then cached: the host tests
# build the module W=1 against each of them), host tests, then the in-VM suite on each
# x86 and arm64 kernel, the x86 PAT, bounce-buffer and IOMMU checks, and the debug kernel's
# tests.
test:
	@$(call stage,static checks,$(MAKE) --no-print-directory check)
	@$(call stage,test kernels and arm64 root filesystem,$(MAKE) --no-print-directory kernels)
	@$(call stage,host tests,PAGEBUF_REQUIRE_KERNELS=1 $(MAKE) --no-print-directory test-host)
	@for k in $(KERNELS); do \
		$(call stage,in-VM suite on the x86 $$k kernel,$(MAKE) --no-print-directory \
			test-vm ARCH=x86_64 KERNEL=$$k); \
	done
	@$(call stage,x86 PAT checks on the test kernel booted with PAT,$(MAKE) \
		--no-print-directory test-vm ARCH=x86_64 KERNEL=custom-pat \
		VMTESTS="tests/vm/test_pat.py tests/vm/test_mmap.py::test_the_caching_mode_reaches_the_page_tables")
	@$(call stage,DMA tests and compare on the test kernel booted swiotlb=force,$(MAKE) \
		--no-print-directory test-vm ARCH=x86_64 KERNEL=custom-swiotlb \
		VMTESTS="tests/vm/test_swiotlb.py tests/vm/test_alloc.py tests/vm/test_dmadevice.py")
	@$(call stage,mappings for a device behind an IOMMU on Debian's x86 kernel,$(MAKE) \
		--no-print-directory test-vm ARCH=x86_64 KERNEL=debian VMFLAGS=--iommu \
		VMTESTS="tests/vm/test_iommu.py")
	@$(call stage,module tests and short fuzz and stress on the x86 debug kernel,$(MAKE) \
		--no-print-directory test-debug)
	@for k in $(ARM64_KERNELS); do \
		$(call stage,in-VM suite on the arm64 $$k kernel,$(MAKE) --no-print-directory \
			test-vm ARCH=arm64 KERNEL=$$k); \
	done

$(CHECKPATCH): | $(SETUP_STAMP)
	mkdir -p "$(CACHE)/checkpatch"
	tar -C "$(CACHE)/checkpatch" -xJf /usr/src/linux-source-6.12.tar.xz \
		linux-source-6.12/scripts/checkpatch.pl linux-source-6.12/scripts/spelling.txt \
		linux-source-6.12/scripts/const_structs.checkpatch

# Throughput of the bulk paths against C memset/memcmp, on the host (no VM needed).
bench: $(SETUP_STAMP)
	$(PYTHON) bench/bench_integrity.py
	$(PYTHON) bench/bench_startup.py

# checkpatch --strict, sparse (against Debian's headers) and ruff must all be silent.
check: $(CHECKPATCH)
	perl $(CHECKPATCH) --no-tree --strict --quiet -f kmod/*.c kmod/include/uapi/*.h \
		tests/vm/ptattr/*.c tests/vm/dmadev/*.c
	@rm -rf "$(CACHE)/sparse" && mkdir -p "$(CACHE)/sparse" && cp -r Kbuild kmod "$(CACHE)/sparse/" \
		&& mkdir -p "$(CACHE)/sparse/python/pagebuf" \
		&& cp python/pagebuf/__init__.py "$(CACHE)/sparse/python/pagebuf/"
	@$(MAKE) -s -C "$(DEBIAN_KDIR)" M="$(CACHE)/sparse" C=2 W=1 modules 2>&1 \
		| tee "$(CACHE)/sparse/log"; ! grep -E "warning|error" "$(CACHE)/sparse/log"
	ruff check python tests bench
	ruff format --check python tests bench
